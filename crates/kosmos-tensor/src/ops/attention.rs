//! Scaled dot-product attention over heads: `softmax(q kᵀ · scale + mask) v`.
//!
//! One rayon task per (batch, head): two small GEMMs that read q, k and v in place through their
//! strides (so `[B, T, H, hd] -> transpose(1, 2)` views and KV-cache `narrow`s need no copy), with the
//! scores of that head only in a scratch buffer.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::matmul::{as_f32, f32_storage, gemm_f32, StridedMat};
use crate::ops::softmax::softmax_row;
use crate::tensor::{check_cpu, Tensor};

struct Mask {
    data: Vec<f32>,
    batch_stride: usize,
    head_stride: usize,
}

fn check_mask(mask: &Tensor, b: usize, h: usize, tq: usize, tk: usize) -> Result<Mask> {
    let dims = mask.dims();
    let ok = match dims.len() {
        2 => dims == [tq, tk],
        4 => {
            (dims[0] == 1 || dims[0] == b)
                && (dims[1] == 1 || dims[1] == h)
                && dims[2] == tq
                && dims[3] == tk
        }
        _ => false,
    };
    if !ok {
        return Err(Error::ShapeMismatch {
            op: "attention(mask)",
            lhs: vec![b, h, tq, tk],
            rhs: dims.to_vec(),
        });
    }
    let (batch_stride, head_stride) = if dims.len() == 4 {
        let hs = if dims[1] == 1 { 0 } else { tq * tk };
        let bs = if dims[0] == 1 { 0 } else { dims[1] * tq * tk };
        (bs, hs)
    } else {
        (0, 0)
    };
    Ok(Mask {
        data: mask.to_vec_f32()?,
        batch_stride,
        head_stride,
    })
}

fn run(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    want_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let op = "attention";
    let isa = crate::simd::Isa::current();
    for t in [q, k, v] {
        check_cpu(op, t.device())?;
        if t.rank() != 4 {
            return Err(Error::Rank {
                op,
                expected: 4,
                shape: t.dims().to_vec(),
            });
        }
        super::reject_empty(op, t)?;
    }
    let (b, h, tq, hd) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let tk = k.dims()[2];
    if k.dims() != [b, h, tk, hd] || v.dims() != k.dims() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: q.dims().to_vec(),
            rhs: if k.dims() != [b, h, tk, hd] {
                k.dims()
            } else {
                v.dims()
            }
            .to_vec(),
        });
    }
    let mask = mask.map(|m| check_mask(m, b, h, tq, tk)).transpose()?;
    let (qf, kf, vf) = (as_f32(q)?, as_f32(k)?, as_f32(v)?);
    let (qd, kd, vd) = (f32_storage(&qf), f32_storage(&kf), f32_storage(&vf));
    let head_off = |t: &Tensor, bi: usize, hi: usize| {
        t.layout.offset + bi * t.strides()[0] + hi * t.strides()[1]
    };
    let mut out = vec![0f32; b * h * tq * hd];
    let mut probs = if want_probs {
        vec![0f32; b * h * tq * tk]
    } else {
        Vec::new()
    };
    let head = |i: usize, o: &mut [f32], p: &mut [f32]| {
        let (bi, hi) = (i / h, i % h);
        let qm = StridedMat {
            data: qd,
            offset: head_off(&qf, bi, hi),
            rs: qf.strides()[2],
            cs: qf.strides()[3],
        };
        // kᵀ [hd, tk]
        let km = StridedMat {
            data: kd,
            offset: head_off(&kf, bi, hi),
            rs: kf.strides()[3],
            cs: kf.strides()[2],
        };
        gemm_f32(p, tk, (tq, tk, hd), qm, km, false, false);
        for (r, row) in p.chunks_mut(tk).enumerate() {
            match &mask {
                Some(m) => {
                    let mo = bi * m.batch_stride + hi * m.head_stride + r * tk;
                    for (s, &mv) in row.iter_mut().zip(&m.data[mo..mo + tk]) {
                        *s = *s * scale + mv;
                    }
                }
                None => row.iter_mut().for_each(|s| *s *= scale),
            }
            softmax_row(isa, row);
        }
        let pm = StridedMat {
            data: p,
            offset: 0,
            rs: tk,
            cs: 1,
        };
        let vm = StridedMat {
            data: vd,
            offset: head_off(&vf, bi, hi),
            rs: vf.strides()[2],
            cs: vf.strides()[3],
        };
        gemm_f32(o, hd, (tq, hd, tk), pm, vm, false, false);
    };
    if want_probs {
        out.par_chunks_mut(tq * hd)
            .zip(probs.par_chunks_mut(tq * tk))
            .enumerate()
            .for_each(|(i, (o, p))| head(i, o, p));
    } else {
        out.par_chunks_mut(tq * hd).enumerate().for_each_init(
            || vec![0f32; tq * tk],
            |scratch, (i, o)| head(i, o, scratch),
        );
    }
    let out = Tensor::from_f32_with_dtype(out, &[b, h, tq, hd], q.dtype());
    let probs = want_probs.then(|| Tensor::from_f32_with_dtype(probs, &[b, h, tq, tk], q.dtype()));
    Ok((out, probs))
}

