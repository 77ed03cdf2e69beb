//! Dot products of an f32 vector with f32 / bf16 / f16 weights, converted to f32 in registers.
//! These are the GEMV (decode) kernels: one weight row per call, memory-bound.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::Isa;

/// Weight element types the GEMV kernels read directly (converted to f32 in registers).
pub(crate) trait DotElem: Copy + Send + Sync + 'static {
    /// `sum_i x[i] * w[i]`; `x.len() == w.len()`.
    fn dot(isa: Isa, x: &[f32], w: &[Self]) -> f32;
    /// Four dot products of `x` with four rows at once (one load of `x` feeds four FMAs).
    fn dot4(isa: Isa, x: &[f32], w: [&[Self]; 4]) -> [f32; 4];
}

macro_rules! impl_dot_elem {
    ($t:ty, $conv:expr, $d512:ident, $d2:ident, $q512:ident, $q2:ident) => {
        impl DotElem for $t {
            #[inline]
            fn dot(isa: Isa, x: &[f32], w: &[$t]) -> f32 {
                assert_eq!(x.len(), w.len(), "dot: length mismatch");
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: `isa` is only ever a level `Isa::is_supported` returned true for, and
                    // the lengths were checked above.
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::$d512(x, w) },
                        Isa::Avx2 => return unsafe { x86::$d2(x, w) },
                        Isa::Scalar => {}
                    }
                }
                let _ = isa;
                scalar_dot(x, w, $conv)
            }

            #[inline]
            fn dot4(isa: Isa, x: &[f32], w: [&[$t]; 4]) -> [f32; 4] {
                assert!(
                    w.iter().all(|r| r.len() == x.len()),
                    "dot4: length mismatch"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: as in `dot`.
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::$q512(x, w) },
                        Isa::Avx2 => return unsafe { x86::$q2(x, w) },
                        Isa::Scalar => {}
                    }
                }
                let _ = isa;
                w.map(|r| scalar_dot(x, r, $conv))
            }
        }
    };
}

impl_dot_elem!(
    f32,
    |s: &[f32], d: &mut [f32]| d.copy_from_slice(s),
    dot_f32_avx512,
    dot_f32_avx2,
    dot4_f32_avx512,
    dot4_f32_avx2
);
impl_dot_elem!(
    bf16,
    |s: &[bf16], d: &mut [f32]| s.convert_to_f32_slice(d),
    dot_bf16_avx512,
    dot_bf16_avx2,
    dot4_bf16_avx512,
    dot4_bf16_avx2
);
impl_dot_elem!(
    f16,
    |s: &[f16], d: &mut [f32]| s.convert_to_f32_slice(d),
    dot_f16_avx512,
    dot_f16_avx2,
    dot4_f16_avx512,
    dot4_f16_avx2
);

