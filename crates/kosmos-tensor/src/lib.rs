//! Tensors, dtypes, devices and ops for kosmos2-rs.
//!
//! This crate will hold the `Tensor` type (shape, strides, f32/bf16/f16 storage,
//! owned or memory-mapped), the `Device` abstraction (`Cpu`, and `Cuda` behind the
//! optional `cuda` feature with a stub type otherwise), the CPU kernels (GEMM and
//! GEMV, LayerNorm, softmax, attention, activations) and the zero-copy
//! safetensors `WeightStore`.