/// `softmax((q kᵀ) · scale + mask) v` with q `[B, H, Tq, hd]`, k/v `[B, H, Tk, hd]` (strided views OK) and
/// an optional additive f32 mask `[B or 1, H or 1, Tq, Tk]` (or `[Tq, Tk]`). Returns `[B, H, Tq, hd]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<Tensor> {
    Ok(run(q, k, v, mask, scale, false)?.0)
}

/// [`attention`] that also returns the probabilities `[B, H, Tq, Tk]` (for `output_attentions`).
pub fn attention_with_probs(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    let (out, probs) = run(q, k, v, mask, scale, true)?;
    let probs = probs.ok_or(Error::InvalidArgument {
        op: "attention_with_probs",
        msg: "probabilities were not computed".into(),
    })?;
    Ok((out, probs))
}

/// The sizes of a decode attention ([`attention_decode_into`]): one new query per row against a
/// KV cache laid out `[batch, heads, capacity, head_dim]`, of which the first `keys` slots are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeAttention {
    /// Rows.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Slots per (row, head) in the cache buffers.
    pub capacity: usize,
    /// Slots attended to (`<= capacity`): the longest row's cached tokens plus the new one.
    pub keys: usize,
}

/// Decode attention into caller buffers: for every row `b` and head `h`,
/// `out[b, h] = softmax(q[b, h] · k[b, h, j] · scale + mask[b, j] for j < keys) · v[b, h, ..keys]`.
///
/// - `q`, `out`: `[batch, heads * head_dim]` (the layout of `q_proj`'s output and `out_proj`'s input);
/// - `k`, `v`: the cache buffers `[batch, heads, capacity, head_dim]`;
/// - `mask`: optional additive `[batch, keys]`;
/// - `scores`: scratch of at least `batch * heads * keys` floats.
///
/// Scores are computed and softmaxed exactly as in [`attention`] (scale, then the mask, then the
/// max-subtracted softmax); only the summation order of the dot products differs. Allocates nothing;
/// (row, head) pairs run on rayon when the work is large.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode_into(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: DecodeAttention,
    mask: Option<&[f32]>,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    let op = "attention_decode_into";
    let DecodeAttention {
        batch,
        heads,
        head_dim: hd,
        capacity: cap,
        keys,
    } = shape;
    let width = heads * hd;
    let cache_len = batch * heads * cap * hd;
    let ok = batch > 0
        && width > 0
        && keys > 0
        && keys <= cap
        && q.len() == batch * width
        && out.len() == batch * width
        && k.len() == cache_len
        && v.len() == cache_len
        && scores.len() >= batch * heads * keys
        && mask.is_none_or(|m| m.len() == batch * keys);
    if !ok {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![batch, heads, cap, hd, keys],
            rhs: vec![q.len(), k.len(), v.len(), scores.len(), out.len()],
        });
    }
    let isa = crate::simd::Isa::current();
    let head = |i: usize, o: &mut [f32], p: &mut [f32]| {
        let (b, h) = (i / heads, i % heads);
        let qv = &q[b * width + h * hd..b * width + (h + 1) * hd];
        let base = (b * heads + h) * cap * hd;
        for (j, s) in p.iter_mut().enumerate() {
            let kr = &k[base + j * hd..base + (j + 1) * hd];
            *s = <f32 as crate::simd::dot::DotElem>::dot(isa, qv, kr);
        }
        match mask {
            Some(m) => {
                for (s, &mv) in p.iter_mut().zip(&m[b * keys..(b + 1) * keys]) {
                    *s = *s * scale + mv;
                }
            }
            None => p.iter_mut().for_each(|s| *s *= scale),
        }
        softmax_row(isa, p);
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            let vr = &v[base + j * hd..base + (j + 1) * hd];
            o.iter_mut().zip(vr).for_each(|(o, &x)| *o += pj * x);
        }
    };
    let scores = &mut scores[..batch * heads * keys];
    if batch * heads * keys * hd >= 1 << 16 && batch * heads > 1 {
        out.par_chunks_mut(hd)
            .zip(scores.par_chunks_mut(keys))
            .enumerate()
            .for_each(|(i, (o, p))| head(i, o, p));
    } else {
        out.chunks_mut(hd)
            .zip(scores.chunks_mut(keys))
            .enumerate()
            .for_each(|(i, (o, p))| head(i, o, p));
    }
    Ok(())
}
