//! Small helpers that build `kosmos_tensor::nn` layers from named weights.

use kosmos_tensor::nn::{LayerNorm, Linear};
use kosmos_tensor::{DType, Device, WeightStore};

use crate::error::Result;
use crate::weights::{LayerNormKeys, LinearKeys};

/// A `nn.Linear(in_dim, out_dim)` with bias.
pub(crate) fn linear(
    store: &WeightStore,
    keys: &LinearKeys,
    out_dim: usize,
    in_dim: usize,
    dtype: DType,
    device: &Device,
) -> Result<Linear> {
    let weight = store.get(&keys.weight, &[out_dim, in_dim], dtype, device)?;
    let bias = store.get(&keys.bias, &[out_dim], dtype, device)?;
    Ok(Linear::new(weight, Some(bias)))
}

/// A `nn.LayerNorm(dim, eps)`.
pub(crate) fn layer_norm(
    store: &WeightStore,
    keys: &LayerNormKeys,
    dim: usize,
    eps: f64,
    dtype: DType,
    device: &Device,
) -> Result<LayerNorm> {
    let weight = store.get(&keys.weight, &[dim], dtype, device)?;
    let bias = store.get(&keys.bias, &[dim], dtype, device)?;
    Ok(LayerNorm::new(weight, bias, eps as f32))
}
