//! `linear` over a pre-packed bf16 weight ([`PackedBf16`], issue 8).
//!
//! Up to `MAX_GEMV_ROWS` (16) rows (decode) run a GEMV that streams each 32-row panel once per
//! group of up to four x rows, widening the bf16 pairs to f32 in registers; x stays f32 and each
//! output is `bias + Σ_k w·x` accumulated in order of `k` with fused multiply-adds, bitwise the same
//! on every SIMD level and for every row count (batch-invariant). More rows (prefill, image encode)
//! round x to bf16 and run the `vdpbf16ps` panel GEMM on the packed panels (AVX512_BF16: bitwise
//! what the row-major bf16 weight gives, without packing W per call), or elsewhere the GEMV on the
//! rounded x (the same products: bf16 x bf16 is exact in f32).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::gemv::{SharedOut, MAX_GEMV_ROWS};
use crate::ops::{apply_opt, Activation, Out};
use crate::packed::{PackedBf16, PANEL};
use crate::simd::Isa;
use crate::storage::CpuSlice;
use crate::tensor::{check_cpu, Tensor};

/// x rows per pass over a panel (8 accumulators + 4 widened weight vectors + 2 broadcasts).
const GROUP: usize = 4;

/// `x [.., in] · Wᵀ (+ b[out]) -> [.., out]` for a packed bf16 weight; the result has `x`'s dtype.
///
/// ```
/// use kosmos_tensor::{ops, packed::PackedBf16, Device, Tensor};
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2], &Device::Cpu)?;
/// let p = PackedBf16::from_tensor(&w)?;
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.5, 0.5, 0.5], &[3], &Device::Cpu)?;
/// assert_eq!(ops::linear_packed(&x, &p, Some(&b))?.to_vec_f32()?, vec![1.5, 2.5, 3.5]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_packed(x: &Tensor, w: &PackedBf16, b: Option<&Tensor>) -> Result<Tensor> {
    packed_impl(x, w, b, None)
}

/// `act(x · Wᵀ + b)` for a packed bf16 weight: bitwise [`linear_packed`] followed by the
/// standalone activation op, with the activation applied in the GEMM's epilogue on AVX512_BF16
/// (see [`super::linear_act`]).
///
/// ```
/// use kosmos_tensor::{ops, ops::Activation, packed::PackedBf16, Device, Tensor};
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2], &Device::Cpu)?;
/// let p = PackedBf16::from_tensor(&w)?;
/// let x = Tensor::from_vec(vec![1.0, -2.0], &[1, 2], &Device::Cpu)?;
/// let fused = ops::linear_packed_act(&x, &p, None, Activation::QuickGelu)?;
/// let apart = ops::quick_gelu(&ops::linear_packed(&x, &p, None)?)?;
/// assert_eq!(fused.to_vec_f32()?, apart.to_vec_f32()?);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_packed_act(
    x: &Tensor,
    w: &PackedBf16,
    b: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    if x.dtype() != crate::DType::F32 {
        return act.apply(&linear_packed(x, w, b)?);
    }
    packed_impl(x, w, b, Some(act))
}

/// [`linear_packed`] (`act: None`) or [`linear_packed_act`] with f32 activations.
fn packed_impl(
    x: &Tensor,
    w: &PackedBf16,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Tensor> {
    check_cpu("linear_packed", x.device())?;
    let (rows, k) = super::rows_cols("linear_packed", x)?;
    let [n, wk] = w.dims();
    if wk != k {
        return Err(Error::ShapeMismatch {
            op: "linear_packed",
            lhs: x.dims().to_vec(),
            rhs: w.dims().to_vec(),
        });
    }
    let xv = x.f32_cow("linear_packed")?;
    let mut out = Vec::new();
    packed_into(
        &xv,
        w,
        b,
        Out::New {
            out: &mut out,
            rows,
        },
        act,
    )?;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()))
}

/// [`linear_packed`] into a caller's buffer: `x` is `[rows, in]` f32 row-major, `out` is
/// `[rows, out]`. Allocates nothing for up to `MAX_GEMV_ROWS` (16) rows.
pub fn linear_packed_into(
    x: &[f32],
    w: &PackedBf16,
    b: Option<&Tensor>,
    out: &mut [f32],
) -> Result<()> {
    packed_into(x, w, b, Out::Given(out), None)
}

