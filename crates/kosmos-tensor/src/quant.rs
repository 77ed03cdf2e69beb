//! Int8 weight-only quantisation: per-output-channel symmetric int8 weights with f32 scales.
//!
//! For each output row `o` of `W [out, in]`: `scale[o] = max_i |W[o, i]| / 127` and
//! `q[o, i] = round_half_even(W[o, i] / scale[o])`, clamped to `[-127, 127]` (the division and
//! rounding are done in f64, so `|W - scale * q| <= scale / 2` holds element-wise up to f32
//! rounding of the scale). An all-zero row gets `scale = 0` and `q = 0`. The dequantised weight
//! is `scale[o] * q[o, i]`. Activations stay f32 (or bf16, computed in f32): see
//! [`ops::linear_int8`](crate::ops::linear_int8).

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::linear_int8;
use crate::tensor::{check_cpu, Tensor};
use crate::weights::WeightStore;
use crate::{DType, Device};

/// The int8 values: owned, or a zero-copy view of a memory-mapped safetensors file.
#[derive(Clone)]
enum I8Data {
    Owned(Arc<[i8]>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
}

impl I8Data {
    fn as_slice(&self) -> &[i8] {
        match self {
            I8Data::Owned(v) => v,
            I8Data::Mapped { map, start, len } => {
                let bytes: &[u8] = &map[*start..*start + *len];
                // SAFETY: i8 and u8 have the same size, alignment and validity (every bit pattern).
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
            }
        }
    }
}

/// A quantised `[out, in]` weight matrix: row-major int8 values and one f32 scale per output row.
///
/// Cloning is cheap (the values are shared).
#[derive(Clone)]
pub struct Int8Weight {
    q: I8Data,
    scales: Arc<[f32]>,
    out_features: usize,
    in_features: usize,
}

/// Sizes only (the values may be gigabytes).
impl std::fmt::Debug for Int8Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Weight")
            .field("dims", &self.dims())
            .field("mapped", &matches!(self.q, I8Data::Mapped { .. }))
            .finish()
    }
}

/// The key of the per-row scales stored next to an int8 weight `key` in a quantised checkpoint
/// (`"x.q_proj.weight"` -> `"x.q_proj.weight_scale"`).
pub fn scale_key(key: &str) -> String {
    format!("{key}_scale")
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
        Self::quantize_then(w, |_| {})
    }

    /// Quantises `store`'s float weight `key` (`[out, in]`) as [`Int8Weight::quantize`] does. When
    /// it is stored as f32 (read in place from the map), the source pages of each block of rows
    /// are released from this process's resident set as soon as the block is quantised, so the
    /// resident set grows by the int8 copy and a few MiB, not by the f32 weight.
    pub fn quantize_stored(store: &WeightStore, key: &str, dims: [usize; 2]) -> Result<Int8Weight> {
        let w = store.get(key, &dims, DType::F32, &Device::Cpu)?;
        crate::ops::reject_empty("quantize_int8", &w)?;
        let row_bytes = 4 * dims[1];
        Self::quantize_then(&w, |rows| {
            store.release_f32_part(key, rows.start * row_bytes, rows.len() * row_bytes);
        })
    }

    /// The quantiser, in parallel blocks of rows (about 4 MiB of f32 each); `done(rows)` runs after
    /// each block. `w` is a non-empty rank-2 CPU tensor.
    fn quantize_then(w: &Tensor, done: impl Fn(Range<usize>) + Sync) -> Result<Int8Weight> {
        const OP: &str = "quantize_int8";
        let (n, k) = (w.dims()[0], w.dims()[1]);
        let block = ((1 << 20) / k).max(1);
        let data = w.f32_cow(OP)?;
        let mut q = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        let bad = q
            .par_chunks_mut(k * block)
            .zip(scales.par_chunks_mut(block))
            .zip(data.par_chunks(k * block))
            .enumerate()
            .map(|(b, ((qb, sb), wb))| {
                let ok = (qb.chunks_mut(k).zip(sb.iter_mut()).zip(wb.chunks(k)))
                    .all(|((qr, s), wr)| quantize_row(wr, qr, s));
                done(b * block..b * block + sb.len());
                ok
            })
            .find_any(|ok| !ok)
            .is_some();
        if bad {
            return Err(Error::InvalidArgument {
                op: OP,
                msg: "weight has a non-finite value".into(),
            });
        }
        Ok(Int8Weight {
            q: I8Data::Owned(q.into()),
            scales: scales.into(),
            out_features: n,
            in_features: k,
        })
    }

    /// Reads a weight saved by a quantiser: `key` stored as `I8` `[out, in]` (a zero-copy view of
    /// the map) and its scales at [`scale_key`]`(key)`, `F32` `[out]`.
    ///
    /// Errors on a missing key, a wrong shape or dtype, or a negative or non-finite scale. The
    /// values are not scanned (that would fault in the whole matrix at load): a stored -128 is
    /// outside the symmetric range the quantiser writes, but it computes the well-defined
    /// `scale * -128`.
    pub fn load(store: &WeightStore, key: &str, dims: [usize; 2]) -> Result<Int8Weight> {
        let (map, start) = store.i8_view(key, &dims)?;
        let scales = store
            .get(&scale_key(key), &[dims[0]], DType::F32, &Device::Cpu)?
            .to_vec_f32()?;
        check_scales("Int8Weight::load", &scales)?;
        if dims[0] == 0 || dims[1] == 0 {
            return Err(Error::Empty {
                op: "Int8Weight::load",
                shape: dims.to_vec(),
            });
        }
        Ok(Int8Weight {
            q: I8Data::Mapped {
                map,
                start,
                len: dims[0] * dims[1],
            },
            scales: scales.into(),
            out_features: dims[0],
            in_features: dims[1],
        })
    }

    /// The values as little-endian bytes (for writing a quantised checkpoint).
    pub fn q_bytes(&self) -> &[u8] {
        let q = self.q();
        // SAFETY: i8 and u8 have the same size, alignment and validity.
        unsafe { std::slice::from_raw_parts(q.as_ptr().cast::<u8>(), q.len()) }
    }

    /// The scales as little-endian f32 bytes (for writing a quantised checkpoint).
    pub fn scale_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.scales)
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
        check_scales(OP, &scales)?;
        Ok(Int8Weight {
            q: I8Data::Owned(q.into()),
            scales: scales.into(),
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
        self.q.as_slice()
    }

    /// One scale per output row.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes of weight data (int8 values plus scales).
    pub fn size_in_bytes(&self) -> usize {
        self.out_features * self.in_features + 4 * self.scales.len()
    }

    /// The dequantised weight `scale[o] * q[o, i]` as an f32 tensor `[out, in]`.
    pub fn dequantize(&self) -> Result<Tensor> {
        let k = self.in_features;
        let q = self.q();
        let mut out = vec![0f32; q.len()];
        out.par_chunks_mut(k)
            .zip(q.par_chunks(k))
            .zip(self.scales.par_iter())
            .for_each(|((o, q), &s)| {
                o.iter_mut()
                    .zip(q)
                    .for_each(|(o, &q)| *o = s * f32::from(q))
            });
        Tensor::from_vec(out, &self.dims(), &crate::Device::Cpu)
    }
}

