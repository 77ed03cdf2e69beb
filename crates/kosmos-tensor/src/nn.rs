//! Small layer structs over the ops (weights + `forward`), in the style of `candle_nn`.

use crate::error::{Error, Result};
use crate::ops;
use crate::packed::PackedBf16;
use crate::quant::Int8Weight;
use crate::tensor::Tensor;
use crate::DType;

/// The weight of a [`Linear`]: a float tensor, bf16 packed for the GEMM, or int8 with per-row scales.
#[derive(Clone, Debug)]
pub enum LinearWeight {
    /// f32/bf16/f16 `[out, in]`, read in its stored dtype.
    Dense(Tensor),
    /// Per-output-channel symmetric int8 (weight-only quantisation; activations stay f32).
    Int8(Int8Weight),
    /// bf16 in the panel GEMM's layout ([`PackedBf16`]): same values and results as a bf16
    /// [`LinearWeight::Dense`], without packing the weight on every prefill call.
    PackedBf16(PackedBf16),
}

/// `y = x · Wᵀ + b` with `W` stored `[out, in]`; mirrors `torch.nn.Linear`.
///
/// The weight is dense (any float dtype) or int8 ([`Linear::quantize_int8`]); `forward` and
/// `forward_into` dispatch on it, so a model swaps precision per layer without other changes.
///
/// ```
/// use kosmos_tensor::{nn::Linear, Device, Tensor};
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], &[2, 2], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.5, -0.5], &[2], &Device::Cpu)?;
/// let dense = Linear::new(w, Some(b));
/// let int8 = dense.quantize_int8()?;
/// assert!(int8.is_int8() && int8.dims() == [2, 2]);
/// let x = Tensor::from_vec(vec![3.0, 4.0], &[1, 2], &Device::Cpu)?;
/// assert_eq!(dense.forward(&x)?.to_vec_f32()?, vec![3.5, 7.5]);
/// assert_eq!(int8.forward(&x)?.to_vec_f32()?, vec![3.5, 7.5]); // 1 and 2 quantise exactly
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Linear {
    weight: LinearWeight,
    /// `[out]`; always f32 with an int8 weight.
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear {
            weight: LinearWeight::Dense(weight),
            bias,
        }
    }

    /// A layer from an int8 weight and an optional bias `[out]` (any float dtype, kept in f32).
    pub fn from_int8(weight: Int8Weight, bias: Option<Tensor>) -> Result<Linear> {
        let bias = match bias {
            Some(b) => {
                if b.dims() != [weight.dims()[0]] {
                    return Err(Error::ShapeMismatch {
                        op: "Linear::from_int8",
                        lhs: weight.dims().to_vec(),
                        rhs: b.dims().to_vec(),
                    });
                }
                Some(if b.dtype() == DType::F32 {
                    b
                } else {
                    b.to_dtype(DType::F32)?
                })
            }
            None => None,
        };
        Ok(Linear {
            weight: LinearWeight::Int8(weight),
            bias,
        })
    }

    /// This layer with its weight quantised to int8 ([`Int8Weight::quantize`]); an int8 layer is
    /// returned as is.
    pub fn quantize_int8(&self) -> Result<Linear> {
        match &self.weight {
            LinearWeight::Int8(_) => Ok(self.clone()),
            LinearWeight::Dense(w) => {
                Linear::from_int8(Int8Weight::quantize(w)?, self.bias.clone())
            }
            LinearWeight::PackedBf16(p) => {
                Linear::from_int8(Int8Weight::quantize(&p.to_tensor())?, self.bias.clone())
            }
        }
    }

    /// A layer from a packed bf16 weight and an optional bias `[out]`.
    pub fn from_packed(weight: PackedBf16, bias: Option<Tensor>) -> Result<Linear> {
        if let Some(b) = &bias {
            if b.dims() != [weight.dims()[0]] {
                return Err(Error::ShapeMismatch {
                    op: "Linear::from_packed",
                    lhs: weight.dims().to_vec(),
                    rhs: b.dims().to_vec(),
                });
            }
        }
        Ok(Linear {
            weight: LinearWeight::PackedBf16(weight),
            bias,
        })
    }

    /// This layer with a dense weight converted to bf16 and packed ([`PackedBf16::from_tensor`]);
    /// a packed or int8 layer is returned as is.
    pub fn pack_bf16(&self) -> Result<Linear> {
        match &self.weight {
            LinearWeight::Dense(w) => {
                Linear::from_packed(PackedBf16::from_tensor(w)?, self.bias.clone())
            }
            _ => Ok(self.clone()),
        }
    }

    /// The weight.
    pub fn weight(&self) -> &LinearWeight {
        &self.weight
    }

    /// The dense weight tensor, or `None` for an int8 or packed layer.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => Some(w),
            LinearWeight::Int8(_) | LinearWeight::PackedBf16(_) => None,
        }
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Whether the weight is int8.
    pub fn is_int8(&self) -> bool {
        matches!(self.weight, LinearWeight::Int8(_))
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match &self.weight {
            LinearWeight::Dense(w) => [
                w.dims().first().copied().unwrap_or(0),
                w.dims().get(1).copied().unwrap_or(0),
            ],
            LinearWeight::Int8(q) => q.dims(),
            LinearWeight::PackedBf16(p) => p.dims(),
        }
    }

    /// Bytes of weight data read per forward row (the weight in its stored form).
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            LinearWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            LinearWeight::Int8(q) => q.size_in_bytes(),
            LinearWeight::PackedBf16(p) => p.size_in_bytes(),
        }
    }

    /// Apply to `x [.., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => ops::linear(x, w, self.bias.as_ref()),
            LinearWeight::PackedBf16(p) => ops::linear_packed(x, p, self.bias.as_ref()),
            LinearWeight::Int8(q) => {
                let b = self.bias_f32()?;
                ops::linear_int8(x, q, b.as_deref())
            }
        }
    }

    /// `act(self.forward(x))`, the activation applied as the output is produced (in the GEMM's
    /// epilogue where there is one): bitwise the same as [`Linear::forward`] followed by
    /// [`ops::Activation::apply`], without the second buffer. See [`ops::linear_act`].
    ///
    /// ```
    /// use kosmos_tensor::{nn::Linear, ops::Activation, Device, Tensor};
    /// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], &[2, 2], &Device::Cpu)?;
    /// let fc1 = Linear::new(w, None);
    /// let x = Tensor::from_vec(vec![3.0, -4.0], &[1, 2], &Device::Cpu)?;
    /// let fused = fc1.forward_act(&x, Activation::GeluErf)?;
    /// assert_eq!(fused.to_vec_f32()?, Activation::GeluErf.apply(&fc1.forward(&x)?)?.to_vec_f32()?);
    /// # Ok::<(), kosmos_tensor::Error>(())
    /// ```
    pub fn forward_act(&self, x: &Tensor, act: ops::Activation) -> Result<Tensor> {
        match &self.weight {
            LinearWeight::Dense(w) => ops::linear_act(x, w, self.bias.as_ref(), act),
            LinearWeight::PackedBf16(p) => ops::linear_packed_act(x, p, self.bias.as_ref(), act),
            LinearWeight::Int8(q) => {
                let b = self.bias_f32()?;
                ops::linear_int8_act(x, q, b.as_deref(), act)
            }
        }
    }

    /// The bias as f32 values (borrowed when it is stored in f32), for the int8 ops.
    fn bias_f32(&self) -> Result<Option<std::borrow::Cow<'_, [f32]>>> {
        self.bias.as_ref().map(|b| b.f32_cow("linear")).transpose()
    }

    /// Apply to f32 rows `x [rows, in]`, writing `out [rows, out]` (see [`ops::linear_into`] and
    /// [`ops::linear_int8_into`]); allocates nothing for up to [`ops::MAX_GEMV_ROWS`] rows.
    pub fn forward_into(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        match &self.weight {
            LinearWeight::Dense(w) => ops::linear_into(x, w, self.bias.as_ref(), out),
            LinearWeight::PackedBf16(p) => ops::linear_packed_into(x, p, self.bias.as_ref(), out),
            LinearWeight::Int8(q) => {
                let k = q.dims()[1];
                if !x.len().is_multiple_of(k) {
                    return Err(Error::InvalidArgument {
                        op: "linear_int8_into",
                        msg: format!("{} inputs are not rows of {k}", x.len()),
                    });
                }
                let b = self.bias_f32()?;
                ops::linear_int8_into(x, x.len() / k, q, b.as_deref(), out)
            }
        }
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
