//! Scaled dot-product attention over heads: `softmax(q kᵀ · scale + mask) v`.
//!
//! One rayon task per (batch, head): two small GEMMs that read q, k and v in place through their
//! strides (so `[B, T, H, hd] -> transpose(1, 2)` views and KV-cache `narrow`s need no copy), with the
//! scores of that head only in a scratch buffer. The result `[B, H, Tq, hd]` is a view of a
//! `[B, Tq, H, hd]` buffer (each head copies its rows there), so the model's transpose back to
//! `[B, Tq, H·hd]` is free.

use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::matmul::{as_f32, f32_storage, gemm_f32, StridedMat};
use crate::ops::softmax::softmax_scaled_row;
use crate::tensor::{check_cpu, Tensor};

/// An additive mask `[B or 1, H or 1, Tq, Tk]` (broadcast axes have stride 0).
pub(super) struct Mask {
    data: Vec<f32>,
    batch_stride: usize,
    head_stride: usize,
}

/// Head `(bi, hi)`'s scores `p` (`[Tq, Tk]` row-major) → probabilities: `· scale`, `+ mask`, then
/// the max-subtracted softmax of each row.
pub(super) fn softmax_scores(
    isa: crate::simd::Isa,
    p: &mut [f32],
    tk: usize,
    mask: Option<&Mask>,
    (bi, hi): (usize, usize),
    scale: f32,
) {
    for (r, row) in p.chunks_mut(tk).enumerate() {
        let m = mask.map(|m| {
            let mo = bi * m.batch_stride + hi * m.head_stride + r * tk;
            &m.data[mo..mo + tk]
        });
        softmax_scaled_row(isa, row, scale, m);
    }
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

/// The precision of attention's two products (`q kᵀ` and `probabilities · v`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionProducts {
    /// f32 operands: the exact-parity path.
    #[default]
    F32,
    /// q, k, v and the probabilities rounded to bf16 (nearest even) before they are multiplied,
    /// with f32 accumulation, as a bf16 PyTorch model's attention multiplies them; the scores, the
    /// mask and the softmax stay f32. With AVX512_BF16 the products run on `vdpbf16ps`; elsewhere
    /// the rounded values go through the f32 GEMM (the same products, other summation order).
    Bf16,
}

fn run(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    want_probs: bool,
    products: AttentionProducts,
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
    let bf16 = products == AttentionProducts::Bf16;
    #[cfg(target_arch = "x86_64")]
    if bf16 && isa == crate::simd::Isa::Avx512Bf16 {
        return super::attention_bf16::run(
            (&qf, &kf, &vf),
            q.dtype(),
            mask.as_ref(),
            scale,
            want_probs,
        );
    }
    // Without `vdpbf16ps`: the operands rounded to bf16 up front (the probabilities per head).
    let rounded =
        bf16.then(|| [&qf, &kf, &vf].map(|t| crate::convert::bf16_rounded(f32_storage(t))));
    let (qd, kd, vd) = match &rounded {
        Some([q, k, v]) => (&q[..], &k[..], &v[..]),
        None => (f32_storage(&qf), f32_storage(&kf), f32_storage(&vf)),
    };
    let head_off = |t: &Tensor, bi: usize, hi: usize| {
        t.layout.offset + bi * t.strides()[0] + hi * t.strides()[1]
    };
    let head = |i: usize, o: &mut [f32], p: &mut [f32], pr: &mut Vec<f32>| {
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
        softmax_scores(isa, p, tk, mask.as_ref(), (bi, hi), scale);
        let p: &[f32] = if bf16 {
            pr.clear();
            pr.extend(p.iter().map(|&x| half::bf16::from_f32(x).to_f32()));
            pr
        } else {
            p
        };
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
    run_heads((b, h, tq, tk, hd), want_probs, q.dtype(), head)
}

/// `[B, Tq, H, hd]` output storage that the heads fill from their own threads, one head's rows at
/// a time.
struct HeadsOut {
    ptr: *mut f32,
    len: usize,
    dims: (usize, usize, usize),
}

// SAFETY: `put`'s contract gives each head's rows to one thread; the rows of different heads are
// disjoint, and the buffer outlives the parallel loop (`run_heads`).
unsafe impl Send for HeadsOut {}
// SAFETY: as above.
unsafe impl Sync for HeadsOut {}

impl HeadsOut {
    /// Copies head `i`'s (`i = batch · H + head`) `[tq, hd]` rows `o` to their places.
    ///
    /// # Safety
    /// No other call for the same `i` runs at the same time.
    unsafe fn put(&self, i: usize, o: &[f32]) {
        let (tq, h, hd) = self.dims;
        let (bi, hi) = (i / h, i % h);
        for (r, row) in o.chunks_exact(hd).take(tq).enumerate() {
            let at = ((bi * tq + r) * h + hi) * hd;
            assert!(at + hd <= self.len, "attention output bounds");
            // SAFETY: in bounds (asserted); the elements belong to head `i` only, which no other
            // thread writes (the contract).
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), self.ptr.add(at), hd) };
        }
    }
}

