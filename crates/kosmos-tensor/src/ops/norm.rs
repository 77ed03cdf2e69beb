//! LayerNorm (plain and fused with a residual add) and L2 normalisation over the last dim.

use rayon::prelude::*;

use crate::error::{Error, Result};
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

/// Normalise one row: `out = (x - mean) / sqrt(var + eps) * w + b` (biased variance, two passes).
#[inline(always)]
fn norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let d = x.len() as f32;
    let mean = lane_sum(x, |v| v) / d;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d;
    let rstd = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &bb) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * rstd * g + bb;
    }
}

fn check_params(op: &'static str, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<(usize, usize)> {
    check_cpu(op, x.device())?;
    let (rows, d) = super::rows_cols(op, x)?;
    super::expect_vector(op, w, d, x)?;
    super::expect_vector(op, b, d, x)?;
    Ok((rows, d))
}

fn for_rows(out: &mut [f32], d: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
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
    let mut out = vec![0f32; xv.len()];
    for_rows(&mut out, d, |r, o| {
        norm_row(&xv[r * d..(r + 1) * d], &wv, &bv, eps, o)
    });
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
    let mut sum = vec![0f32; xv.len()];
    let mut normed = vec![0f32; xv.len()];
    let kernel = |r: usize, (s, o): (&mut [f32], &mut [f32])| {
        let range = r * d..(r + 1) * d;
        for ((s, &a), &c) in s.iter_mut().zip(&xv[range.clone()]).zip(&rv[range]) {
            *s = a + c;
        }
        norm_row(s, &wv, &bv, eps, o);
    };
    if sum.len() >= PAR_THRESHOLD {
        sum.par_chunks_mut(d)
            .zip(normed.par_chunks_mut(d))
            .enumerate()
            .for_each(|(r, p)| kernel(r, p));
    } else {
        sum.chunks_mut(d)
            .zip(normed.chunks_mut(d))
            .enumerate()
            .for_each(|(r, p)| kernel(r, p));
    }
    Ok((
        Tensor::from_f32_with_dtype(sum, x.dims(), x.dtype()),
        Tensor::from_f32_with_dtype(normed, x.dims(), x.dtype()),
    ))
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
