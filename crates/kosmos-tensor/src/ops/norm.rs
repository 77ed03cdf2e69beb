//! LayerNorm (plain and fused with a residual add) and L2 normalisation over the last dim.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::dtype::WithDType;
use crate::error::{Error, Result};
use crate::storage::CpuSlice;
use crate::tensor::{check_cpu, Tensor, PAR_THRESHOLD};

/// Sum with 16 independent f32 lanes (vectorises; pairwise-like accuracy).
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] += f(c[l]);
        }
    }
    let mut tail = 0f32;
    for &v in rem {
        tail += f(v);
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0] + tail
}

/// An output element a row kernel writes: an `f32` of a caller's buffer, or one of a new buffer
/// that is not zeroed first ([`super::new_output`]).
pub(crate) trait OutF32: Send {
    /// Stores `v`.
    fn set(&mut self, v: f32);
}

impl OutF32 for f32 {
    #[inline(always)]
    fn set(&mut self, v: f32) {
        *self = v;
    }
}

impl OutF32 for MaybeUninit<f32> {
    #[inline(always)]
    fn set(&mut self, v: f32) {
        self.write(v);
    }
}

/// Normalise one row: `out = (x - mean) / sqrt(var + eps) * w + b` (biased variance, two passes).
#[inline(always)]
fn norm_row<O: OutF32>(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [O]) {
    let d = x.len() as f32;
    let mean = lane_sum(x, |v| v) / d;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &bb) in out.iter_mut().zip(x).zip(w).zip(b) {
        o.set((v - mean) * rstd * g + bb);
    }
}

fn check_params(op: &'static str, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<(usize, usize)> {
    check_cpu(op, x.device())?;
    let (rows, d) = super::rows_cols(op, x)?;
    super::expect_vector(op, w, d, x)?;
    super::expect_vector(op, b, d, x)?;
    Ok((rows, d))
}

fn for_rows<O: OutF32>(out: &mut [O], d: usize, f: impl Fn(usize, &mut [O]) + Sync) {
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        out.chunks_mut(d).enumerate().for_each(|(r, o)| f(r, o));
    }
}

/// LayerNorm over the last dim with f32 accumulation and biased variance, as `torch.nn.LayerNorm`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    let (_, d) = check_params("layer_norm", x, w, b)?;
    let (xv, wv, bv) = (
        x.f32_cow("layer_norm")?,
        w.f32_cow("layer_norm")?,
        b.f32_cow("layer_norm")?,
    );
    let fill = |out: &mut [MaybeUninit<f32>]| {
        for_rows(out, d, |r, o| {
            norm_row(&xv[r * d..(r + 1) * d], &wv, &bv, eps, o)
        })
    };
    // SAFETY: `for_rows` visits every row of `out`, and `norm_row` writes all of it.
    let out = unsafe { super::new_output(xv.len(), fill) };
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}

/// `sum = x + residual; normed = layer_norm(sum)` in one pass over the rows. Returns `(sum, normed)`.
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    w: &Tensor,
    b: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let op = "add_layer_norm";
    let (_, d) = check_params(op, x, w, b)?;
    if residual.dims() != x.dims() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.dims().to_vec(),
            rhs: residual.dims().to_vec(),
        });
    }
    let (xv, rv) = (x.f32_cow(op)?, residual.f32_cow(op)?);
    let (wv, bv) = (w.f32_cow(op)?, b.f32_cow(op)?);
    let n = xv.len();
    // Neither buffer is zeroed first: each row of `sum` is written, then read as the input of the
    // row of `normed` it writes.
    let (mut sum, mut normed) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let kernel = |r: usize, (s, o): (&mut [MaybeUninit<f32>], &mut [MaybeUninit<f32>])| {
        let range = r * d..(r + 1) * d;
        for ((s, &a), &c) in s.iter_mut().zip(&xv[range.clone()]).zip(&rv[range]) {
            s.write(a + c);
        }
        // SAFETY: every element of the row was just written (`s` and the two inputs are `d`
        // long), and `MaybeUninit<f32>` has the layout of `f32`.
        let s = unsafe { &*(std::ptr::from_ref(s) as *const [f32]) };
        norm_row(s, &wv, &bv, eps, o);
    };
    let (s, o) = (
        &mut sum.spare_capacity_mut()[..n],
        &mut normed.spare_capacity_mut()[..n],
    );
    if n >= PAR_THRESHOLD {
        s.par_chunks_mut(d)
            .zip(o.par_chunks_mut(d))
            .enumerate()
            .for_each(|(r, p)| kernel(r, p));
    } else {
        s.chunks_mut(d)
            .zip(o.chunks_mut(d))
            .enumerate()
            .for_each(|(r, p)| kernel(r, p));
    }
    // SAFETY: the kernel wrote every element of every row of both (`n` is a multiple of `d`).
    unsafe {
        sum.set_len(n);
        normed.set_len(n);
    }
    Ok((
        Tensor::from_f32_with_dtype(sum, x.dims(), x.dtype()),
        Tensor::from_f32_with_dtype(normed, x.dims(), x.dtype()),
    ))
}

