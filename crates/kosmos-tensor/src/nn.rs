//! Small layer structs over the ops (weights + `forward`), in the style of `candle_nn`.

use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// `y = x · Wᵀ + b` with `W` stored `[out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }

    /// Apply to `x [.., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }

    /// Apply to f32 rows `x [rows, in]`, writing `out [rows, out]` (see [`ops::linear_into`]).
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        ops::linear_into(x, &self.weight, self.bias.as_ref(), out)
    }
}

/// LayerNorm over the last dim.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// `[D]`.
    pub weight: Tensor,
    /// `[D]`.
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// A layer from its weight, bias and epsilon.
    pub fn new(weight: Tensor, bias: Tensor, eps: f32) -> LayerNorm {
        LayerNorm { weight, bias, eps }
    }

    /// Apply to `x [.., D]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// Apply to f32 rows `x [rows, D]`, writing `out` (see [`ops::layer_norm_into`]).
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        ops::layer_norm_into(x, &self.weight, &self.bias, self.eps, out)
    }

    /// `(x + residual, layer_norm(x + residual))` in one pass.
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        ops::add_layer_norm(x, residual, &self.weight, &self.bias, self.eps)
    }
}
