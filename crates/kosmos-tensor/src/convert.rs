//! Bulk f32 → bf16 / f16 conversion with SIMD, bit-exact with `half::bf16::from_f32` and
//! `half::f16::from_f32` (round to nearest, ties to even; subnormals kept; NaN stays NaN with the
//! quiet bit set and the top payload bits kept).
//!
//! bf16 uses integer arithmetic (`(x + 0x7fff + lsb) >> 16`, NaN lanes blended with
//! `(x >> 16) | 0x40`), never `vcvtneps2bf16`, which treats subnormal inputs as zero. f16 uses F16C /
//! AVX-512 `vcvtps2ph` with round-to-nearest-even, which is what `half` itself calls on x86-64.
//! The level comes from [`Isa::current`] (runtime detection, `KOSMOS_SIMD`, [`crate::simd::with_isa`]).
//!
//! ```
//! use kosmos_tensor::{bf16, convert};
//! let src = [1.0f32, 1.00390625, f32::INFINITY, -0.0];
//! let mut dst = [bf16::ZERO; 4];
//! convert::f32_to_bf16(&src, &mut dst)?;
//! assert_eq!(dst[1], bf16::from_f32(1.00390625)); // a tie: rounds to even (1.0)
//! assert_eq!(dst[1], bf16::ONE);
//! # Ok::<(), kosmos_tensor::Error>(())
//! ```

use std::mem::MaybeUninit;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::simd::Isa;

/// A 16-bit float format to convert into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HalfFormat {
    /// bfloat16.
    Bf16,
    /// IEEE binary16.
    F16,
}

/// Converts f32 values to bf16 (round to nearest even), on the SIMD level of [`Isa::current`].
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) -> Result<()> {
    check_len("convert::f32_to_bf16", src.len(), dst.len())?;
    round_into_bf16(src, dst);
    Ok(())
}

/// [`f32_to_bf16`] of the first `min(src.len(), dst.len())` values, for internal callers whose
/// lengths match by construction.
pub(crate) fn round_into_bf16(src: &[f32], dst: &mut [bf16]) {
    // SAFETY: `bf16` is `repr(transparent)` over `u16`; an initialised slice is a valid
    // `MaybeUninit` slice of the same length, and only initialised values are written to it.
    let out = unsafe {
        std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<MaybeUninit<u16>>(), dst.len())
    };
    convert_f32_bytes(
        Isa::current(),
        bytemuck::cast_slice(src),
        out,
        HalfFormat::Bf16,
    );
}

/// `src` rounded to bf16 (nearest even) and widened back to f32: the activations a bf16 GEMM
/// multiplies, for the paths that then run an f32 GEMM on them.
pub(crate) fn bf16_rounded(src: &[f32]) -> Vec<f32> {
    let mut b = vec![bf16::ZERO; src.len()];
    round_into_bf16(src, &mut b);
    let mut r = vec![0f32; src.len()];
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(&b[..], &mut r);
    r
}

/// Converts f32 values to f16 (round to nearest even), on the SIMD level of [`Isa::current`].
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) -> Result<()> {
    check_len("convert::f32_to_f16", src.len(), dst.len())?;
    // SAFETY: as in `f32_to_bf16` (`f16` is `repr(transparent)` over `u16`).
    let out = unsafe {
        std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<MaybeUninit<u16>>(), dst.len())
    };
    convert_f32_bytes(
        Isa::current(),
        bytemuck::cast_slice(src),
        out,
        HalfFormat::F16,
    );
    Ok(())
}

fn check_len(op: &'static str, src: usize, dst: usize) -> Result<()> {
    if src != dst {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("source has {src} values, destination {dst}"),
        });
    }
    Ok(())
}

/// Converts `dst.len()` little-endian f32 values read from `src` (any alignment; at least
/// `4 * dst.len()` bytes, extra bytes are ignored) into the bits of `to`, initialising all of `dst`.
pub(crate) fn convert_f32_bytes(
    isa: Isa,
    src: &[u8],
    dst: &mut [MaybeUninit<u16>],
    to: HalfFormat,
) {
    let n = dst.len().min(src.len() / 4);
    let (src, dst) = (&src[..4 * n], &mut dst[..n]);
    let done = simd_prefix(isa, src, dst, to);
    for (d, b) in dst[done..].iter_mut().zip(src[4 * done..].chunks_exact(4)) {
        let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        d.write(match to {
            HalfFormat::Bf16 => bf16::from_f32(v).to_bits(),
            HalfFormat::F16 => f16::from_f32(v).to_bits(),
        });
    }
}

