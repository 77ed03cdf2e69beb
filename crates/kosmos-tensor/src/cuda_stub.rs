//! The CUDA device type. The real backend is not written yet: with or without the `cuda` feature every
//! call returns `Error::CudaNotCompiled`, so model crates can name `Device::Cuda` without any `#[cfg]`.

use crate::error::{Error, Result};

/// A handle on one CUDA GPU. Without the `cuda` feature it cannot be constructed.
#[derive(Clone, Debug)]
pub struct CudaDevice {
    ordinal: usize,
}

impl CudaDevice {
    /// Open GPU `ordinal`.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        let _ = CudaDevice { ordinal };
        Err(Error::CudaNotCompiled {
            what: format!("cuda:{ordinal}"),
        })
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
}
