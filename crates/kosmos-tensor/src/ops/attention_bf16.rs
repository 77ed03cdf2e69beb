//! [`super::AttentionProducts::Bf16`] on AVX512_BF16: per (batch, head), q and k rounded to bf16
//! and multiplied by the panel GEMM (`vdpbf16ps`, f32 accumulation), the f32 scores softmaxed as
//! in the f32 path, then the probabilities (rounded to bf16 while they are packed) times v (rounded
//! to bf16 and packed as the GEMM's weight panels). Each head runs on one thread; the heads are
//! spread over rayon.

use half::bf16;
use rayon::prelude::*;

use super::attention::{run_heads, softmax_scores, Mask};
use crate::convert::round_into_bf16;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::matmul::f32_storage;
use crate::simd::panel_gemm::{gemm_bf16_serial, GemmOut, Lhs, WSrc, NR};
use crate::simd::Isa;
use crate::tensor::Tensor;

/// One thread's scratch for a head: the probabilities in bf16 and v packed as the weight panels
/// of `P · v`.
#[derive(Default)]
struct Scratch {
    probs: Vec<bf16>,
    v_packed: Vec<u32>,
}

/// `src` rounded to bf16 (nearest even), on rayon in chunks.
fn to_bf16(src: &[f32]) -> Vec<bf16> {
    let mut dst = vec![bf16::ZERO; src.len()];
    dst.par_chunks_mut(1 << 14)
        .zip(src.par_chunks(1 << 14))
        .for_each(|(d, s)| round_into_bf16(s, d));
    dst
}

/// A `[B, H, T, hd]` operand in bf16: its storage rounded to bf16, read through the view's strides
/// (made contiguous first unless its head dim is contiguous and its storage is at most twice the
/// view).
struct Operand {
    data: Vec<bf16>,
    offset: usize,
    strides: [usize; 4],
}

impl Operand {
    fn new(t: &Tensor) -> Result<Self> {
        let dense = t.strides()[3] == 1 && f32_storage(t).len() <= 2 * t.elem_count();
        let t = if dense { t.clone() } else { t.contiguous()? };
        let st = t.strides();
        Ok(Self {
            data: to_bf16(f32_storage(&t)),
            offset: t.layout.offset,
            strides: [st[0], st[1], st[2], st[3]],
        })
    }

    /// Where head `(bi, hi)` starts.
    fn head(&self, (bi, hi): (usize, usize)) -> usize {
        self.offset + bi * self.strides[0] + hi * self.strides[1]
    }

    /// Elements between tokens.
    fn row_stride(&self) -> usize {
        self.strides[2]
    }
}

/// v's head (`tk` rows of `hd` from `at`, `rs` apart) as the weight panels of `P · v`: W is `vᵀ`
/// (`[hd, tk]`), so panel `pi` holds, for each key pair `t`, the units
/// `v[2t][c] | v[2t + 1][c] << 16` of its `NR` columns `c` (zero past `hd`, and the high half past
/// an odd `tk`).
fn pack_v(v: &[bf16], (at, rs): (usize, usize), tk: usize, hd: usize, dst: &mut Vec<u32>) {
    let kp = tk.div_ceil(2);
    let panels = hd.div_ceil(NR);
    dst.clear();
    dst.resize(panels * kp * NR, 0);
    for (pi, panel) in dst.chunks_exact_mut(kp * NR).enumerate() {
        let (c0, cols) = (pi * NR, NR.min(hd - pi * NR));
        for (t, units) in panel.chunks_exact_mut(NR).enumerate() {
            let lo = &v[at + 2 * t * rs + c0..][..cols];
            if 2 * t + 1 < tk {
                let hi = &v[at + (2 * t + 1) * rs + c0..][..cols];
                for ((u, l), h) in units.iter_mut().zip(lo).zip(hi) {
                    *u = u32::from(l.to_bits()) | (u32::from(h.to_bits()) << 16);
                }
            } else {
                for (u, l) in units.iter_mut().zip(lo) {
                    *u = u32::from(l.to_bits());
                }
            }
        }
    }
}

/// The attention of `super::attention::run` for [`super::AttentionProducts::Bf16`]; the caller
/// checked shapes, the mask and AVX512_BF16.
pub(super) fn run(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    dtype: DType,
    mask: Option<&Mask>,
    scale: f32,
    want_probs: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, h, tq, hd) = (q.dims()[0], q.dims()[1], q.dims()[2], q.dims()[3]);
    let tk = k.dims()[2];
    let isa = Isa::current();
    let (qb, kb, vb) = (Operand::new(q)?, Operand::new(k)?, Operand::new(v)?);
    let head = |i: usize, o: &mut [f32], p: &mut [f32], s: &mut Scratch| {
        let bh = (i / h, i % h);
        // scores = q kᵀ: k's rows are the GEMM's weight rows.
        let k_rows = WSrc::Rows {
            w: &kb.data[..],
            w_offset: kb.head(bh),
            w_rs: kb.row_stride(),
        };
        let qa = Lhs::Bf16(&qb.data[qb.head(bh)..]);
        gemm_bf16_serial(
            qa,
            qb.row_stride(),
            (tq, tk, hd),
            k_rows,
            GemmOut::set(p, None),
        );
        softmax_scores(isa, p, tk, mask, bh, scale);
        // out = P v with P rounded to bf16.
        s.probs.resize(tq * tk, bf16::ZERO);
        round_into_bf16(p, &mut s.probs);
        pack_v(
            &vb.data,
            (vb.head(bh), vb.row_stride()),
            tk,
            hd,
            &mut s.v_packed,
        );
        let v_panels = WSrc::Packed(&s.v_packed);
        let probs = Lhs::Bf16(&s.probs);
        gemm_bf16_serial(probs, tk, (tq, hd, tk), v_panels, GemmOut::set(o, None));
    };
    run_heads((b, h, tq, tk, hd), want_probs, dtype, head)
}