/// Scales must be finite and non-negative.
fn check_scales(op: &'static str, scales: &[f32]) -> Result<()> {
    match scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
        Some(s) => Err(Error::InvalidArgument {
            op,
            msg: format!("invalid scale {s}"),
        }),
        None => Ok(()),
    }
}

/// Quantise one row; false if it holds a non-finite value. The same arithmetic on every path:
/// compiled for AVX-512 / AVX2 the loop vectorises (and rounds with `vroundpd` instead of a libm
/// call), which is what makes load-time quantisation of the full model take seconds, not minutes.
fn quantize_row(w: &[f32], q: &mut [i8], scale: &mut f32) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::Isa;
        match Isa::current() {
            // SAFETY: the level is supported (`Isa::current` only returns supported levels).
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { quantize_row_avx512(w, q, scale) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { quantize_row_avx2(w, q, scale) },
            Isa::Scalar => {}
        }
    }
    quantize_row_impl(w, q, scale)
}

/// # Safety
/// The CPU must support AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn quantize_row_avx512(w: &[f32], q: &mut [i8], scale: &mut f32) -> bool {
    quantize_row_impl(w, q, scale)
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_row_avx2(w: &[f32], q: &mut [i8], scale: &mut f32) -> bool {
    quantize_row_impl(w, q, scale)
}

#[inline(always)]
fn quantize_row_impl(w: &[f32], q: &mut [i8], scale: &mut f32) -> bool {
    // One integer pass (it vectorises): the bits of |v| order like the values for every
    // non-negative float, and inf/NaN are exactly the bit patterns >= the bits of +inf.
    let bits = w
        .iter()
        .fold(0u32, |m, &v| m.max(v.to_bits() & 0x7fff_ffff));
    if bits >= f32::INFINITY.to_bits() {
        return false;
    }
    let max = f32::from_bits(bits);
    let s = max / 127.0;
    *scale = s;
    if s == 0.0 {
        q.fill(0);
        return true;
    }
    let s = f64::from(s);
    for (q, &v) in q.iter_mut().zip(w) {
        let r = (f64::from(v) / s).round_ties_even().clamp(-127.0, 127.0);
        // SAFETY: `v` is finite and `s` is finite and positive, so `r` is a finite integer in
        // [-127, 127] (the unchecked cast skips the NaN/overflow handling that stops vectorising).
        *q = unsafe { r.to_int_unchecked::<i32>() } as i8;
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
