//! Element types on the device, and the read/write views every op takes.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

use crate::dtype::WithDType;

/// An element type with kernels: f32, bf16, f16.
pub trait CudaElement:
    WithDType + DeviceRepr + ValidAsZeroBits + Default + std::fmt::Debug
{
    /// The kernel-name suffix (`layer_norm_<SUFFIX>`).
    const SUFFIX: &'static str;
}

impl CudaElement for f32 {
    const SUFFIX: &'static str = "f32";
}

impl CudaElement for bf16 {
    const SUFFIX: &'static str = "bf16";
}

impl CudaElement for f16 {
    const SUFFIX: &'static str = "f16";
}

/// Anything an op can read: a [`CudaSlice`], a [`CudaView`] or a [`CudaViewMut`].
pub trait DeviceRead<T> {
    /// A read view of the whole buffer.
    fn view(&self) -> CudaView<'_, T>;
}

impl<T> DeviceRead<T> for CudaSlice<T> {
    fn view(&self) -> CudaView<'_, T> {
        self.as_view()
    }
}

impl<T> DeviceRead<T> for CudaView<'_, T> {
    fn view(&self) -> CudaView<'_, T> {
        self.slice(..)
    }
}

impl<T> DeviceRead<T> for CudaViewMut<'_, T> {
    fn view(&self) -> CudaView<'_, T> {
        self.as_view()
    }
}

/// Anything an op can write: a [`CudaSlice`] or a [`CudaViewMut`].
pub trait DeviceWrite<T> {
    /// A write view of the whole buffer.
    fn view_mut(&mut self) -> CudaViewMut<'_, T>;
}

impl<T> DeviceWrite<T> for CudaSlice<T> {
    fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.as_view_mut()
    }
}

impl<T> DeviceWrite<T> for CudaViewMut<'_, T> {
    fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.slice_mut(..)
    }
}