/// [`linear_packed_into`], then `act` (in the GEMM's epilogue on AVX512_BF16).
fn packed_into(
    x: &[f32],
    w: &PackedBf16,
    b: Option<&Tensor>,
    out: Out<'_>,
    act: Option<Activation>,
) -> Result<()> {
    let op = "linear_packed_into";
    let isa = Isa::current();
    let [n, k] = w.dims();
    let rows = match &out {
        Out::Given(o) => super::into_rows(op, x, o, [n, k])?,
        Out::New { rows, .. } => *rows,
    };
    let bias = match b {
        Some(b) => {
            check_cpu(op, b.device())?;
            if b.dims() != [n] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: w.dims().to_vec(),
                    rhs: b.dims().to_vec(),
                });
            }
            Some(b.contiguous_slice().ok_or_else(|| Error::InvalidArgument {
                op,
                msg: "bias is not contiguous".into(),
            })?)
        }
        None => None,
    };
    let gemm = cfg!(target_arch = "x86_64") && rows > MAX_GEMV_ROWS && isa == Isa::Avx512Bf16;
    #[cfg(target_arch = "x86_64")]
    if gemm {
        use crate::simd::panel_gemm::{gemm_bf16_packed_avx512, GemmOut, Lhs};
        let bias = bias.map(super::bias_f32);
        let run = |o: GemmOut<'_>| {
            gemm_bf16_packed_avx512(Lhs::F32(x), (rows, n, k), w.data(), o, act);
        };
        // SAFETY: a `GemmOut` GEMM of `rows x n`.
        unsafe { out.set_by(rows * n, bias.as_deref(), run) };
        return Ok(());
    }
    let out: &mut [f32] = match out {
        Out::Given(o) => o,
        Out::New { out: v, .. } => {
            // The GEMV writes every output itself.
            *v = vec![0f32; rows * n];
            v
        }
    };
    if rows > MAX_GEMV_ROWS {
        // Elsewhere: the same products, on x rounded to bf16.
        let xr = crate::convert::bf16_rounded(x);
        gemv_packed(isa, &xr, rows, w, bias, out);
    } else {
        gemv_packed(isa, x, rows, w, bias, out);
    }
    apply_opt(act, &mut out[..rows * n]);
    Ok(())
}

/// `out[r, j] = (bias[j] +) Σ_k W[j, k] x[r, k]`, accumulated in order of `k` with FMAs from zero
/// and the bias added last, in parallel over panels.
fn gemv_packed(
    isa: Isa,
    x: &[f32],
    rows: usize,
    w: &PackedBf16,
    bias: Option<CpuSlice<'_>>,
    out: &mut [f32],
) {
    let [n, k] = w.dims();
    let kp = k.div_ceil(2);
    let panels = n.div_ceil(PANEL);
    let per_task = (panels / (4 * rayon::current_num_threads())).max(1);
    let tasks = panels.div_ceil(per_task);
    let shared = SharedOut::new(out, n);
    let data = w.data();
    let run = |t: usize| {
        let mut acc = [[0f32; PANEL]; GROUP];
        for pi in t * per_task..((t + 1) * per_task).min(panels) {
            let (n0, nb) = (pi * PANEL, PANEL.min(n - pi * PANEL));
            let panel = &data[pi * kp * PANEL..(pi + 1) * kp * PANEL];
            for r0 in (0..rows).step_by(GROUP) {
                let g = GROUP.min(rows - r0);
                let xg = &x[r0 * k..(r0 + g) * k];
                panel_rows(isa, panel, k, xg, g, &mut acc);
                for (r, acc) in acc.iter().enumerate().take(g) {
                    // SAFETY: this task is the only writer of columns n0..n0 + nb (its panels).
                    let dst = unsafe { shared.columns(r0 + r, n0, nb) };
                    for (j, (d, &a)) in dst.iter_mut().zip(acc).enumerate() {
                        *d = match bias {
                            Some(b) => a + b.get_f32(n0 + j),
                            None => a,
                        };
                    }
                }
            }
        }
    };
    if tasks > 1 && n * k >= 1 << 16 {
        (0..tasks).into_par_iter().for_each(run);
    } else {
        (0..tasks).for_each(run);
    }
}