/// Portable dot product: converts 64 weights at a time (`half`'s slice conversion, which uses the
/// hardware where it can) and accumulates in 8 independent lanes.
#[inline(always)]
fn scalar_dot<W: Copy>(x: &[f32], w: &[W], conv: impl Fn(&[W], &mut [f32])) -> f32 {
    let mut acc = [0f32; 8];
    let mut buf = [0f32; 64];
    for (xs, ws) in x.chunks(64).zip(w.chunks(64)) {
        let b = &mut buf[..ws.len()];
        conv(ws, b);
        let xc = xs.chunks_exact(8);
        let tail = xc.remainder();
        for (xv, wv) in xc.zip(b.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] += xv[l] * wv[l];
            }
        }
        let done = xs.len() - tail.len();
        for (l, (a, c)) in tail.iter().zip(&b[done..]).enumerate() {
            acc[l] += a * c;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16x16(p: *const bf16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        let raw = unsafe { _mm256_loadu_si256(p as *const __m256i) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn bf16x16_masked(p: *const bf16, m: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are not read.
        let raw = unsafe { _mm256_maskz_loadu_epi16(m, p as *const i16) };
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f16x16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p as *const __m256i) })
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f16x16_masked(p: *const f16, m: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are not read.
        _mm512_cvtph_ps(unsafe { _mm256_maskz_loadu_epi16(m, p as *const i16) })
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f32x16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable elements at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn f32x16_masked(p: *const f32, m: __mmask16) -> __m512 {
        // SAFETY: masked-off lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }

    macro_rules! avx512_dot {
        ($name:ident, $t:ty, $load:ident, $load_masked:ident) => {
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL; `x.len() == w.len()`.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            pub(super) unsafe fn $name(x: &[f32], w: &[$t]) -> f32 {
                let n = x.len().min(w.len());
                let (xp, wp) = (x.as_ptr(), w.as_ptr());
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n` (the tail is masked).
                unsafe {
                    while i + 64 <= n {
                        for (j, a) in acc.iter_mut().enumerate() {
                            let o = i + 16 * j;
                            *a = _mm512_fmadd_ps(f32x16(xp.add(o)), $load(wp.add(o)), *a);
                        }
                        i += 64;
                    }
                    while i + 16 <= n {
                        acc[0] = _mm512_fmadd_ps(f32x16(xp.add(i)), $load(wp.add(i)), acc[0]);
                        i += 16;
                    }
                    if i < n {
                        let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                        acc[1] = _mm512_fmadd_ps(
                            f32x16_masked(xp.add(i), m),
                            $load_masked(wp.add(i), m),
                            acc[1],
                        );
                    }
                }
                let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                _mm512_reduce_add_ps(s)
            }
        };
    }

    macro_rules! avx512_dot4 {
        ($name:ident, $t:ty, $load:ident, $load_masked:ident) => {
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL; every row has `x.len()` elements.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            pub(super) unsafe fn $name(x: &[f32], w: [&[$t]; 4]) -> [f32; 4] {
                let n = x.len();
                let xp = x.as_ptr();
                let wp = w.map(|r| r.as_ptr());
                let mut a0 = [_mm512_setzero_ps(); 4];
                let mut a1 = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n` (the tail is masked).
                unsafe {
                    while i + 32 <= n {
                        let x0 = f32x16(xp.add(i));
                        let x1 = f32x16(xp.add(i + 16));
                        for r in 0..4 {
                            a0[r] = _mm512_fmadd_ps(x0, $load(wp[r].add(i)), a0[r]);
                            a1[r] = _mm512_fmadd_ps(x1, $load(wp[r].add(i + 16)), a1[r]);
                        }
                        i += 32;
                    }
                    if i + 16 <= n {
                        let x0 = f32x16(xp.add(i));
                        for r in 0..4 {
                            a0[r] = _mm512_fmadd_ps(x0, $load(wp[r].add(i)), a0[r]);
                        }
                        i += 16;
                    }
                    if i < n {
                        let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                        let x0 = f32x16_masked(xp.add(i), m);
                        for r in 0..4 {
                            a1[r] = _mm512_fmadd_ps(x0, $load_masked(wp[r].add(i), m), a1[r]);
                        }
                    }
                }
                [0, 1, 2, 3].map(|r| _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r])))
            }
        };
    }

    avx512_dot4!(dot4_f32_avx512, f32, f32x16, f32x16_masked);
    avx512_dot4!(dot4_bf16_avx512, bf16, bf16x16, bf16x16_masked);
    avx512_dot4!(dot4_f16_avx512, f16, f16x16, f16x16_masked);

    avx512_dot!(dot_f32_avx512, f32, f32x16, f32x16_masked);
    avx512_dot!(dot_bf16_avx512, bf16, bf16x16, bf16x16_masked);
    avx512_dot!(dot_f16_avx512, f16, f16x16, f16x16_masked);

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f32x8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bf16x8(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        let raw = unsafe { _mm_loadu_si128(p as *const __m128i) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements at `p`.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    macro_rules! avx2_dot {
        ($name:ident, $t:ty, $load:ident) => {
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C; `x.len() == w.len()`.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name(x: &[f32], w: &[$t]) -> f32 {
                let n = x.len().min(w.len());
                let (xp, wp) = (x.as_ptr(), w.as_ptr());
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n`.
                unsafe {
                    while i + 32 <= n {
                        for (j, a) in acc.iter_mut().enumerate() {
                            let o = i + 8 * j;
                            *a = _mm256_fmadd_ps(f32x8(xp.add(o)), $load(wp.add(o)), *a);
                        }
                        i += 32;
                    }
                    while i + 8 <= n {
                        acc[0] = _mm256_fmadd_ps(f32x8(xp.add(i)), $load(wp.add(i)), acc[0]);
                        i += 8;
                    }
                }
                let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut total = hsum256(s);
                while i < n {
                    total += x[i] * w[i].to_f32_lossless();
                    i += 1;
                }
                total
            }
        };
    }

    trait ToF32 {
        fn to_f32_lossless(self) -> f32;
    }
    impl ToF32 for f32 {
        #[inline(always)]
        fn to_f32_lossless(self) -> f32 {
            self
        }
    }
    impl ToF32 for bf16 {
        #[inline(always)]
        fn to_f32_lossless(self) -> f32 {
            self.to_f32()
        }
    }
    impl ToF32 for f16 {
        #[inline(always)]
        fn to_f32_lossless(self) -> f32 {
            self.to_f32()
        }
    }

    macro_rules! avx2_dot4 {
        ($name:ident, $t:ty, $load:ident) => {
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C; every row has `x.len()` elements.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name(x: &[f32], w: [&[$t]; 4]) -> [f32; 4] {
                let n = x.len();
                let xp = x.as_ptr();
                let wp = w.map(|r| r.as_ptr());
                let mut a0 = [_mm256_setzero_ps(); 4];
                let mut a1 = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n`.
                unsafe {
                    while i + 16 <= n {
                        let x0 = f32x8(xp.add(i));
                        let x1 = f32x8(xp.add(i + 8));
                        for r in 0..4 {
                            a0[r] = _mm256_fmadd_ps(x0, $load(wp[r].add(i)), a0[r]);
                            a1[r] = _mm256_fmadd_ps(x1, $load(wp[r].add(i + 8)), a1[r]);
                        }
                        i += 16;
                    }
                    if i + 8 <= n {
                        let x0 = f32x8(xp.add(i));
                        for r in 0..4 {
                            a0[r] = _mm256_fmadd_ps(x0, $load(wp[r].add(i)), a0[r]);
                        }
                        i += 8;
                    }
                }
                let mut out = [0f32; 4];
                for r in 0..4 {
                    out[r] = hsum256(_mm256_add_ps(a0[r], a1[r]));
                    for j in i..n {
                        out[r] += x[j] * w[r][j].to_f32_lossless();
                    }
                }
                out
            }
        };
    }

    avx2_dot4!(dot4_f32_avx2, f32, f32x8);
    avx2_dot4!(dot4_bf16_avx2, bf16, bf16x8);
    avx2_dot4!(dot4_f16_avx2, f16, f16x8);

    avx2_dot!(dot_f32_avx2, f32, f32x8);
    avx2_dot!(dot_bf16_avx2, bf16, bf16x8);
    avx2_dot!(dot_f16_avx2, f16, f16x8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32]) -> f64 {
        x.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    #[test]
    fn every_path_matches_f64_reference() {
        for isa in Isa::available() {
            for n in [
                0usize, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1000, 1027,
            ] {
                let x: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 % 19) as f32 - 9.0) * 0.13)
                    .collect();
                let w: Vec<f32> = (0..n)
                    .map(|i| ((i * 11 % 23) as f32 - 11.0) * 0.07)
                    .collect();
                let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
                let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                let wbf: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                let whf: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
                let scale: f64 = x
                    .iter()
                    .zip(&w)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum::<f64>()
                    + 1e-30;
                for (got, want) in [
                    (f32::dot(isa, &x, &w), reference(&x, &w)),
                    (bf16::dot(isa, &x, &wb), reference(&x, &wbf)),
                    (f16::dot(isa, &x, &wh), reference(&x, &whf)),
                    (f32::dot4(isa, &x, [&w, &x, &w, &w])[0], reference(&x, &w)),
                    (
                        bf16::dot4(isa, &x, [&wb, &wb, &wb, &wb])[3],
                        reference(&x, &wbf),
                    ),
                    (
                        f16::dot4(isa, &x, [&wh, &wh, &wh, &wh])[2],
                        reference(&x, &whf),
                    ),
                ] {
                    assert!(
                        ((got as f64 - want) / scale).abs() < 1e-6,
                        "{isa} n={n}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
