//! Dot products of f32 vectors with f32 / bf16 / f16 weights, converted to f32 in registers.
//! These are the GEMV (decode) kernels: memory-bound, reading each weight once.
//!
//! **One arithmetic per (x, w) pair.** Every entry point below ([`DotElem::dot`], [`DotElem::dot4`]:
//! one x against four weight rows, [`DotElem::dot_rows`]: up to eight x rows against one weight row)
//! computes each dot product with exactly the same sequence of f32 operations for a given SIMD
//! level (same accumulators, same lanes, same tail handling, same final reduction). A result
//! therefore never depends on which kernel produced it, which is what makes the multi-row GEMV
//! (`ops::gemv::gemv_rows_into`) bitwise identical to the one-row GEMV, row by row.
//!
//! - AVX-512: two accumulators; 32 columns per step (`a0` takes columns `i..i+16`, `a1` takes
//!   `i+16..i+32`), then one 16-column step into `a0`, then a masked tail into `a1`;
//!   result `reduce_add(a0 + a1)`.
//! - AVX2: two accumulators; 16 columns per step (8 each), then one 8-column step into `a0`;
//!   result `hsum(a0 + a1)`, then the `< 8` tail columns added one by one.
//! - Scalar: 8 lanes over chunks of 64 converted weights; fixed pairwise reduction.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::Isa;

/// Weight element types the GEMV kernels read directly (converted to f32 in registers).
pub(crate) trait DotElem: Copy + Send + Sync + 'static {
    /// `sum_i x[i] * w[i]`; `x.len() == w.len()`.
    fn dot(isa: Isa, x: &[f32], w: &[Self]) -> f32;
    /// Four dot products of `x` with four rows at once (one load of `x` feeds four FMAs).
    fn dot4(isa: Isa, x: &[f32], w: [&[Self]; 4]) -> [f32; 4];
    /// `M` dot products of `M` x rows with one weight row (one load and conversion of `w` feeds
    /// `M` FMAs); each result is bitwise equal to `dot(isa, xs[r], w)`.
    fn dot_rows<const M: usize>(isa: Isa, xs: [&[f32]; M], w: &[Self]) -> [f32; M];
    /// `M` x rows against four weight rows (four memory streams, as in `dot4`); result `[q][r]`
    /// is bitwise equal to `dot(isa, xs[r], w[q])`.
    fn dot4_rows<const M: usize>(isa: Isa, xs: [&[f32]; M], w: [&[Self]; 4]) -> [[f32; M]; 4];
}

macro_rules! impl_dot_elem {
    ($t:ty, $conv:expr, $m512:ident, $m2:ident, $q512:ident, $q2:ident, $qm512:ident, $qm2:ident) => {
        impl DotElem for $t {
            #[inline]
            fn dot(isa: Isa, x: &[f32], w: &[$t]) -> f32 {
                Self::dot_rows::<1>(isa, [x], w)[0]
            }

            #[inline]
            fn dot4(isa: Isa, x: &[f32], w: [&[$t]; 4]) -> [f32; 4] {
                assert!(
                    w.iter().all(|r| r.len() == x.len()),
                    "dot4: length mismatch"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: `isa` is only ever a level `Isa::is_supported` returned true for, and
                    // the lengths were checked above.
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::$q512(x, w) },
                        Isa::Avx2 => return unsafe { x86::$q2(x, w) },
                        Isa::Scalar => {}
                    }
                }
                let _ = isa;
                w.map(|r| scalar_dot_rows([x], r, $conv)[0])
            }

            #[inline]
            fn dot_rows<const M: usize>(isa: Isa, xs: [&[f32]; M], w: &[$t]) -> [f32; M] {
                assert!(
                    xs.iter().all(|x| x.len() == w.len()),
                    "dot_rows: length mismatch"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: as in `dot4`.
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::$m512(xs, w) },
                        Isa::Avx2 => return unsafe { x86::$m2(xs, w) },
                        Isa::Scalar => {}
                    }
                }
                let _ = isa;
                scalar_dot_rows(xs, w, $conv)
            }

            #[inline]
            fn dot4_rows<const M: usize>(
                isa: Isa,
                xs: [&[f32]; M],
                w: [&[$t]; 4],
            ) -> [[f32; M]; 4] {
                assert!(
                    xs.iter().all(|x| w.iter().all(|r| r.len() == x.len())),
                    "dot4_rows: length mismatch"
                );
                #[cfg(target_arch = "x86_64")]
                {
                    // SAFETY: as in `dot4`.
                    match isa {
                        Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::$qm512(xs, w) },
                        Isa::Avx2 => return unsafe { x86::$qm2(xs, w) },
                        Isa::Scalar => {}
                    }
                }
                let _ = isa;
                w.map(|r| scalar_dot_rows(xs, r, $conv))
            }
        }
    };
}

