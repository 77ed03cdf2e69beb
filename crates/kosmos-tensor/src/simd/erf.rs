//! Exact (erf) GELU, `0.5 x (1 + erf(x / √2))`, vectorised (issue 8: the text FFN's activation was
//! 6 % of the bf16 prefill as scalar `libm::erff` calls).
//!
//! The AVX-512 path evaluates `libm::erff` (FreeBSD `s_erff.c`) lane by lane: the same four ranges,
//! the same coefficients and the same sequence of f32 operations (no fused multiply-adds), selected
//! per lane by masks. On `|x| < 1.25` (every GELU input in `|v| < 1.77`) it is bitwise `libm::erff`;
//! above, `erfc` takes two `exp`s, which come from `simd::exp` (≈ 1 ulp) instead of `libm::expf`,
//! so `erfc` may differ by a few of its own ulps, and `erf = 1 - erfc` (`erfc < 0.078` there) by at
//! most one ulp of `erf`, rarely. Other SIMD levels call `libm::erff`.

use super::Isa;

/// `xs[i] = gelu(xs[i])` with `gelu(v) = v * 0.5 * (1 + erf(v * FRAC_1_SQRT_2))`.
pub(crate) fn gelu_erf_inplace(isa: Isa, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: `isa` is only ever a level the CPU supports.
        return unsafe { x86::gelu_avx512(xs) };
    }
    let _ = isa;
    xs.iter_mut().for_each(|v| *v = gelu_scalar(*v));
}

