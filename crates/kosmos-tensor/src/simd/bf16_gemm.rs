//! bf16 × bf16 GEMM on AVX512_BF16 (`vdpbf16ps`): `out[m, n] += A[m, k] · W[n, k]ᵀ` with f32 accumulation.
//!
//! Used by `linear` when both the activations and the weights are bf16 (as in a bf16 model run). Each
//! rayon task packs one panel of 32 weight rows as k-pairs (`[k/2][32][2]`, zero-padded) and runs an
//! `R x 32` register-blocked micro-kernel over every activation row. Products of bf16 values are exact
//! in f32, so the result differs from an f32 GEMM on the same (rounded) inputs by summation order only
//! (and `vdpbf16ps` flushes bf16 denormals to zero).

use half::bf16;
use rayon::prelude::*;

/// Output columns per panel (two zmm registers of f32).
const NR: usize = 32;

/// `out[i * n + j] += sum_p a[i * k + p] * w[w_offset + j * w_rs + p]`.
///
/// # Panics
/// If the slices are too short for the given sizes (an internal invariant).
pub(crate) fn gemm_bf16_avx512(
    a: &[bf16],
    (m, n, k): (usize, usize, usize),
    w: &[bf16],
    w_offset: usize,
    w_rs: usize,
    out: &mut [f32],
) {
    assert!(a.len() >= m * k && out.len() >= m * n, "gemm_bf16 bounds");
    assert!(
        n == 0 || k == 0 || w_offset + (n - 1) * w_rs + k <= w.len(),
        "gemm_bf16 bounds"
    );
    assert!(
        crate::simd::Isa::Avx512Bf16.is_supported(),
        "gemm_bf16 needs AVX512_BF16"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    // A as zero-padded k-pairs, one u32 per pair.
    let mut ap = vec![0u32; m * kp];
    for (i, row) in ap.chunks_mut(kp).enumerate() {
        let src = &a[i * k..(i + 1) * k];
        for (p, v) in row.iter_mut().enumerate() {
            let lo = src[2 * p].to_bits() as u32;
            let hi = src.get(2 * p + 1).map_or(0, |h| h.to_bits() as u32);
            *v = lo | (hi << 16);
        }
    }
    let panels = n.div_ceil(NR);
    let mut buf = vec![0f32; panels * m * NR];
    buf.par_chunks_mut(m * NR).enumerate().for_each_init(
        || vec![0u32; kp * NR],
        |bp, (pi, cblock)| {
            let n0 = pi * NR;
            let nb = NR.min(n - n0);
            // Pack: bp[p * NR + j] = (W[n0 + j][2p], W[n0 + j][2p + 1]).
            bp.fill(0);
            for j in 0..nb {
                let row = &w[w_offset + (n0 + j) * w_rs..w_offset + (n0 + j) * w_rs + k];
                for p in 0..kp {
                    let lo = row[2 * p].to_bits() as u32;
                    let hi = row.get(2 * p + 1).map_or(0, |h| h.to_bits() as u32);
                    bp[p * NR + j] = lo | (hi << 16);
                }
            }
            let mut i = 0;
            while i < m {
                let r = match m - i {
                    12.. => 12,
                    8..=11 => 8,
                    4..=7 => 4,
                    2..=3 => 2,
                    _ => 1,
                };
                let a_rows = &ap[i * kp..(i + r) * kp];
                let c = &mut cblock[i * NR..(i + r) * NR];
                // SAFETY: AVX512_BF16 support was asserted above; the slices hold `r` rows of `kp`
                // pairs (A), `kp * NR` pairs (panel) and `r * NR` outputs.
                unsafe {
                    match r {
                        12 => x86::kernel::<12>(a_rows, bp, kp, c),
                        8 => x86::kernel::<8>(a_rows, bp, kp, c),
                        4 => x86::kernel::<4>(a_rows, bp, kp, c),
                        2 => x86::kernel::<2>(a_rows, bp, kp, c),
                        _ => x86::kernel::<1>(a_rows, bp, kp, c),
                    }
                }
                i += r;
            }
        },
    );
    for (pi, cblock) in buf.chunks(m * NR).enumerate() {
        let n0 = pi * NR;
        let nb = NR.min(n - n0);
        for i in 0..m {
            let dst = &mut out[i * n + n0..i * n + n0 + nb];
            for (d, s) in dst.iter_mut().zip(&cblock[i * NR..i * NR + nb]) {
                *d += s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `c[r][0..32] = sum_p A[r][p] · panel[p][0..32]` (pairs), `R` rows at once.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and BF16; `a.len() >= R * kp`, `panel.len() >= kp * 32`,
    /// `c.len() >= R * 32`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn kernel<const R: usize>(
        a: &[u32],
        panel: &[u32],
        kp: usize,
        c: &mut [f32],
    ) {
        debug_assert!(a.len() >= R * kp && panel.len() >= kp * 32 && c.len() >= R * 32);
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let bp = panel.as_ptr();
        let ap = a.as_ptr();
        for p in 0..kp {
            // SAFETY: `p < kp`, so both loads are inside the panel and every A read inside `a`.
            unsafe {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * 32) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * 32 + 16) as *const _));
                for r in 0..R {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*ap.add(r * kp + p) as i32));
                    acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                    acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
                }
            }
        }
        for r in 0..R {
            // SAFETY: `c` holds `R * 32` floats.
            unsafe {
                _mm512_storeu_ps(c.as_mut_ptr().add(r * 32), acc0[r]);
                _mm512_storeu_ps(c.as_mut_ptr().add(r * 32 + 16), acc1[r]);
            }
        }
    }
}
