//! Int8 weight-only quantisation: per-output-channel symmetric int8 weights with f32 scales.
//!
//! For each output row `o` of `W [out, in]`: `scale[o] = max_i |W[o, i]| / 127` and
//! `q[o, i] = round_half_even(W[o, i] / scale[o])`, clamped to `[-127, 127]` (the division and
//! rounding are done in f64, so `|W - scale * q| <= scale / 2` holds element-wise up to f32
//! rounding of the scale). An all-zero row gets `scale = 0` and `q = 0`. The dequantised weight
//! is `scale[o] * q[o, i]`. Activations stay f32 (or bf16, computed in f32): see
//! [`ops::linear_int8`](crate::ops::linear_int8).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::linear_int8;
use crate::tensor::{check_cpu, Tensor};

/// A quantised `[out, in]` weight matrix: row-major int8 values and one f32 scale per output row.
#[derive(Clone, Debug)]
pub struct Int8Weight {
    q: Vec<i8>,
    scales: Vec<f32>,
    out_features: usize,
    in_features: usize,
}

impl Int8Weight {
    /// Quantise an f32/bf16/f16 CPU tensor `[out, in]` (any strides).
    ///
    /// Errors on a rank other than 2, an empty tensor, or a non-finite weight.
    ///
    /// ```
    /// use kosmos_tensor::{quant::Int8Weight, Device, Tensor};
    /// let w = Tensor::from_vec(vec![1.0, -0.5, 0.0, 0.25], &[2, 2], &Device::Cpu)?;
    /// let q = Int8Weight::quantize(&w)?;
    /// assert_eq!(q.q(), &[127, -64, 0, 127]);
    /// assert_eq!(q.scales(), &[1.0 / 127.0, 0.25 / 127.0]);
    /// # Ok::<(), kosmos_tensor::Error>(())
    /// ```
    pub fn quantize(w: &Tensor) -> Result<Int8Weight> {
        const OP: &str = "quantize_int8";
        check_cpu(OP, w.device())?;
        if w.rank() != 2 {
            return Err(Error::Rank {
                op: OP,
                expected: 2,
                shape: w.dims().to_vec(),
            });
        }
        crate::ops::reject_empty(OP, w)?;
        let (n, k) = (w.dims()[0], w.dims()[1]);
        let data = w.f32_cow(OP)?;
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        let bad = q
            .par_chunks_mut(k)
            .zip(scales.par_iter_mut())
            .zip(data.par_chunks(k))
            .map(|((qr, s), wr)| quantize_row(wr, qr, s))
            .find_any(|ok| !ok)
            .is_some();
        if bad {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: "weight has a non-finite value".into(),
            });
        }
        Ok(Int8Weight {
            q,
            scales,
            out_features: n,
            in_features: k,
        })
    }

    /// A weight from already-quantised parts (e.g. read from a saved quantised file): `q` is
    /// row-major `[out, in]`, `scales` is `[out]`. Errors on inconsistent lengths, zero sizes,
    /// the value -128 (outside the symmetric range) or a negative or non-finite scale.
    pub fn from_parts(
        q: Vec<i8>,
        scales: Vec<f32>,
        out_features: usize,
        in_features: usize,
    ) -> Result<Int8Weight> {
        const OP: &str = "Int8Weight::from_parts";
        let bad = |msg: String| Err(Error::InvalidArgument { op: OP, msg });
        if out_features == 0 || in_features == 0 {
            return Err(Error::Empty {
                op: OP,
                shape: vec![out_features, in_features],
            });
        }
        if out_features.checked_mul(in_features) != Some(q.len()) || scales.len() != out_features {
            return bad(format!(
                "{} values and {} scales for [{out_features}, {in_features}]",
                q.len(),
                scales.len()
            ));
        }
        if q.contains(&i8::MIN) {
            return bad("value -128 is outside the symmetric range [-127, 127]".into());
        }
        if let Some(s) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return bad(format!("invalid scale {s}"));
        }
        Ok(Int8Weight {
            q,
            scales,
            out_features,
            in_features,
        })
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.out_features, self.in_features]
    }

    /// Row-major `[out, in]` int8 values.
    pub fn q(&self) -> &[i8] {
        &self.q
    }

    /// One scale per output row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes of weight data (int8 values plus scales).
    pub fn size_in_bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len()
    }

    /// The dequantised weight `scale[o] * q[o, i]` as an f32 tensor `[out, in]`.
    pub fn dequantize(&self) -> Result<Tensor> {
        let k = self.in_features;
        let mut out = vec![0f32; self.q.len()];
        out.par_chunks_mut(k)
            .zip(self.q.par_chunks(k))
            .zip(self.scales.par_iter())
            .for_each(|((o, q), &s)| {
                o.iter_mut()
                    .zip(q)
                    .for_each(|(o, &q)| *o = s * f32::from(q))
            });
        Tensor::from_vec(out, &self.dims(), &crate::Device::Cpu)
    }
}