/// The scalar GELU (`libm::erff`).
pub(crate) fn gelu_scalar(v: f32) -> f32 {
    v * 0.5 * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::exp::x86::exp16;

    // `s_erff.c`'s coefficients, by their bit patterns (the decimal forms in the comments).
    const ERX: f32 = f32::from_bits(0x3f58560b); // 8.4506291151e-01
    const EFX8: f32 = f32::from_bits(0x3f8375d4); // 1.0270333290e+00
    const PP: [f32; 5] = [
        f32::from_bits(0x3e0375d4), // 1.2837916613e-01
        f32::from_bits(0xbea66beb), // -3.2504209876e-01
        f32::from_bits(0xbce9528f), // -2.8481749818e-02
        f32::from_bits(0xbbbd1489), // -5.7702702470e-03
        f32::from_bits(0xb7c756b1), // -2.3763017452e-05
    ];
    const QQ: [f32; 5] = [
        f32::from_bits(0x3ecbbbce), // 3.9791721106e-01
        f32::from_bits(0x3d852a63), // 6.5022252500e-02
        f32::from_bits(0x3ba68116), // 5.0813062117e-03
        f32::from_bits(0x390aee49), // 1.3249473704e-04
        f32::from_bits(0xb684e21a), // -3.9602282413e-06
    ];
    const PA: [f32; 7] = [
        f32::from_bits(0xbb1acdc6), // -2.3621185683e-03
        f32::from_bits(0x3ed46805), // 4.1485610604e-01
        f32::from_bits(0xbebe9208), // -3.7220788002e-01
        f32::from_bits(0x3ea2fe54), // 3.1834661961e-01
        f32::from_bits(0xbde31cc2), // -1.1089469492e-01
        f32::from_bits(0x3d1151b3), // 3.5478305072e-02
        f32::from_bits(0xbb0df9c0), // -2.1663755178e-03
    ];
    const QA: [f32; 6] = [
        f32::from_bits(0x3dd9f331), // 1.0642088205e-01
        f32::from_bits(0x3f0a5785), // 5.4039794207e-01
        f32::from_bits(0x3d931ae7), // 7.1828655899e-02
        f32::from_bits(0x3e013307), // 1.2617121637e-01
        f32::from_bits(0x3c5f6e13), // 1.3637083583e-02
        f32::from_bits(0x3c445aa3), // 1.1984500103e-02
    ];
    const RA: [f32; 8] = [
        f32::from_bits(0xbc21a093), // -9.8649440333e-03
        f32::from_bits(0xbf31a0b7), // -6.9385856390e-01
        f32::from_bits(0xc128f022), // -1.0558626175e+01
        f32::from_bits(0xc2798057), // -6.2375331879e+01
        f32::from_bits(0xc322658c), // -1.6239666748e+02
        f32::from_bits(0xc3389ae7), // -1.8460508728e+02
        f32::from_bits(0xc2a2932b), // -8.1287437439e+01
        f32::from_bits(0xc11d077e), // -9.8143291473e+00
    ];
    const SA: [f32; 8] = [
        f32::from_bits(0x419d35ce), // 1.9651271820e+01
        f32::from_bits(0x4309a863), // 1.3765776062e+02
        f32::from_bits(0x43d9486f), // 4.3456588745e+02
        f32::from_bits(0x442158c9), // 6.4538726807e+02
        f32::from_bits(0x43d6810b), // 4.2900814819e+02
        f32::from_bits(0x42d9451f), // 1.0863500214e+02
        f32::from_bits(0x40d23f7c), // 6.5702495575e+00
        f32::from_bits(0xbd777f97), // -6.0424413532e-02
    ];
    const RB: [f32; 7] = [
        f32::from_bits(0xbc21a092), // -9.8649431020e-03
        f32::from_bits(0xbf4c9dd4), // -7.9928326607e-01
        f32::from_bits(0xc18e104b), // -1.7757955551e+01
        f32::from_bits(0xc320a2ea), // -1.6063638306e+02
        f32::from_bits(0xc41f6441), // -6.3756646729e+02
        f32::from_bits(0xc480230b), // -1.0250950928e+03
        f32::from_bits(0xc3f1c275), // -4.8351919556e+02
    ];
    const SB: [f32; 7] = [
        f32::from_bits(0x41f2b459), // 3.0338060379e+01
        f32::from_bits(0x43a2e571), // 3.2579251099e+02
        f32::from_bits(0x44c01759), // 1.5367296143e+03
        f32::from_bits(0x4547fdbb), // 3.1998581543e+03
        f32::from_bits(0x451f90ce), // 2.5530502930e+03
        f32::from_bits(0x43ed43a7), // 4.7452853394e+02
        f32::from_bits(0xc1b38712), // -2.2440952301e+01
    ];

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn set(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    /// `c[0] + z * (c[1] + z * (... + z * c[n-1]))`, innermost first, unfused (as `s_erff.c`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn horner(z: __m512, c: &[f32]) -> __m512 {
        let mut t = set(c[c.len() - 1]);
        for &ci in c[..c.len() - 1].iter().rev() {
            t = _mm512_add_ps(set(ci), _mm512_mul_ps(z, t));
        }
        t
    }

    /// `1 + z * (c[0] + z * (c[1] + ...))`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn horner1(z: __m512, c: &[f32]) -> __m512 {
        _mm512_add_ps(set(1.0), _mm512_mul_ps(z, horner(z, c)))
    }

    /// `|x|`'s bits: the ranges below compare them as integers, as `s_erff.c` does.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn abs_bits(x: __m512) -> __m512i {
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fff_ffff))
    }

    /// The lanes whose `|x|` bits are below `t`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn below(abs_bits: __m512i, t: u32) -> __mmask16 {
        _mm512_cmplt_epi32_mask(abs_bits, _mm512_set1_epi32(t as i32))
    }

    /// `erf(x)` on `|x| < 0.84375`: `x + x * (P(z) / Q(z))`, `z = x * x` (`|x| < 2^-28`:
    /// `0.125 * (8x + EFX8 x)`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn erf_small(x: __m512, abs_bits: __m512i) -> __m512 {
        let z = _mm512_mul_ps(x, x);
        let y = _mm512_div_ps(horner(z, &PP), horner1(z, &QQ));
        let small = _mm512_add_ps(x, _mm512_mul_ps(x, y));
        let tiny = _mm512_mul_ps(
            set(0.125),
            _mm512_add_ps(_mm512_mul_ps(set(8.0), x), _mm512_mul_ps(set(EFX8), x)),
        );
        _mm512_mask_mov_ps(small, below(abs_bits, 0x3180_0000), tiny)
    }

    /// `erfc(|x|)` on `0.84375 <= |x| < 1.25`: `(1 - ERX) - P(s) / Q(s)`, `s = |x| - 1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn erfc_mid(ax: __m512) -> __m512 {
        let s = _mm512_sub_ps(ax, set(1.0));
        let pq = _mm512_div_ps(horner(s, &PA), horner1(s, &QA));
        _mm512_sub_ps(set(1.0 - ERX), pq)
    }

    /// `erfc(|x|)` on `1.25 <= |x| < 6`: `exp(-z z - 0.5625) exp((z - |x|)(z + |x|) + R / S) / |x|`,
    /// `s = 1 / x²`, `z = |x|` with the low 13 bits cleared; R, S by `|x| < 1 / 0.35`. The most
    /// expensive range (two `exp`s, three divisions).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn erfc_far(ax: __m512, abs_bits: __m512i) -> __m512 {
        let s = _mm512_div_ps(set(1.0), _mm512_mul_ps(ax, ax));
        let near = below(abs_bits, 0x4036_db6d);
        let r = _mm512_mask_mov_ps(horner(s, &RB), near, horner(s, &RA));
        let big_s = _mm512_mask_mov_ps(horner1(s, &SB), near, horner1(s, &SA));
        let zz = _mm512_castsi512_ps(_mm512_and_si512(
            abs_bits,
            _mm512_set1_epi32(0xffff_e000u32 as i32),
        ));
        let neg_zz = _mm512_sub_ps(_mm512_setzero_ps(), zz);
        let e1 = exp16(_mm512_sub_ps(_mm512_mul_ps(neg_zz, zz), set(0.5625)));
        let arg = _mm512_add_ps(
            _mm512_mul_ps(_mm512_sub_ps(zz, ax), _mm512_add_ps(zz, ax)),
            _mm512_div_ps(r, big_s),
        );
        _mm512_div_ps(_mm512_mul_ps(e1, exp16(arg)), ax)
    }

    /// `erf(x)` on `|x| >= 0.84375` from `erfc(|x|)`: `1 - erfc` (1 from `|x| >= 6` on, where
    /// `1 - 2^-120` is 1 in f32, so ±inf gives ±1) with `x`'s sign; NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn erf_large(x: __m512, abs_bits: __m512i, erfc: __m512) -> __m512 {
        let sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(i32::MIN));
        let y = _mm512_sub_ps(set(1.0), erfc);
        let y = _mm512_mask_mov_ps(set(1.0), below(abs_bits, 0x40c0_0000), y);
        let signed = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_mov_ps(signed, nan, x)
    }

    /// `libm::erff` of 16 lanes (see the module docs): each lane's range selected by masks (the
    /// reference [`gelu_sorted`] is tested against).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn erf16(x: __m512) -> __m512 {
        let bits = abs_bits(x);
        let ax = _mm512_castsi512_ps(bits);
        let small = erf_small(x, bits);
        // The far range is skipped when no lane is in it (or above it), which leaves every
        // lane's result as it was.
        let mid_or_below = below(bits, 0x3fa0_0000);
        let far = if mid_or_below == u16::MAX {
            _mm512_setzero_ps()
        } else {
            erfc_far(ax, bits)
        };
        let erfc = _mm512_mask_mov_ps(far, mid_or_below, erfc_mid(ax));
        _mm512_mask_mov_ps(erf_large(x, bits, erfc), below(bits, 0x3f58_0000), small)
    }

    /// `gelu` of 16 lanes: `v * 0.5 * (1 + erf(v * FRAC_1_SQRT_2))`, the scalar GELU's operations.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(crate) fn gelu16(v: __m512) -> __m512 {
        gelu_with(v, |x| erf16(x))
    }

    /// `v * 0.5 * (1 + erf(v * FRAC_1_SQRT_2))` with `erf` given.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn gelu_with(v: __m512, erf: impl Fn(__m512) -> __m512) -> __m512 {
        let e = erf(_mm512_mul_ps(v, set(std::f32::consts::FRAC_1_SQRT_2)));
        _mm512_mul_ps(_mm512_mul_ps(v, set(0.5)), _mm512_add_ps(set(1.0), e))
    }

    /// Vectors of 16 lanes [`gelu_sorted`] takes at once: an epilogue tile, 12 rows x 2 halves.
    pub(crate) const SORTED_VECTORS: usize = 24;

    /// The first `n` (≤ 16) lanes.
    #[inline]
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// [`gelu16`] in place of the lanes selected by each `(pointer, mask)` of `vecs` (at most
    /// [`SORTED_VECTORS`]), evaluated range by range: each vector's lanes are compressed into
    /// one buffer per `erff` range (`|x| < 0.84375`, `< 1.25`, the rest), each buffer runs only
    /// its range's formula 16 lanes at a time, and the results are expanded back in place. A
    /// lane's operations are the ones [`gelu16`]'s masks select for it, so every result is
    /// bitwise [`gelu16`]'s; a vector of 16 no longer pays for every range one of its lanes is in
    /// (GELU inputs are mostly in the first range, but most vectors hold a lane of the second).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and POPCNT (`Isa::Avx512`); each pointer must be
    /// valid for reads and writes of its masked lanes, no two vectors may overlap, and no other
    /// thread may access them.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
    pub(crate) unsafe fn gelu_sorted(vecs: &[(*mut f32, __mmask16)]) {
        const CAP: usize = SORTED_VECTORS * 16 + 16;
        assert!(
            vecs.len() <= SORTED_VECTORS,
            "gelu_sorted: too many vectors"
        );
        // Written before read: each compressed store writes 16 lanes from its buffer's count.
        let mut bufs = [[std::mem::MaybeUninit::<f32>::uninit(); CAP]; 3];
        let mut masks = [[0 as __mmask16; 3]; SORTED_VECTORS];
        let mut counts = [0usize; 3];
        for (&(p, m), vm) in vecs.iter().zip(&mut masks) {
            // SAFETY: the masked lanes of `p` are valid (the contract).
            let v = unsafe { _mm512_maskz_loadu_ps(m, p) };
            let bits = abs_bits(_mm512_mul_ps(v, set(std::f32::consts::FRAC_1_SQRT_2)));
            let small = m & below(bits, 0x3f58_0000);
            let mid = m & !small & below(bits, 0x3fa0_0000);
            *vm = [small, mid, m & !small & !mid];
            for ((buf, count), &cm) in bufs.iter_mut().zip(&mut counts).zip(vm.iter()) {
                // SAFETY: `count <= 16 * (vectors so far)`, so the 16 lanes fit in `CAP`.
                unsafe {
                    let dst = buf.as_mut_ptr().add(*count).cast::<f32>();
                    _mm512_storeu_ps(dst, _mm512_maskz_compress_ps(cm, v));
                }
                *count += cm.count_ones() as usize;
            }
        }
        for (range, (buf, &count)) in bufs.iter_mut().zip(&counts).enumerate() {
            let p = buf.as_mut_ptr().cast::<f32>();
            for i in (0..count).step_by(16) {
                // SAFETY: lanes `i..count` were written above; the store stays inside `CAP`.
                unsafe {
                    let v = _mm512_maskz_loadu_ps(first((count - i).min(16)), p.add(i));
                    let g = match range {
                        0 => gelu_with(v, |x| erf_small(x, abs_bits(x))),
                        1 => gelu_with(v, |x| {
                            let bits = abs_bits(x);
                            erf_large(x, bits, erfc_mid(_mm512_castsi512_ps(bits)))
                        }),
                        _ => gelu_with(v, |x| {
                            let bits = abs_bits(x);
                            erf_large(x, bits, erfc_far(_mm512_castsi512_ps(bits), bits))
                        }),
                    };
                    _mm512_storeu_ps(p.add(i), g);
                }
            }
        }
        let mut taken = [0usize; 3];
        for (&(p, m), vm) in vecs.iter().zip(&masks) {
            let mut g = _mm512_setzero_ps();
            for ((buf, at), &cm) in bufs.iter().zip(&mut taken).zip(vm.iter()) {
                let n = cm.count_ones() as usize;
                // SAFETY: lanes `at..at + n` of the buffer hold this vector's results.
                let src = unsafe { _mm512_maskz_loadu_ps(first(n), buf.as_ptr().add(*at).cast()) };
                g = _mm512_mask_expand_ps(g, cm, src);
                *at += n;
            }
            // SAFETY: the masked lanes of `p` are valid (the contract).
            unsafe { _mm512_mask_storeu_ps(p, m, g) };
        }
    }

    /// Applies the 16-lane function `$f` to the slice `$xs` in place (the tail masked); used
    /// inside a function with the same target features as `$f`.
    #[cfg(test)]
    macro_rules! map16 {
        ($xs:expr, $f:ident) => {{
            let xs: &mut [f32] = $xs;
            let n = xs.len();
            let p = xs.as_mut_ptr();
            let mut i = 0;
            // SAFETY: all accesses are inside `0..n` (the tail is masked).
            unsafe {
                while i + 16 <= n {
                    _mm512_storeu_ps(p.add(i), $f(_mm512_loadu_ps(p.add(i))));
                    i += 16;
                }
                if i < n {
                    let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                    let v = $f(_mm512_maskz_loadu_ps(m, p.add(i)));
                    _mm512_mask_storeu_ps(p.add(i), m, v);
                }
            }
        }};
    }

    /// `erf` in place (for the tests against `libm::erff`).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn erf_avx512(xs: &mut [f32]) {
        map16!(xs, erf16)
    }

    /// [`gelu16`] in place, vector by vector (the tests' reference).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn gelu_masked_avx512(xs: &mut [f32]) {
        map16!(xs, gelu16)
    }

    /// GELU in place ([`gelu_sorted`], 24 vectors at a time).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn gelu_avx512(xs: &mut [f32]) {
        let mut vecs = [(std::ptr::null_mut(), 0); SORTED_VECTORS];
        for chunk in xs.chunks_mut(SORTED_VECTORS * 16) {
            let p = chunk.as_mut_ptr();
            let mut n = 0;
            for (i, v) in (0..chunk.len()).step_by(16).zip(&mut vecs) {
                *v = (p.wrapping_add(i), first((chunk.len() - i).min(16)));
                n += 1;
            }
            // SAFETY: AVX-512 (the contract); the vectors are disjoint lanes of `chunk`.
            unsafe { gelu_sorted(&vecs[..n]) };
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Distance in ulps between two finite f32 of the same sign (or both zero).
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// A sweep of every range of `erff` (both signs, around each boundary, the tiny and huge
    /// ends) and the special values.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (0..200_000).map(|i| -8.0 + i as f32 * 8e-5).collect();
        for b in [0.84375f32, 1.25, 1.0 / 0.35, 6.0, 2f32.powi(-28)] {
            let mut x = b;
            for _ in 0..64 {
                v.extend([x, -x]);
                x = f32::from_bits(x.to_bits() - 1);
            }
        }
        v.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        v.extend([f32::MIN_POSITIVE, 3.0 / std::f32::consts::SQRT_2, 100.0]);
        v
    }

    #[test]
    fn erf_matches_libm() {
        if !Isa::Avx512.is_supported() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let xs = inputs();
        let mut got = xs.clone();
        // SAFETY: AVX-512 support was just checked.
        unsafe { x86::erf_avx512(&mut got) };
        let mut off = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = libm::erff(x);
            if x.abs() < 1.25 || x.abs() >= 6.0 {
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "erf({x:e}): {g:e} vs libm {want:e}"
                );
            } else {
                assert!(ulps(g, want) <= 1, "erf({x:e}): {g:e} vs libm {want:e}");
                off += usize::from(g != want);
            }
        }
        // The exp-based range is almost always bitwise too (a few rounding ties at most).
        assert!(off * 1000 < xs.len(), "{off} of {} differ", xs.len());
        let mut nan = [f32::NAN; 3];
        // SAFETY: as above.
        unsafe { x86::erf_avx512(&mut nan) };
        assert!(nan.iter().all(|v| v.is_nan()));
    }

    /// The range-sorted GELU ([`x86::gelu_sorted`]: the GEMM epilogue's and the standalone op's)
    /// is bitwise the masked one on every lane it selects and leaves the other lanes alone: the
    /// sweep (every range, specials, NaN) shuffled so that vectors mix ranges, in batches of 1 to
    /// 24 vectors with random masks; and `gelu_erf_inplace` over the whole sweep.
    #[test]
    fn sorted_gelu_is_bitwise_the_masked_one() {
        if !Isa::Avx512.is_supported() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let mut xs = inputs();
        xs.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7fa0_0001)]);
        let mut rnd = crate::simd::xorshift(0x9e37_79b9_7f4a_7c15);
        for i in (1..xs.len()).rev() {
            xs.swap(i, (rnd() % (i as u64 + 1)) as usize);
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let mut want = xs.clone();
        // SAFETY: AVX-512 support was just checked.
        unsafe { x86::gelu_masked_avx512(&mut want) };

        let mut whole = xs.clone();
        gelu_erf_inplace(Isa::Avx512, &mut whole);
        assert_eq!(bits(&whole), bits(&want), "gelu_erf_inplace");

        let (mut got, mut expected) = (xs.clone(), xs.clone());
        let base = got.as_mut_ptr();
        let mut i = 0;
        while i + 16 <= xs.len() {
            let mut vecs = Vec::new();
            for _ in 0..rnd() % x86::SORTED_VECTORS as u64 + 1 {
                if i + 16 > xs.len() {
                    break;
                }
                let m = rnd() as u16;
                vecs.push((base.wrapping_add(i), m));
                for l in (0..16).filter(|l| m >> l & 1 == 1) {
                    expected[i + l] = want[i + l];
                }
                i += 16;
            }
            // SAFETY: AVX-512; the vectors are disjoint 16-lane runs of `got`.
            unsafe { x86::gelu_sorted(&vecs) };
        }
        assert_eq!(bits(&got), bits(&expected), "gelu_sorted");
    }

    #[test]
    fn gelu_matches_scalar() {
        let xs = inputs();
        for isa in Isa::available() {
            let mut got = xs.clone();
            gelu_erf_inplace(isa, &mut got);
            for (&x, &g) in xs.iter().zip(&got) {
                let want = gelu_scalar(x);
                // One ulp of erf (2^-24 below 1) moves gelu by |x| / 2 * 2^-24 (absolute: it
                // cancels in 1 + erf for negative x), plus the final roundings.
                let bound = x.abs() * 2f32.powi(-25) + 2.0 * f32::EPSILON * want.abs();
                let close = g == want || (g - want).abs() <= bound;
                assert!(
                    close || (g.is_nan() && want.is_nan()),
                    "{isa} gelu({x:e}): {g:e} vs {want:e}"
                );
            }
        }
    }
}