/// Runs `head(i, out, scores, scratch)` for every (batch, head) `i = batch · H + head` on rayon:
/// `scores` is that head's `[tq, tk]` probabilities block (or scratch when they are not wanted)
/// and `out` its `[tq, hd]` result, which is then copied into a `[B, Tq, H, hd]` buffer. The
/// result is that buffer viewed as `[B, H, Tq, hd]`, so the callers' transpose back to
/// `[B, Tq, H·hd]` (before `out_proj`) needs no copy.
pub(super) fn run_heads<S: Default>(
    (b, h, tq, tk, hd): (usize, usize, usize, usize, usize),
    want_probs: bool,
    dtype: DType,
    head: impl Fn(usize, &mut [f32], &mut [f32], &mut S) + Sync + Send,
) -> Result<(Tensor, Option<Tensor>)> {
    // Not zeroed first: the heads write every element (`put`), and the length is set after.
    let len = b * tq * h * hd;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = HeadsOut {
        ptr: out.as_mut_ptr(),
        len,
        dims: (tq, h, hd),
    };
    let mut probs = if want_probs {
        vec![0f32; b * h * tq * tk]
    } else {
        Vec::new()
    };
    let init = || {
        let scores = if want_probs { 0 } else { tq * tk };
        (vec![0f32; tq * hd], vec![0f32; scores], S::default())
    };
    if want_probs {
        probs
            .par_chunks_mut(tq * tk)
            .enumerate()
            .for_each_init(init, |(o, _, s), (i, p)| {
                head(i, o, p, s);
                // SAFETY: each `i` is visited once.
                unsafe { dst.put(i, o) };
            });
    } else {
        (0..b * h)
            .into_par_iter()
            .for_each_init(init, |(o, p, s), i| {
                head(i, o, p, s);
                // SAFETY: each `i` is visited once.
                unsafe { dst.put(i, o) };
            });
    }
    // SAFETY: each of the `b * h` heads ran (a panic would have propagated) and wrote its `tq`
    // rows of `hd` values: together all `len` elements.
    unsafe { out.set_len(len) };
    let out = Tensor::from_f32_with_dtype(out, &[b, tq, h, hd], dtype).transpose(1, 2)?;
    let probs = want_probs.then(|| Tensor::from_f32_with_dtype(probs, &[b, h, tq, tk], dtype));
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
    Ok(run(q, k, v, mask, scale, false, AttentionProducts::F32)?.0)
}

/// [`attention`] (or, with `output_attentions`, [`attention_with_probs`]) with the products in
/// the given precision ([`AttentionProducts`]); the probabilities returned are the f32 ones.
///
/// ```
/// use kosmos_tensor::{ops, ops::AttentionProducts, Device, Tensor};
/// let q = Tensor::from_vec(vec![1.0, 0.5, -0.25, 2.0], &[1, 1, 2, 2], &Device::Cpu)?;
/// let (o, p) = ops::attention_products(&q, &q, &q, None, 0.5, true, AttentionProducts::Bf16)?;
/// // These inputs are exact in bf16, so only the probabilities (before `· v`) are rounded.
/// let exact = ops::attention(&q, &q, &q, None, 0.5)?.to_vec_f32()?;
/// for (a, b) in o.to_vec_f32()?.iter().zip(&exact) {
///     assert!((a - b).abs() <= 1e-2 * b.abs().max(1.0));
/// }
/// assert_eq!(p.map(|p| p.dims().to_vec()), Some(vec![1, 1, 2, 2]));
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn attention_products(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
    output_attentions: bool,
    products: AttentionProducts,
) -> Result<(Tensor, Option<Tensor>)> {
    run(q, k, v, mask, scale, output_attentions, products)
}

/// [`attention`] that also returns the probabilities `[B, H, Tq, Tk]` (for `output_attentions`).
pub fn attention_with_probs(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    let (out, probs) = run(q, k, v, mask, scale, true, AttentionProducts::F32)?;
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
        let m = mask.map(|m| &m[b * keys..(b + 1) * keys]);
        softmax_scaled_row(isa, p, scale, m);
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