/// Quantise one row; false if it holds a non-finite value.
fn quantize_row(w: &[f32], q: &mut [i8], scale: &mut f32) -> bool {
    let mut max = 0f32;
    for &v in w {
        if !v.is_finite() {
            return false;
        }
        max = max.max(v.abs());
    }
    let s = max / 127.0;
    *scale = s;
    if s == 0.0 {
        q.fill(0);
        return true;
    }
    let s = f64::from(s);
    for (q, &v) in q.iter_mut().zip(w) {
        *q = (f64::from(v) / s).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    true
}

/// `y = x · deq(W)ᵀ + b` with an int8 weight (the quantised counterpart of [`nn::Linear`](crate::nn::Linear)).
#[derive(Clone, Debug)]
pub struct QuantizedLinear {
    /// The quantised `[out, in]` weight.
    pub weight: Int8Weight,
    /// `[out]`, kept in f32.
    pub bias: Option<Vec<f32>>,
}

impl QuantizedLinear {
    /// Quantise `weight [out, in]` (f32/bf16/f16) and keep `bias [out]` in f32.
    ///
    /// ```
    /// use kosmos_tensor::{quant::QuantizedLinear, Device, Tensor};
    /// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 2.0], &[2, 2], &Device::Cpu)?;
    /// let b = Tensor::from_vec(vec![0.5, -0.5], &[2], &Device::Cpu)?;
    /// let layer = QuantizedLinear::new(&w, Some(&b))?;
    /// let x = Tensor::from_vec(vec![3.0, 4.0], &[1, 2], &Device::Cpu)?;
    /// assert_eq!(layer.forward(&x)?.to_vec_f32()?, vec![3.5, 7.5]);
    /// # Ok::<(), kosmos_tensor::Error>(())
    /// ```
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<QuantizedLinear> {
        let weight = Int8Weight::quantize(weight)?;
        let bias = match bias {
            Some(b) => {
                crate::ops::expect_vector("quantize_int8", b, weight.out_features, b)?;
                Some(b.to_vec_f32()?)
            }
            None => None,
        };
        Ok(QuantizedLinear { weight, bias })
    }

    /// A layer from an already-quantised weight and an optional f32 bias `[out]`.
    pub fn from_weight(weight: Int8Weight, bias: Option<Vec<f32>>) -> Result<QuantizedLinear> {
        if let Some(b) = &bias {
            if b.len() != weight.out_features {
                return Err(Error::ShapeMismatch {
                    op: "QuantizedLinear::from_weight",
                    lhs: weight.dims().to_vec(),
                    rhs: vec![b.len()],
                });
            }
        }
        Ok(QuantizedLinear { weight, bias })
    }

    /// Apply to `x [.., in]` (f32/bf16/f16; computed in f32, returned in `x`'s dtype).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear_int8(x, &self.weight, self.bias.as_deref())
    }
}