/// One panel times `g` (≤ `GROUP`) rows of x: `acc[r][j] = Σ_k W[j, k] x[r, k]`.
fn panel_rows(
    isa: Isa,
    panel: &[u32],
    k: usize,
    x: &[f32],
    g: usize,
    acc: &mut [[f32; PANEL]; GROUP],
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: AVX-512 F is supported (`isa` is never above the CPU's level); `panel` holds
        // `kp * 32` pairs and `x` `g` rows of `k`.
        unsafe {
            match g {
                4 => x86::panel_rows::<4>(panel, k, x, acc),
                3 => x86::panel_rows::<3>(panel, k, x, acc),
                2 => x86::panel_rows::<2>(panel, k, x, acc),
                _ => x86::panel_rows::<1>(panel, k, x, acc),
            }
        }
        return;
    }
    let _ = isa;
    for (r, acc) in acc.iter_mut().enumerate().take(g) {
        let xr = &x[r * k..(r + 1) * k];
        *acc = [0.0; PANEL];
        for (p, units) in panel.chunks_exact(PANEL).enumerate() {
            let lo = xr[2 * p];
            let hi = xr.get(2 * p + 1).copied();
            for (a, &u) in acc.iter_mut().zip(units) {
                *a = f32::from_bits(u << 16).mul_add(lo, *a);
                if let Some(hi) = hi {
                    *a = f32::from_bits(u & 0xffff_0000).mul_add(hi, *a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{GROUP, PANEL};

    /// Pairs to prefetch ahead (4 KB): measured 96–121 % of the read probe on the decode shapes
    /// against 95–112 % without (`cargo bench -p kosmos-tensor --bench gemv -- gemv/bf16`).
    const PF: usize = 32;

    /// `acc[r][j] = Σ_k W[j, k] x[r * k + k']` for `R` rows: per pair, the 32 columns' low and
    /// high bf16 widened to f32 (shift / mask) and two FMAs per row, in order of `k`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `panel.len() >= k.div_ceil(2) * 32`, `x.len() >= R * k`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_rows<const R: usize>(
        panel: &[u32],
        k: usize,
        x: &[f32],
        acc: &mut [[f32; PANEL]; GROUP],
    ) {
        debug_assert!(panel.len() >= k.div_ceil(2) * PANEL && x.len() >= R * k);
        let mut a0 = [_mm512_setzero_ps(); R];
        let mut a1 = [_mm512_setzero_ps(); R];
        let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
        let (pp, xp) = (panel.as_ptr(), x.as_ptr());
        let full = k / 2;
        for p in 0..full {
            // SAFETY: pair `p < kp` is inside the panel; elements `2p + 1 < k` inside each row.
            unsafe {
                // A hint (never faults), past the end on the last pairs.
                let ahead = pp.wrapping_add((p + PF) * PANEL) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                let w0 = _mm512_loadu_si512(pp.add(p * PANEL) as *const _);
                let w1 = _mm512_loadu_si512(pp.add(p * PANEL + 16) as *const _);
                let lo0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w0));
                let hi0 = _mm512_castsi512_ps(_mm512_and_si512(w0, hi_mask));
                let lo1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w1));
                let hi1 = _mm512_castsi512_ps(_mm512_and_si512(w1, hi_mask));
                for r in 0..R {
                    let xa = _mm512_set1_ps(*xp.add(r * k + 2 * p));
                    let xb = _mm512_set1_ps(*xp.add(r * k + 2 * p + 1));
                    a0[r] = _mm512_fmadd_ps(lo0, xa, a0[r]);
                    a0[r] = _mm512_fmadd_ps(hi0, xb, a0[r]);
                    a1[r] = _mm512_fmadd_ps(lo1, xa, a1[r]);
                    a1[r] = _mm512_fmadd_ps(hi1, xb, a1[r]);
                }
            }
        }
        if k % 2 == 1 {
            // SAFETY: the last pair (`full < kp`) is inside the panel; element `k - 1` in each row.
            unsafe {
                let w0 = _mm512_loadu_si512(pp.add(full * PANEL) as *const _);
                let w1 = _mm512_loadu_si512(pp.add(full * PANEL + 16) as *const _);
                let lo0 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w0));
                let lo1 = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w1));
                for r in 0..R {
                    let xa = _mm512_set1_ps(*xp.add(r * k + 2 * full));
                    a0[r] = _mm512_fmadd_ps(lo0, xa, a0[r]);
                    a1[r] = _mm512_fmadd_ps(lo1, xa, a1[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: each `acc[r]` holds 32 f32.
            unsafe {
                _mm512_storeu_ps(acc[r].as_mut_ptr(), a0[r]);
                _mm512_storeu_ps(acc[r].as_mut_ptr().add(16), a1[r]);
            }
        }
    }
}
