//! Devices: the CPU, or a CUDA GPU (a stub type unless built with the `cuda` feature).

use crate::cuda_stub::CudaDevice;
use crate::error::Result;

/// Where a tensor lives.
#[derive(Clone, Debug)]
pub enum Device {
    /// Host memory; ops use rayon and runtime-detected SIMD.
    Cpu,
    /// A CUDA GPU.
    Cuda(CudaDevice),
}

impl Device {
    /// Open CUDA device `ordinal`. Without the `cuda` feature this is `Err(Error::CudaNotCompiled)`.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::Cuda(CudaDevice::new(ordinal)?))
    }

    /// Whether this is the CPU.
    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Whether two devices are the same.
    pub fn same_device(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.ordinal() == b.ordinal(),
            _ => false,
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.ordinal()),
        }
    }
}