/// Converts the longest prefix the SIMD kernels handle; returns how many values were written.
#[cfg(target_arch = "x86_64")]
fn simd_prefix(isa: Isa, src: &[u8], dst: &mut [MaybeUninit<u16>], to: HalfFormat) -> usize {
    debug_assert_eq!(src.len(), 4 * dst.len());
    let (sp, dp, n) = (src.as_ptr(), dst.as_mut_ptr().cast::<u16>(), dst.len());
    // SAFETY: the level was checked by `Isa` (detection or `with_isa`), so the CPU has the
    // features each kernel enables; the kernels read `4 * m` bytes from `sp` and write `m` values
    // to `dp`, with `m <= n`, and both buffers hold `n` values.
    unsafe {
        match (isa, to) {
            (Isa::Avx512 | Isa::Avx512Bf16, HalfFormat::Bf16) => x86::bf16_avx512(sp, dp, n),
            (Isa::Avx512 | Isa::Avx512Bf16, HalfFormat::F16) => x86::f16_avx512(sp, dp, n),
            (Isa::Avx2, HalfFormat::Bf16) => x86::bf16_avx2(sp, dp, n),
            (Isa::Avx2, HalfFormat::F16) => x86::f16_avx2(sp, dp, n),
            (Isa::Scalar, _) => 0,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn simd_prefix(_: Isa, _: &[u8], _: &mut [MaybeUninit<u16>], _: HalfFormat) -> usize {
    0
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// The bf16 bits (in the low half of each `u32` lane) of 16 f32 given by their bits: nearest
    /// even, NaN quieted, bit-exact with `half::bf16::from_f32`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) fn bf16_bits16(x: __m512i) -> __m512i {
        let hi = _mm512_srli_epi32::<16>(x);
        let lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        let bias = _mm512_set1_epi32(0x7fff);
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(_mm512_add_epi32(x, bias), lsb));
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)))
    }

    /// 16 values per step; returns the count converted (a multiple of 16).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn bf16_avx512(src: *const u8, dst: *mut u16, n: usize) -> usize {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`: 64 bytes readable at `src + 4i`, 16 values writable at `dst + i`.
            unsafe {
                let r = bf16_bits16(_mm512_loadu_si512(src.add(4 * i).cast()));
                _mm256_storeu_si256(dst.add(i).cast(), _mm512_cvtepi32_epi16(r));
            }
            i += 16;
        }
        i
    }

    /// 16 values per step; returns the count converted (a multiple of 16).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn bf16_avx2(src: *const u8, dst: *mut u16, n: usize) -> usize {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn eight(x: __m256i) -> __m256i {
            let hi = _mm256_srli_epi32::<16>(x);
            let lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
            let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(
                _mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)),
                lsb,
            ));
            let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff_ffff));
            let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
            let q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
            _mm256_blendv_epi8(rounded, q, nan)
        }
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`: 64 bytes readable at `src + 4i`, 16 values writable at `dst + i`.
            unsafe {
                let a = eight(_mm256_loadu_si256(src.add(4 * i).cast()));
                let b = eight(_mm256_loadu_si256(src.add(4 * i + 32).cast()));
                // Every lane is <= 0xffff, so the unsigned saturating pack is exact; it interleaves
                // the 128-bit halves, which the permute puts back in order.
                let packed = _mm256_packus_epi32(a, b);
                let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
                _mm256_storeu_si256(dst.add(i).cast(), ordered);
            }
            i += 16;
        }
        i
    }

    /// 16 values per step; returns the count converted (a multiple of 16).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f16_avx512(src: *const u8, dst: *mut u16, n: usize) -> usize {
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: `i + 16 <= n`: 64 bytes readable at `src + 4i`, 16 values writable at `dst + i`.
            unsafe {
                let x = _mm512_loadu_ps(src.add(4 * i).cast());
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                _mm256_storeu_si256(dst.add(i).cast(), h);
            }
            i += 16;
        }
        i
    }

    /// 8 values per step; returns the count converted (a multiple of 8).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn f16_avx2(src: *const u8, dst: *mut u16, n: usize) -> usize {
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`: 32 bytes readable at `src + 4i`, 8 values writable at `dst + i`.
            unsafe {
                let x = _mm256_loadu_ps(src.add(4 * i).cast());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm_storeu_si128(dst.add(i).cast(), h);
            }
            i += 8;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::with_isa;
    use proptest::prelude::*;

    /// Bit patterns where rounding, overflow, NaN and subnormal handling can go wrong.
    fn edge_bits() -> Vec<u32> {
        let mut v = vec![
            0x0000_0000, // +0
            0x8000_0000, // -0
            0x7f80_0000, // +inf
            0xff80_0000, // -inf
            0x7fc0_0000, // canonical quiet NaN
            0xffc0_0000,
            0x7f80_0001, // signalling NaN, low payload only
            0x7fbf_ffff, // signalling NaN, full payload
            0xff80_8000,
            0x7fff_ffff,
            0xffff_ffff,
            0x0000_0001, // smallest f32 subnormal
            0x807f_ffff, // largest negative f32 subnormal
            0x0000_8000, // subnormal exactly at a bf16 tie (rounds to even: 0)
            0x0001_8000, // subnormal tie, odd lsb: rounds up
            0x0080_0000, // smallest normal
            0x7f7f_ffff, // f32::MAX: bf16 rounds to inf
            0x7f7f_7fff, // just below the bf16 overflow tie
            0x7f7f_8000, // bf16 overflow tie (odd lsb): inf
            0x477f_e000, // f16 overflow tie (65520): inf
            0x477f_dfff, // just below: 65504
            0x3380_0000, // 2^-24: smallest f16 subnormal
            0x3300_0000, // 2^-25: f16 tie to 0
            0x3300_0001, // just above: rounds up to 2^-24
            0x387f_e000, // f16 subnormal/normal boundary tie
            0x3f80_8000, // 1 + 2^-8: bf16 tie, even: 1
            0x3f81_8000, // bf16 tie, odd: rounds up
            0x3f80_8001,
            0x3f80_1000, // 1 + 2^-11: f16 tie, even
            0x3f80_3000, // f16 tie, odd
        ];
        // Every exponent with tie / above-tie / below-tie mantissas, both signs.
        for e in 0..=255u32 {
            for m in [
                0u32, 0x7fff, 0x8000, 0x8001, 0x1_8000, 0x1000, 0x3000, 0x7f_ffff,
            ] {
                v.push((e << 23) | m);
                v.push(0x8000_0000 | (e << 23) | m);
            }
        }
        v
    }

    fn check_all_isas(bits: &[u32]) {
        let src: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let want_b: Vec<u16> = src.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        let want_h: Vec<u16> = src.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
        for isa in Isa::available() {
            // Every length 0..=40 exercises the SIMD body and the scalar tail.
            for len in [
                src.len(),
                src.len().min(7),
                src.len().min(17),
                src.len().min(40),
            ] {
                let mut b = vec![bf16::ZERO; len];
                let mut h = vec![f16::ZERO; len];
                with_isa(isa, || {
                    f32_to_bf16(&src[..len], &mut b).unwrap();
                    f32_to_f16(&src[..len], &mut h).unwrap();
                })
                .unwrap();
                for i in 0..len {
                    assert_eq!(b[i].to_bits(), want_b[i], "bf16 {isa} {:#010x}", bits[i]);
                    assert_eq!(h[i].to_bits(), want_h[i], "f16 {isa} {:#010x}", bits[i]);
                }
            }
        }
    }

    #[test]
    fn edge_cases_match_half_on_every_isa() {
        check_all_isas(&edge_bits());
    }

    #[test]
    fn every_high_half_matches_half() {
        // All 65536 top halves with low halves at and around the tie: covers every exponent and
        // sign and every bf16 result, including all NaN payload classes.
        let mut bits = Vec::with_capacity(65536 * 4);
        for hi in 0..=0xffffu32 {
            for lo in [0u32, 0x7fff, 0x8000, 0xc001] {
                bits.push((hi << 16) | lo);
            }
        }
        check_all_isas(&bits);
    }

    #[test]
    fn unaligned_bytes_convert() {
        let vals: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let mut bytes = vec![0u8; 1];
        vals.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        for isa in Isa::available() {
            let mut out = vec![MaybeUninit::new(0u16); vals.len()];
            convert_f32_bytes(isa, &bytes[1..], &mut out, HalfFormat::Bf16);
            for (o, v) in out.iter().zip(&vals) {
                // SAFETY: initialised above.
                assert_eq!(unsafe { o.assume_init() }, bf16::from_f32(*v).to_bits());
            }
        }
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut dst = [bf16::ZERO; 2];
        assert!(matches!(
            f32_to_bf16(&[1.0], &mut dst),
            Err(Error::InvalidArgument { .. })
        ));
        let mut dst = [f16::ZERO; 0];
        assert!(f32_to_f16(&[1.0], &mut dst).is_err());
    }

    /// All 2^32 inputs on every level this CPU has (≈ 15 s per level in release):
    /// `cargo test -p kosmos-tensor --release --lib convert -- --ignored`.
    #[test]
    #[ignore = "exhaustive; run by hand in release"]
    fn exhaustive_on_every_isa() {
        let mut src = vec![0f32; 1 << 16];
        let mut b = vec![bf16::ZERO; 1 << 16];
        let mut h = vec![f16::ZERO; 1 << 16];
        for (isa, hi) in Isa::available()
            .into_iter()
            .flat_map(|isa| (0..=0xffffu32).map(move |hi| (isa, hi)))
        {
            for (lo, x) in src.iter_mut().enumerate() {
                *x = f32::from_bits((hi << 16) | lo as u32);
            }
            with_isa(isa, || {
                f32_to_bf16(&src, &mut b).unwrap();
                f32_to_f16(&src, &mut h).unwrap();
            })
            .unwrap();
            for i in 0..src.len() {
                assert_eq!(
                    b[i].to_bits(),
                    bf16::from_f32(src[i]).to_bits(),
                    "bf16 {isa} {:#010x}",
                    src[i].to_bits()
                );
                assert_eq!(h[i].to_bits(), f16::from_f32(src[i]).to_bits());
            }
        }
    }

    proptest! {
        #[test]
        fn random_bit_patterns_match_half(bits in proptest::collection::vec(any::<u32>(), 0..200)) {
            check_all_isas(&bits);
        }
    }
}
