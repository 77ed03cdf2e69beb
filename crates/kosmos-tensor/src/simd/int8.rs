//! Dot products of an f32 vector with int8 weight rows, widened to f32 in registers
//! (`i8 -> i32 -> f32`, then FMA). These are the int8 GEMV (decode) kernels: one weight row per
//! call, memory-bound. The per-row scale is applied by the caller, so every path computes the
//! same exact products `x[i] * q[i]` and differs only in summation order.

use super::Isa;

/// `sum_i x[i] * q[i]`. Panics if the lengths differ.
#[inline]
pub(crate) fn dot_i8(isa: Isa, x: &[f32], q: &[i8]) -> f32 {
    assert_eq!(x.len(), q.len(), "dot_i8: length mismatch");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` is only ever a level `Isa::is_supported` returned true for, and the
        // lengths were checked above.
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::dotm_avx512([x], q)[0] },
            Isa::Avx2 => return unsafe { x86::dotm_avx2([x], q)[0] },
            Isa::Scalar => {}
        }
    }
    let _ = isa;
    scalar_dot(x, q)
}

/// Four dot products of `x` with four int8 rows (one load of `x` feeds four FMAs).
#[inline]
pub(crate) fn dot4_i8(isa: Isa, x: &[f32], q: [&[i8]; 4]) -> [f32; 4] {
    assert!(
        q.iter().all(|r| r.len() == x.len()),
        "dot4_i8: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `dot_i8`.
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::dotn_avx512(x, q) },
            Isa::Avx2 => return unsafe { x86::dot4_avx2(x, q) },
            Isa::Scalar => {}
        }
    }
    let _ = isa;
    q.map(|r| scalar_dot(x, r))
}

/// Eight dot products of `x` with eight int8 rows; each is bitwise equal to `dot_i8(isa, x, q[r])`.
/// On AVX-512 one load of `x` feeds eight FMAs, which halves the reloads of `x` per weight byte
/// when `x` is too long to stay in L1 (8192 f32 is the whole 32 KiB of it).
#[inline]
pub(crate) fn dot8_i8(isa: Isa, x: &[f32], q: [&[i8]; 8]) -> [f32; 8] {
    assert!(
        q.iter().all(|r| r.len() == x.len()),
        "dot8_i8: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
            // SAFETY: as in `dot_i8`.
            return unsafe { x86::dotn_avx512(x, q) };
        }
    }
    let [a, b, c, d, e, f, g, h] = q;
    let (lo, hi) = (dot4_i8(isa, x, [a, b, c, d]), dot4_i8(isa, x, [e, f, g, h]));
    std::array::from_fn(|r| if r < 4 { lo[r] } else { hi[r - 4] })
}

/// `M` dot products of `M` x rows with one int8 row (one load and widening of `q` feeds `M`
/// FMAs); each result is bitwise equal to `dot_i8(isa, xs[r], q)` and to the matching lane of
/// [`dot4_i8`] (same accumulators, lanes and tail handling per SIMD level).
#[inline]
pub(crate) fn dot_rows_i8<const M: usize>(isa: Isa, xs: [&[f32]; M], q: &[i8]) -> [f32; M] {
    assert!(
        xs.iter().all(|x| x.len() == q.len()),
        "dot_rows_i8: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `dot_i8`.
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::dotm_avx512(xs, q) },
            Isa::Avx2 => return unsafe { x86::dotm_avx2(xs, q) },
            Isa::Scalar => {}
        }
    }
    let _ = isa;
    xs.map(|x| scalar_dot(x, q))
}

/// `M` x rows against four int8 rows (four memory streams); `[q][r]` is bitwise equal to
/// `dot_i8(isa, xs[r], q[q])`.
#[inline]
pub(crate) fn dot4_rows_i8<const M: usize>(
    isa: Isa,
    xs: [&[f32]; M],
    q: [&[i8]; 4],
) -> [[f32; M]; 4] {
    assert!(
        xs.iter().all(|x| q.iter().all(|r| r.len() == x.len())),
        "dot4_rows_i8: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: as in `dot_i8`.
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::dot4m_avx512(xs, q) },
            Isa::Avx2 => return unsafe { x86::dot4m_avx2(xs, q) },
            Isa::Scalar => {}
        }
    }
    let _ = isa;
    q.map(|r| xs.map(|x| scalar_dot(x, r)))
}

/// Portable dot product accumulating in 8 independent lanes.
#[inline(always)]
fn scalar_dot(x: &[f32], q: &[i8]) -> f32 {
    let mut acc = [0f32; 8];
    let xc = x.chunks_exact(8);
    let qc = q.chunks_exact(8);
    let (xt, qt) = (xc.remainder(), qc.remainder());
    for (xv, qv) in xc.zip(qc) {
        for l in 0..8 {
            acc[l] += xv[l] * f32::from(qv[l]);
        }
    }
    for (l, (a, &b)) in xt.iter().zip(qt).enumerate() {
        acc[l] += a * f32::from(b);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 16 int8 at `p` widened to f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn i8x16(p: *const i8) -> __m512 {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        let raw = unsafe { _mm_loadu_si128(p as *const __m128i) };
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw))
    }

    /// The first lanes of `m` of the int8 at `p` widened to f32 (masked-off lanes are zero).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn i8x16_masked(p: *const i8, m: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are not read.
        let raw = unsafe { _mm_maskz_loadu_epi8(m, p) };
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw))
    }

    /// `N` rows at once (4, or 8 for long rows); 32 columns per step with two accumulators per
    /// row. Each row's arithmetic does not depend on `N`.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and every row must have `x.len()` elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dotn_avx512<const N: usize>(x: &[f32], q: [&[i8]; N]) -> [f32; N] {
        let k = x.len();
        let xp = x.as_ptr();
        let qp = q.map(|r| r.as_ptr());
        let mut a = [_mm512_setzero_ps(); N];
        let mut b = [_mm512_setzero_ps(); N];
        let mut i = 0;
        // SAFETY (all loads below): `i + 32 <= k` / `i + 16 <= k` keep the full-width loads in
        // bounds, and the tail load is masked to the `k - i` remaining elements.
        unsafe {
            while i + 32 <= k {
                let x0 = _mm512_loadu_ps(xp.add(i));
                let x1 = _mm512_loadu_ps(xp.add(i + 16));
                for r in 0..N {
                    a[r] = _mm512_fmadd_ps(x0, i8x16(qp[r].add(i)), a[r]);
                    b[r] = _mm512_fmadd_ps(x1, i8x16(qp[r].add(i + 16)), b[r]);
                }
                i += 32;
            }
            if i + 16 <= k {
                let x0 = _mm512_loadu_ps(xp.add(i));
                for r in 0..N {
                    a[r] = _mm512_fmadd_ps(x0, i8x16(qp[r].add(i)), a[r]);
                }
                i += 16;
            }
            if i < k {
                let m: __mmask16 = (1u16 << (k - i)) - 1;
                let x0 = _mm512_maskz_loadu_ps(m, xp.add(i));
                for r in 0..N {
                    a[r] = _mm512_fmadd_ps(x0, i8x16_masked(qp[r].add(i), m), a[r]);
                }
            }
        }
        std::array::from_fn(|r| _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r])))
    }

    /// `M` x rows against one int8 row, with the same per-pair arithmetic as [`dotn_avx512`]
    /// (so results are bitwise equal to it).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and every x row must have `q.len()` elements.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dotm_avx512<const M: usize>(xs: [&[f32]; M], q: &[i8]) -> [f32; M] {
        let k = q.len();
        let qp = q.as_ptr();
        let xp = xs.map(|x| x.as_ptr());
        let mut a = [_mm512_setzero_ps(); M];
        let mut b = [_mm512_setzero_ps(); M];
        let mut i = 0;
        // SAFETY (all loads below): as in `dotn_avx512`.
        unsafe {
            while i + 32 <= k {
                let w0 = i8x16(qp.add(i));
                let w1 = i8x16(qp.add(i + 16));
                for r in 0..M {
                    a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i)), w0, a[r]);
                    b[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i + 16)), w1, b[r]);
                }
                i += 32;
            }
            if i + 16 <= k {
                let w0 = i8x16(qp.add(i));
                for r in 0..M {
                    a[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i)), w0, a[r]);
                }
                i += 16;
            }
            if i < k {
                let m: __mmask16 = (1u16 << (k - i)) - 1;
                let w0 = i8x16_masked(qp.add(i), m);
                for r in 0..M {
                    a[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp[r].add(i)), w0, a[r]);
                }
            }
        }
        let mut out = [0f32; M];
        for r in 0..M {
            out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r]));
        }
        out
    }

    /// 8 int8 at `p` widened to f32.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn i8x8(p: *const i8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at `p`.
        let raw = unsafe { _mm_loadl_epi64(p as *const __m128i) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw))
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Four rows at once; 16 columns per step with two accumulators per row, scalar tail.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and every row must have `x.len()` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4_avx2(x: &[f32], q: [&[i8]; 4]) -> [f32; 4] {
        let k = x.len();
        let xp = x.as_ptr();
        let qp = q.map(|r| r.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads below): `i + 16 <= k` / `i + 8 <= k` keep the loads in bounds.
        unsafe {
            while i + 16 <= k {
                let x0 = _mm256_loadu_ps(xp.add(i));
                let x1 = _mm256_loadu_ps(xp.add(i + 8));
                for r in 0..4 {
                    a[r] = _mm256_fmadd_ps(x0, i8x8(qp[r].add(i)), a[r]);
                    b[r] = _mm256_fmadd_ps(x1, i8x8(qp[r].add(i + 8)), b[r]);
                }
                i += 16;
            }
            if i + 8 <= k {
                let x0 = _mm256_loadu_ps(xp.add(i));
                for r in 0..4 {
                    a[r] = _mm256_fmadd_ps(x0, i8x8(qp[r].add(i)), a[r]);
                }
                i += 8;
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            let mut s = hsum256(_mm256_add_ps(a[r], b[r]));
            for j in i..k {
                s += x[j] * f32::from(q[r][j]);
            }
            out[r] = s;
        }
        out
    }

    /// `M` x rows against one int8 row, with the same per-pair arithmetic as [`dot4_avx2`]
    /// (so results are bitwise equal to it).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and every x row must have `q.len()` elements.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dotm_avx2<const M: usize>(xs: [&[f32]; M], q: &[i8]) -> [f32; M] {
        let k = q.len();
        let qp = q.as_ptr();
        let xp = xs.map(|x| x.as_ptr());
        let mut a = [_mm256_setzero_ps(); M];
        let mut b = [_mm256_setzero_ps(); M];
        let mut i = 0;
        // SAFETY (all loads below): `i + 16 <= k` / `i + 8 <= k` keep the loads in bounds.
        unsafe {
            while i + 16 <= k {
                let w0 = i8x8(qp.add(i));
                let w1 = i8x8(qp.add(i + 8));
                for r in 0..M {
                    a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i)), w0, a[r]);
                    b[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i + 8)), w1, b[r]);
                }
                i += 16;
            }
            if i + 8 <= k {
                let w0 = i8x8(qp.add(i));
                for r in 0..M {
                    a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i)), w0, a[r]);
                }
                i += 8;
            }
        }
        let mut out = [0f32; M];
        for r in 0..M {
            let mut s = hsum256(_mm256_add_ps(a[r], b[r]));
            for j in i..k {
                s += xs[r][j] * f32::from(q[j]);
            }
            out[r] = s;
        }
        out
    }

    /// `M` x rows against four int8 rows, with the same per-pair arithmetic as [`dotn_avx512`].
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and every row must have the same length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dot4m_avx512<const M: usize>(
        xs: [&[f32]; M],
        q: [&[i8]; 4],
    ) -> [[f32; M]; 4] {
        let k = q[0].len();
        let qp = q.map(|r| r.as_ptr());
        let xp = xs.map(|x| x.as_ptr());
        let mut a = [[_mm512_setzero_ps(); M]; 4];
        let mut b = [[_mm512_setzero_ps(); M]; 4];
        let mut i = 0;
        // SAFETY (all loads below): as in `dotn_avx512`.
        unsafe {
            while i + 32 <= k {
                for t in 0..4 {
                    let w0 = i8x16(qp[t].add(i));
                    let w1 = i8x16(qp[t].add(i + 16));
                    for r in 0..M {
                        a[t][r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i)), w0, a[t][r]);
                        b[t][r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i + 16)), w1, b[t][r]);
                    }
                }
                i += 32;
            }
            if i + 16 <= k {
                for t in 0..4 {
                    let w0 = i8x16(qp[t].add(i));
                    for r in 0..M {
                        a[t][r] = _mm512_fmadd_ps(_mm512_loadu_ps(xp[r].add(i)), w0, a[t][r]);
                    }
                }
                i += 16;
            }
            if i < k {
                let m: __mmask16 = (1u16 << (k - i)) - 1;
                for t in 0..4 {
                    let w0 = i8x16_masked(qp[t].add(i), m);
                    for r in 0..M {
                        a[t][r] =
                            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp[r].add(i)), w0, a[t][r]);
                    }
                }
            }
        }
        let mut out = [[0f32; M]; 4];
        for t in 0..4 {
            for r in 0..M {
                out[t][r] = _mm512_reduce_add_ps(_mm512_add_ps(a[t][r], b[t][r]));
            }
        }
        out
    }

    /// `M` x rows against four int8 rows, with the same per-pair arithmetic as [`dot4_avx2`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA, and every row must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4m_avx2<const M: usize>(
        xs: [&[f32]; M],
        q: [&[i8]; 4],
    ) -> [[f32; M]; 4] {
        let k = q[0].len();
        let qp = q.map(|r| r.as_ptr());
        let xp = xs.map(|x| x.as_ptr());
        let mut a = [[_mm256_setzero_ps(); M]; 4];
        let mut b = [[_mm256_setzero_ps(); M]; 4];
        let mut i = 0;
        // SAFETY (all loads below): `i + 16 <= k` / `i + 8 <= k` keep the loads in bounds.
        unsafe {
            while i + 16 <= k {
                for t in 0..4 {
                    let w0 = i8x8(qp[t].add(i));
                    let w1 = i8x8(qp[t].add(i + 8));
                    for r in 0..M {
                        a[t][r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i)), w0, a[t][r]);
                        b[t][r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i + 8)), w1, b[t][r]);
                    }
                }
                i += 16;
            }
            if i + 8 <= k {
                for t in 0..4 {
                    let w0 = i8x8(qp[t].add(i));
                    for r in 0..M {
                        a[t][r] = _mm256_fmadd_ps(_mm256_loadu_ps(xp[r].add(i)), w0, a[t][r]);
                    }
                }
                i += 8;
            }
        }
        let mut out = [[0f32; M]; 4];
        for t in 0..4 {
            for r in 0..M {
                let mut s = hsum256(_mm256_add_ps(a[t][r], b[t][r]));
                for j in i..k {
                    s += xs[r][j] * f32::from(q[t][j]);
                }
                out[t][r] = s;
            }
        }
        out
    }
}
