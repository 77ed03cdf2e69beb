//! Tensors, dtypes, devices and ops for kosmos2-rs.
//!
//! - [`Tensor`]: f32/bf16/f16 data in Arc'd storage (owned or memory-mapped) with shape, strides and
//!   offset; views (`reshape`, `transpose`, `narrow`) share storage.
//! - [`Device`]: `Cpu`, or `Cuda` (a stub type: without the `cuda` feature every CUDA call returns
//!   [`Error::CudaNotCompiled`]).
//! - [`ops`]: own AVX-512 panel GEMMs for f32 and bf16 weights (the `gemm` crate elsewhere), GEMV
//!   (runtime-selected SIMD, see [`simd`]), LayerNorm, softmax, attention, activations, embedding,
//!   patchify conv, argmax/top-k.
//! - [`packed::PackedBf16`]: bf16 linear weights stored once in the bf16 GEMM's panel layout.
//! - [`WeightStore`]: zero-copy safetensors over `memmap2` with a validating header parser.
//!
//! SIMD is detected at run time (never `target-cpu=native`); `KOSMOS_SIMD=scalar|avx2|avx512|avx512bf16`
//! caps the level for the process and [`simd::with_isa`] overrides it for one closure (tests use it
//! to run every path). Ops return the dtype of their activation input and compute in f32; bf16
//! activations × bf16 weights use `vdpbf16ps` where the CPU has AVX512_BF16.
//!
//! ```
//! use kosmos_tensor::{nn::Linear, Device, Tensor};
//! let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2], &Device::Cpu)?;
//! let layer = Linear::new(w, None);
//! let x = Tensor::from_vec(vec![1.0, 1.0], &[1, 2], &Device::Cpu)?;
//! assert_eq!(layer.forward(&x)?.to_vec_f32()?, vec![3.0, 7.0]);
//! # Ok::<(), kosmos_tensor::Error>(())
//! ```

pub mod alloc;
pub mod convert;
#[cfg(feature = "cuda")]
pub mod cuda;
mod cuda_stub;
mod device;
mod dtype;
mod error;
pub mod keys;
pub mod mha;
pub mod nn;
pub mod ops;
pub mod packed;
pub mod quant;
mod shape;
pub mod simd;
mod storage;
mod tensor;
mod weights;
mod writer;

pub use cuda_stub::CudaDevice;
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use storage::CpuSlice;
pub use tensor::Tensor;
pub use weights::{MappedPages, WeightStore};
pub use writer::{write_safetensors, write_safetensors_raw, RawTensor};

/// Re-exported element types.
pub use half::{bf16, f16};
