//! The CUDA backend's typed error.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;

use crate::dtype::DType;

/// Result alias of the CUDA backend.
pub type CudaResult<T> = std::result::Result<T, CudaError>;

/// Everything that can go wrong in [`crate::cuda`]. Creating a backend on a machine without a
/// driver or a GPU gives [`CudaError::NoDriver`] or [`CudaError::NoDevice`], never a panic.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// `libcuda` could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver: libcuda.so could not be loaded")]
    NoDriver,
    /// A CUDA library other than the driver could not be loaded (cuBLAS, NVRTC).
    #[error("the {lib} library could not be loaded (put its folder on LD_LIBRARY_PATH)")]
    LibraryMissing { lib: &'static str },
    /// The driver is there but the requested GPU is not.
    #[error("CUDA device {ordinal} is not available ({count} device(s) visible)")]
    NoDevice { ordinal: usize, count: usize },
    /// A CUDA driver call failed.
    #[error("CUDA driver error in {op}: {source}")]
    Driver {
        op: &'static str,
        #[source]
        source: DriverError,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {op}: {source}")]
    Cublas {
        op: &'static str,
        #[source]
        source: CublasError,
    },
    /// The run-time compilation fallback failed.
    #[error("NVRTC could not compile kernels/{module}.cu: {msg}")]
    Nvrtc { module: &'static str, msg: String },
    /// A bad argument (shape, length, parameter) caught on the host before any launch.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// A device buffer is shorter than the shape it is used with.
    #[error("{op}: buffer `{name}` holds {len} elements, the shape needs {needed}")]
    BufferTooSmall {
        op: &'static str,
        name: &'static str,
        len: usize,
        needed: usize,
    },
    /// An operation got a dtype it does not support.
    #[error("{op}: unsupported dtype combination {detail} ({dtype})")]
    UnsupportedDType {
        op: &'static str,
        dtype: DType,
        detail: &'static str,
    },
    /// A CUDA library panicked (e.g. a missing symbol in an old driver); caught and reported.
    #[error("the CUDA library panicked in {op}: {msg}")]
    Panicked { op: &'static str, msg: String },
}

/// `map_err` helper for driver calls.
pub(crate) fn drv(op: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |source| CudaError::Driver { op, source }
}

/// Fails unless `len >= needed`.
pub(crate) fn check_len(
    op: &'static str,
    name: &'static str,
    len: usize,
    needed: usize,
) -> CudaResult<()> {
    if len < needed {
        return Err(CudaError::BufferTooSmall {
            op,
            name,
            len,
            needed,
        });
    }
    Ok(())
}

/// An `InvalidArgument` error.
pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> CudaError {
    CudaError::InvalidArgument {
        op,
        msg: msg.into(),
    }
}

/// Converts a dimension to the `i32` a kernel takes.
pub(crate) fn to_i32(op: &'static str, what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| invalid(op, format!("{what} = {v} exceeds i32::MAX")))
}