impl_dot_elem!(
    f32,
    |s: &[f32], d: &mut [f32]| d.copy_from_slice(s),
    dotm_f32_avx512,
    dotm_f32_avx2,
    dot4_f32_avx512,
    dot4_f32_avx2,
    dot4m_f32_avx512,
    dot4m_f32_avx2
);
impl_dot_elem!(
    bf16,
    |s: &[bf16], d: &mut [f32]| s.convert_to_f32_slice(d),
    dotm_bf16_avx512,
    dotm_bf16_avx2,
    dot4_bf16_avx512,
    dot4_bf16_avx2,
    dot4m_bf16_avx512,
    dot4m_bf16_avx2
);
impl_dot_elem!(
    f16,
    |s: &[f16], d: &mut [f32]| s.convert_to_f32_slice(d),
    dotm_f16_avx512,
    dotm_f16_avx2,
    dot4_f16_avx512,
    dot4_f16_avx2,
    dot4m_f16_avx512,
    dot4m_f16_avx2
);

/// Portable dot products of `M` x rows with one weight row: converts 64 weights at a time
/// (`half`'s slice conversion, which uses the hardware where it can) and accumulates each x row in
/// 8 independent lanes. Each row's sequence of operations does not depend on `M`.
#[inline(always)]
fn scalar_dot_rows<W: Copy, const M: usize>(
    xs: [&[f32]; M],
    w: &[W],
    conv: impl Fn(&[W], &mut [f32]),
) -> [f32; M] {
    let mut acc = [[0f32; 8]; M];
    let mut buf = [0f32; 64];
    for (c, ws) in w.chunks(64).enumerate() {
        let b = &mut buf[..ws.len()];
        conv(ws, b);
        let start = c * 64;
        for (x, acc) in xs.iter().zip(acc.iter_mut()) {
            let xs = &x[start..start + ws.len()];
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
    }
    acc.map(|a| ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])))
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

    macro_rules! avx512_dot4 {
        ($name:ident, $t:ty, $load:ident, $load_masked:ident) => {
            /// One x against four weight rows, with the module's AVX-512 per-pair arithmetic.
            ///
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

    macro_rules! avx512_dotm {
        ($name:ident, $t:ty, $load:ident, $load_masked:ident) => {
            /// `M` x rows against one weight row, with the same per-pair arithmetic as the `dot4`
            /// kernel (so results are bitwise equal to it).
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL; every x row has `w.len()` elements.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            pub(super) unsafe fn $name<const M: usize>(xs: [&[f32]; M], w: &[$t]) -> [f32; M] {
                let n = w.len();
                let wp = w.as_ptr();
                let xp = xs.map(|x| x.as_ptr());
                let mut a0 = [_mm512_setzero_ps(); M];
                let mut a1 = [_mm512_setzero_ps(); M];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n` (the tail is masked).
                unsafe {
                    while i + 32 <= n {
                        let w0 = $load(wp.add(i));
                        let w1 = $load(wp.add(i + 16));
                        for r in 0..M {
                            a0[r] = _mm512_fmadd_ps(f32x16(xp[r].add(i)), w0, a0[r]);
                            a1[r] = _mm512_fmadd_ps(f32x16(xp[r].add(i + 16)), w1, a1[r]);
                        }
                        i += 32;
                    }
                    if i + 16 <= n {
                        let w0 = $load(wp.add(i));
                        for r in 0..M {
                            a0[r] = _mm512_fmadd_ps(f32x16(xp[r].add(i)), w0, a0[r]);
                        }
                        i += 16;
                    }
                    if i < n {
                        let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                        let w0 = $load_masked(wp.add(i), m);
                        for r in 0..M {
                            a1[r] = _mm512_fmadd_ps(f32x16_masked(xp[r].add(i), m), w0, a1[r]);
                        }
                    }
                }
                let mut out = [0f32; M];
                for r in 0..M {
                    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
                }
                out
            }
        };
    }

    macro_rules! avx512_dot4m {
        ($name:ident, $t:ty, $load:ident, $load_masked:ident) => {
            /// `M` x rows against four weight rows, with the same per-pair arithmetic as the
            /// `dot4` kernel (so results are bitwise equal to it).
            ///
            /// # Safety
            /// The CPU must support AVX-512 F/BW/VL; every row has the same length.
            #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
            pub(super) unsafe fn $name<const M: usize>(
                xs: [&[f32]; M],
                w: [&[$t]; 4],
            ) -> [[f32; M]; 4] {
                let n = w[0].len();
                let wp = w.map(|r| r.as_ptr());
                let xp = xs.map(|x| x.as_ptr());
                let mut a0 = [[_mm512_setzero_ps(); M]; 4];
                let mut a1 = [[_mm512_setzero_ps(); M]; 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n` (the tail is masked).
                unsafe {
                    while i + 32 <= n {
                        for q in 0..4 {
                            let w0 = $load(wp[q].add(i));
                            let w1 = $load(wp[q].add(i + 16));
                            for r in 0..M {
                                a0[q][r] = _mm512_fmadd_ps(f32x16(xp[r].add(i)), w0, a0[q][r]);
                                a1[q][r] = _mm512_fmadd_ps(f32x16(xp[r].add(i + 16)), w1, a1[q][r]);
                            }
                        }
                        i += 32;
                    }
                    if i + 16 <= n {
                        for q in 0..4 {
                            let w0 = $load(wp[q].add(i));
                            for r in 0..M {
                                a0[q][r] = _mm512_fmadd_ps(f32x16(xp[r].add(i)), w0, a0[q][r]);
                            }
                        }
                        i += 16;
                    }
                    if i < n {
                        let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                        for q in 0..4 {
                            let w0 = $load_masked(wp[q].add(i), m);
                            for r in 0..M {
                                a1[q][r] =
                                    _mm512_fmadd_ps(f32x16_masked(xp[r].add(i), m), w0, a1[q][r]);
                            }
                        }
                    }
                }
                let mut out = [[0f32; M]; 4];
                for q in 0..4 {
                    for r in 0..M {
                        out[q][r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[q][r], a1[q][r]));
                    }
                }
                out
            }
        };
    }

    avx512_dot4m!(dot4m_f32_avx512, f32, f32x16, f32x16_masked);
    avx512_dot4m!(dot4m_bf16_avx512, bf16, bf16x16, bf16x16_masked);
    avx512_dot4m!(dot4m_f16_avx512, f16, f16x16, f16x16_masked);

    avx512_dot4!(dot4_f32_avx512, f32, f32x16, f32x16_masked);
    avx512_dot4!(dot4_bf16_avx512, bf16, bf16x16, bf16x16_masked);
    avx512_dot4!(dot4_f16_avx512, f16, f16x16, f16x16_masked);

    avx512_dotm!(dotm_f32_avx512, f32, f32x16, f32x16_masked);
    avx512_dotm!(dotm_bf16_avx512, bf16, bf16x16, bf16x16_masked);
    avx512_dotm!(dotm_f16_avx512, f16, f16x16, f16x16_masked);

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
            /// One x against four weight rows, with the module's AVX2 per-pair arithmetic.
            ///
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

    macro_rules! avx2_dotm {
        ($name:ident, $t:ty, $load:ident) => {
            /// `M` x rows against one weight row, with the same per-pair arithmetic as the `dot4`
            /// kernel (so results are bitwise equal to it).
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C; every x row has `w.len()` elements.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name<const M: usize>(xs: [&[f32]; M], w: &[$t]) -> [f32; M] {
                let n = w.len();
                let wp = w.as_ptr();
                let xp = xs.map(|x| x.as_ptr());
                let mut a0 = [_mm256_setzero_ps(); M];
                let mut a1 = [_mm256_setzero_ps(); M];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n`.
                unsafe {
                    while i + 16 <= n {
                        let w0 = $load(wp.add(i));
                        let w1 = $load(wp.add(i + 8));
                        for r in 0..M {
                            a0[r] = _mm256_fmadd_ps(f32x8(xp[r].add(i)), w0, a0[r]);
                            a1[r] = _mm256_fmadd_ps(f32x8(xp[r].add(i + 8)), w1, a1[r]);
                        }
                        i += 16;
                    }
                    if i + 8 <= n {
                        let w0 = $load(wp.add(i));
                        for r in 0..M {
                            a0[r] = _mm256_fmadd_ps(f32x8(xp[r].add(i)), w0, a0[r]);
                        }
                        i += 8;
                    }
                }
                let mut out = [0f32; M];
                for r in 0..M {
                    out[r] = hsum256(_mm256_add_ps(a0[r], a1[r]));
                    for j in i..n {
                        out[r] += xs[r][j] * w[j].to_f32_lossless();
                    }
                }
                out
            }
        };
    }

    macro_rules! avx2_dot4m {
        ($name:ident, $t:ty, $load:ident) => {
            /// `M` x rows against four weight rows, with the same per-pair arithmetic as the
            /// `dot4` kernel (so results are bitwise equal to it).
            ///
            /// # Safety
            /// The CPU must support AVX2, FMA and F16C; every row has the same length.
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(super) unsafe fn $name<const M: usize>(
                xs: [&[f32]; M],
                w: [&[$t]; 4],
            ) -> [[f32; M]; 4] {
                let n = w[0].len();
                let wp = w.map(|r| r.as_ptr());
                let xp = xs.map(|x| x.as_ptr());
                let mut a0 = [[_mm256_setzero_ps(); M]; 4];
                let mut a1 = [[_mm256_setzero_ps(); M]; 4];
                let mut i = 0;
                // SAFETY: every load below stays inside `0..n`.
                unsafe {
                    while i + 16 <= n {
                        for q in 0..4 {
                            let w0 = $load(wp[q].add(i));
                            let w1 = $load(wp[q].add(i + 8));
                            for r in 0..M {
                                a0[q][r] = _mm256_fmadd_ps(f32x8(xp[r].add(i)), w0, a0[q][r]);
                                a1[q][r] = _mm256_fmadd_ps(f32x8(xp[r].add(i + 8)), w1, a1[q][r]);
                            }
                        }
                        i += 16;
                    }
                    if i + 8 <= n {
                        for q in 0..4 {
                            let w0 = $load(wp[q].add(i));
                            for r in 0..M {
                                a0[q][r] = _mm256_fmadd_ps(f32x8(xp[r].add(i)), w0, a0[q][r]);
                            }
                        }
                        i += 8;
                    }
                }
                let mut out = [[0f32; M]; 4];
                for q in 0..4 {
                    for r in 0..M {
                        let mut s = hsum256(_mm256_add_ps(a0[q][r], a1[q][r]));
                        for j in i..n {
                            s += xs[r][j] * w[q][j].to_f32_lossless();
                        }
                        out[q][r] = s;
                    }
                }
                out
            }
        };
    }

    avx2_dot4m!(dot4m_f32_avx2, f32, f32x8);
    avx2_dot4m!(dot4m_bf16_avx2, bf16, bf16x8);
    avx2_dot4m!(dot4m_f16_avx2, f16, f16x8);

    avx2_dot4!(dot4_f32_avx2, f32, f32x8);
    avx2_dot4!(dot4_bf16_avx2, bf16, bf16x8);
    avx2_dot4!(dot4_f16_avx2, f16, f16x8);

    avx2_dotm!(dotm_f32_avx2, f32, f32x8);
    avx2_dotm!(dotm_bf16_avx2, bf16, bf16x8);
    avx2_dotm!(dotm_f16_avx2, f16, f16x8);
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
