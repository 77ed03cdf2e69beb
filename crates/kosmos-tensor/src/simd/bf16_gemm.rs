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
            // Pack: bp[p * NR + j] = (W[n0 + j][2p], W[n0 + j][2p + 1]); columns past `nb`
            // (last panel only) and the high half of an odd `k`'s last pair are zero.
            if nb < NR {
                bp.fill(0);
            }
            // Whole 16-row x 16-pair blocks by an AVX-512 transpose, the rest pair by pair.
            let (jv, pv) = (nb / 16 * 16, k / 2 / 16 * 16);
            for j0 in (0..jv).step_by(16) {
                let rows: [usize; 16] = std::array::from_fn(|j| w_offset + (n0 + j0 + j) * w_rs);
                for p0 in (0..pv).step_by(16) {
                    // SAFETY: AVX-512 support was asserted above; every row holds pairs
                    // `p0..p0 + 16` (`2 * (p0 + 16) <= k` and the bounds assert), and `bp` holds
                    // pairs `p0..p0 + 16` of columns `j0..j0 + 16`.
                    unsafe { x86::transpose16(w, rows, 2 * p0, &mut bp[p0 * NR + j0..]) };
                }
            }
            for j in 0..nb {
                let row = &w[w_offset + (n0 + j) * w_rs..w_offset + (n0 + j) * w_rs + k];
                let first = if j < jv { pv } else { 0 };
                let pairs = row[2 * first..].chunks_exact(2);
                let tail = pairs.remainder();
                for (dst, pair) in bp[first * NR..].chunks_exact_mut(NR).zip(pairs) {
                    dst[j] = u32::from(pair[0].to_bits()) | (u32::from(pair[1].to_bits()) << 16);
                }
                if let [last] = tail {
                    bp[(kp - 1) * NR + j] = u32::from(last.to_bits());
                }
            }
            let mut i = 0;
            while i < m {
                // Every remainder gets its own register block (71 rows = 5 x 12 + 11, not
                // 12s + 8 + 2 + 1): the 1- and 2-row kernels are load-bound.
                let r = (m - i).min(12);
                let a_rows = &ap[i * kp..(i + r) * kp];
                let c = &mut cblock[i * NR..(i + r) * NR];
                // SAFETY: AVX512_BF16 support was asserted above; the slices hold `r` rows of `kp`
                // pairs (A), `kp * NR` pairs (panel) and `r * NR` outputs.
                unsafe {
                    match r {
                        12 => x86::kernel::<12>(a_rows, bp, kp, c),
                        11 => x86::kernel::<11>(a_rows, bp, kp, c),
                        10 => x86::kernel::<10>(a_rows, bp, kp, c),
                        9 => x86::kernel::<9>(a_rows, bp, kp, c),
                        8 => x86::kernel::<8>(a_rows, bp, kp, c),
                        7 => x86::kernel::<7>(a_rows, bp, kp, c),
                        6 => x86::kernel::<6>(a_rows, bp, kp, c),
                        5 => x86::kernel::<5>(a_rows, bp, kp, c),
                        4 => x86::kernel::<4>(a_rows, bp, kp, c),
                        3 => x86::kernel::<3>(a_rows, bp, kp, c),
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

    use half::bf16;

    /// `out[c * 32 + j] = pair c of row j` for 16 rows and 16 bf16 pairs from element `e0`:
    /// a 16 x 16 transpose of `u32` pairs (unpack 32, unpack 64, two 128-bit lane shuffles).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `w[rows[j] + e0..rows[j] + e0 + 32]` must be in bounds for
    /// every `j`, and `out.len() >= 15 * 32 + 16`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(w: &[bf16], rows: [usize; 16], e0: usize, out: &mut [u32]) {
        debug_assert!(out.len() >= 15 * 32 + 16);
        debug_assert!(rows.iter().all(|&r| r + e0 + 32 <= w.len()));
        // SAFETY: the loads read 64 bytes at `rows[j] + e0` (in bounds by the contract).
        let r: [__m512i; 16] = std::array::from_fn(|j| unsafe {
            _mm512_loadu_si512(w.as_ptr().add(rows[j] + e0) as *const _)
        });
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // u[4 * g + e]: element e of each 128-bit lane, rows 4g..4g + 4.
        let mut u = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
            u[4 * g] = _mm512_unpacklo_epi64(a, c);
            u[4 * g + 1] = _mm512_unpackhi_epi64(a, c);
            u[4 * g + 2] = _mm512_unpacklo_epi64(b, d);
            u[4 * g + 3] = _mm512_unpackhi_epi64(b, d);
        }
        for e in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0x88>(u[e], u[4 + e]);
            let w0 = _mm512_shuffle_i32x4::<0xDD>(u[e], u[4 + e]);
            let v1 = _mm512_shuffle_i32x4::<0x88>(u[8 + e], u[12 + e]);
            let w1 = _mm512_shuffle_i32x4::<0xDD>(u[8 + e], u[12 + e]);
            // Column c = 4 * lane + e.
            let cols = [
                (e, _mm512_shuffle_i32x4::<0x88>(v0, v1)),
                (8 + e, _mm512_shuffle_i32x4::<0xDD>(v0, v1)),
                (4 + e, _mm512_shuffle_i32x4::<0x88>(w0, w1)),
                (12 + e, _mm512_shuffle_i32x4::<0xDD>(w0, w1)),
            ];
            for (c, v) in cols {
                // SAFETY: `c * 32 + 16 <= out.len()` by the contract.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(c * 32) as *mut _, v) };
            }
        }
    }

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