/// [`norm_row`] with weights of any (matching) dtype, converted exactly to f32 per element.
#[inline(always)]
fn norm_row_t<W: WithDType>(x: &[f32], w: &[W], b: &[W], eps: f32, out: &mut [f32]) {
    let d = x.len() as f32;
    let mean = lane_sum(x, |v| v) / d;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &bb) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * rstd * g.to_f32() + bb.to_f32();
    }
}

/// Checks an `_into` LayerNorm's buffers: `x` holds whole rows of `w`'s width.
fn check_into(
    op: &'static str,
    x: &[f32],
    w: &Tensor,
    b: &Tensor,
    outs: &[usize],
) -> Result<usize> {
    check_cpu(op, w.device())?;
    check_cpu(op, b.device())?;
    let d = w.elem_count();
    if w.rank() != 1 || b.dims() != w.dims() || d == 0 {
        return Err(Error::ShapeMismatch {
            op,
            lhs: w.dims().to_vec(),
            rhs: b.dims().to_vec(),
        });
    }
    if x.is_empty() || !x.len().is_multiple_of(d) || outs.iter().any(|&n| n != x.len()) {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![x.len()],
            rhs: vec![d],
        });
    }
    Ok(d)
}

/// Normalises every `d`-row of `x` into `out` with weights in their stored dtype (no allocation
/// when both are contiguous and of the same dtype, as loaded weights are).
fn norm_rows_into(
    op: &'static str,
    x: &[f32],
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    out: &mut [f32],
) -> Result<()> {
    let d = w.elem_count();
    let rows = x.chunks_exact(d).zip(out.chunks_exact_mut(d));
    match (w.contiguous_slice(), b.contiguous_slice()) {
        (Some(CpuSlice::F32(wv)), Some(CpuSlice::F32(bv))) => {
            rows.for_each(|(x, o)| norm_row(x, wv, bv, eps, o))
        }
        (Some(CpuSlice::BF16(wv)), Some(CpuSlice::BF16(bv))) => {
            rows.for_each(|(x, o)| norm_row_t(x, wv, bv, eps, o))
        }
        (Some(CpuSlice::F16(wv)), Some(CpuSlice::F16(bv))) => {
            rows.for_each(|(x, o)| norm_row_t(x, wv, bv, eps, o))
        }
        _ => {
            let (wv, bv) = (w.f32_cow(op)?, b.f32_cow(op)?);
            rows.for_each(|(x, o)| norm_row(x, &wv, &bv, eps, o))
        }
    }
    Ok(())
}

/// [`layer_norm`] into a caller's buffer: `x` and `out` are `[rows, D]` f32 row-major, `w`/`b` are
/// `[D]` in any dtype (read in place). Same arithmetic as [`layer_norm`]; allocates nothing.
///
/// ```
/// use kosmos_tensor::{ops, Device, Tensor};
/// let w = Tensor::from_vec(vec![1.0, 1.0], &[2], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.0, 0.0], &[2], &Device::Cpu)?;
/// let mut out = [0f32; 2];
/// ops::layer_norm_into(&[1.0, 3.0], &w, &b, 0.0, &mut out)?;
/// assert_eq!(out, [-1.0, 1.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn layer_norm_into(x: &[f32], w: &Tensor, b: &Tensor, eps: f32, out: &mut [f32]) -> Result<()> {
    let op = "layer_norm_into";
    check_into(op, x, w, b, &[out.len()])?;
    norm_rows_into(op, x, w, b, eps, out)
}

/// [`add_layer_norm`] into caller buffers: `sum = x + residual`, `normed = layer_norm(sum)`; all
/// four slices are `[rows, D]` f32. Allocates nothing.
pub fn add_layer_norm_into(
    x: &[f32],
    residual: &[f32],
    w: &Tensor,
    b: &Tensor,
    eps: f32,
    sum: &mut [f32],
    normed: &mut [f32],
) -> Result<()> {
    let op = "add_layer_norm_into";
    check_into(op, x, w, b, &[residual.len(), sum.len(), normed.len()])?;
    for ((s, &a), &c) in sum.iter_mut().zip(x).zip(residual) {
        *s = a + c;
    }
    norm_rows_into(op, sum, w, b, eps, normed)
}

/// `x / max(||x||₂, eps)` over the last dim, as `torch.nn.functional.normalize`.
pub fn l2_normalize_last_dim(x: &Tensor, eps: f32) -> Result<Tensor> {
    check_cpu("l2_normalize_last_dim", x.device())?;
    let (_, d) = super::rows_cols("l2_normalize_last_dim", x)?;
    let xv = x.f32_cow("l2_normalize_last_dim")?;
    let mut out = vec![0f32; xv.len()];
    for_rows(&mut out, d, |r, o| {
        let row = &xv[r * d..(r + 1) * d];
        let norm = lane_sum(row, |v| v * v).sqrt().max(eps);
        for (o, &v) in o.iter_mut().zip(row) {
            *o = v / norm;
        }
    });
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}
