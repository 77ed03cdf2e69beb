//! The CUDA backend (feature `cuda`): hand-written kernels compiled to PTX by
//! `cargo xtask kernels` and embedded here, cuBLAS GEMMs, CUDA graphs, a device KV cache.
//!
//! [`CudaBackend`] owns one GPU: a context, one non-blocking stream that every op is queued on,
//! a cuBLAS handle and the kernel modules (loaded on first use from the embedded PTX; when the
//! driver answers `CUDA_ERROR_UNSUPPORTED_PTX_VERSION`, the embedded sources are compiled by
//! NVRTC for the GPU instead). Ops work on device buffers ([`cudarc::driver::CudaSlice`] and
//! views) with explicit shapes, check every length on the host, and return [`CudaError`].
//!
//! `cudarc` loads libcuda, cuBLAS and NVRTC dynamically, so this builds and runs its CPU tests
//! on machines without CUDA; [`CudaBackend::new`] then returns [`CudaError::NoDriver`] or
//! [`CudaError::NoDevice`] instead of panicking.
//!
//! Every kernel computes in f32 whatever the storage dtype (f32, bf16, f16), and follows the
//! CPU backend's operation order where it matters for parity (LayerNorm two-pass, GELU form,
//! HF's additive masks, argmax/top-k tie rules).

mod attention;
mod backend;
mod buffer;
mod element;
mod elementwise;
mod embedding;
mod error;
mod gemm;
mod graph;
pub mod kernels;
mod kv_cache;
mod launch;
mod layout;
mod norm;
mod sampling;
mod softmax;

pub use attention::{AttentionShape, DecodeMask, HeadLayout, KvPosition, MAX_HEAD_DIM};
pub use backend::{CudaBackend, DeviceInfo, ModuleOrigin};
pub use buffer::CudaBuffer;
pub use element::{CudaElement, DeviceRead, DeviceWrite};
pub use elementwise::Activation;
pub use embedding::{
    image_rows_from_mask, sinusoid_freqs, EmbeddingTable, ImageInsert, TokenPositions,
};
pub use error::{CudaError, CudaResult};
pub use gemm::GemmShape;
pub use graph::DeviceGraph;
pub use kernels::KernelModule;
pub use kv_cache::DeviceKvCache;
pub use layout::MAX_RANK;
pub use sampling::SAMPLE_MAX_K;
pub use softmax::ScoreMask;

/// cudarc's device types, re-exported for callers.
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
