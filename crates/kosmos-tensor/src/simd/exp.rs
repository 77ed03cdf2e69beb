//! Vectorised `exp` for softmax and quick GELU (Cephes `expf` polynomial: about 1 ulp, max relative
//! error ~1.2e-7). Inputs below -87.34 give 0 (no subnormal results), above 88.38 give +inf, NaN stays
//! NaN. The scalar path uses `f32::exp`.

use super::Isa;

/// `xs[i] = exp(xs[i])`.
pub(crate) fn exp_inplace(isa: Isa, xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `isa` is only ever a level `Isa::is_supported` returned true for.
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => return unsafe { x86::exp_avx512(xs) },
            Isa::Avx2 => return unsafe { x86::exp_avx2(xs) },
            Isa::Scalar => {}
        }
    }
    let _ = isa;
    xs.iter_mut().for_each(|v| *v = v.exp());
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.376_26;

    /// `exp` of 16 lanes (the module's contract).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(crate) fn exp16(x: __m512) -> __m512 {
        let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(LO)), _mm512_set1_ps(HI));
        let fx = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)));
        let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(C1), xc);
        let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(C2), r);
        let z = _mm512_mul_ps(r, r);
        let mut y = _mm512_set1_ps(P[0]);
        for &c in &P[1..] {
            y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(y, z, r), _mm512_set1_ps(1.0));
        let n = _mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127));
        let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(n));
        let res = _mm512_mul_ps(y, pow2);
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(LO));
        let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(HI));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let res = _mm512_mask_mov_ps(res, under, _mm512_setzero_ps());
        let res = _mm512_mask_mov_ps(res, over, _mm512_set1_ps(f32::INFINITY));
        _mm512_mask_mov_ps(res, nan, x)
    }

    /// CLIP's quick GELU of 16 lanes, `v * (1 / (1 + exp(-1.702 v)))`: the operations of
    /// `ops::quick_gelu` (with this `exp`), so bitwise its AVX-512 result.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(crate) fn quick_gelu16(v: __m512) -> __m512 {
        let e = exp16(_mm512_mul_ps(_mm512_set1_ps(-1.702), v));
        let one = _mm512_set1_ps(1.0);
        _mm512_mul_ps(v, _mm512_div_ps(one, _mm512_add_ps(one, e)))
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn exp_avx512(xs: &mut [f32]) {
        let n = xs.len();
        let p = xs.as_mut_ptr();
        let mut i = 0;
        // SAFETY: all accesses are inside `0..n` (the tail is masked).
        unsafe {
            while i + 16 <= n {
                _mm512_storeu_ps(p.add(i), exp16(_mm512_loadu_ps(p.add(i))));
                i += 16;
            }
            if i < n {
                let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
                let v = exp16(_mm512_maskz_loadu_ps(m, p.add(i)));
                _mm512_mask_storeu_ps(p.add(i), m, v);
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(LO)), _mm256_set1_ps(HI));
        let fx = _mm256_round_ps::<0x08>(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)));
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(C1), xc);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(C2), r);
        let z = _mm256_mul_ps(r, r);
        let mut y = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(y, z, r), _mm256_set1_ps(1.0));
        let n = _mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(n));
        let res = _mm256_mul_ps(y, pow2);
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LO));
        let over = _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HI));
        let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        let res = _mm256_blendv_ps(res, _mm256_setzero_ps(), under);
        let res = _mm256_blendv_ps(res, _mm256_set1_ps(f32::INFINITY), over);
        _mm256_blendv_ps(res, x, nan)
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn exp_avx2(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` has exactly 8 elements.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), exp8(_mm256_loadu_ps(c.as_ptr()))) };
        }
        let rem = chunks.into_remainder();
        if !rem.is_empty() {
            let mut buf = [0f32; 8];
            buf[..rem.len()].copy_from_slice(rem);
            // SAFETY: `buf` has 8 elements.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), exp8(_mm256_loadu_ps(buf.as_ptr()))) };
            rem.copy_from_slice(&buf[..rem.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_within_2e7_relative_and_handles_edges() {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0443).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-8,
            -1e-8,
            -87.3,
            -87.4,
            -100.0,
            -1e9,
            88.3,
            88.4,
            1e9,
            f32::NEG_INFINITY,
            f32::INFINITY,
        ]);
        for isa in Isa::available() {
            for len in [xs.len(), 1, 7, 15, 17] {
                let mut got = xs[..len].to_vec();
                exp_inplace(isa, &mut got);
                for (&x, &g) in xs[..len].iter().zip(&got) {
                    let want = (x as f64).exp();
                    if x < -87.34 {
                        assert!(
                            g == 0.0 || (g as f64 - want).abs() < 1e-37,
                            "{isa} exp({x}) = {g}"
                        );
                    } else if x > 88.376 {
                        // SIMD saturates to +inf from 88.38; exp overflows f32 from 88.73.
                        let ok = g == f32::INFINITY || ((g as f64 - want) / want).abs() < 2e-7;
                        assert!(ok, "{isa} exp({x}) = {g}");
                    } else {
                        let rel = ((g as f64 - want) / want).abs();
                        assert!(
                            rel < 2e-7,
                            "{isa} exp({x}) = {g}, want {want} (rel {rel:e})"
                        );
                    }
                }
            }
            let mut nan = vec![f32::NAN; 3];
            exp_inplace(isa, &mut nan);
            assert!(nan.iter().all(|v| v.is_nan()), "{isa}");
        }
    }
}
