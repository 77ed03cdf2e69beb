//! Unit tests of the panel GEMM's packing.

use half::bf16;

use super::{pack_rows, Bf16Pairs, F32ToBf16Pairs};
use crate::simd::Isa;

/// f32 activations packed with their rounding in the transpose's loads are bitwise the rows
/// rounded by `half::bf16::from_f32` first and then packed as bf16: rounding ties both ways,
/// values that round up into the next binade and to infinity, NaNs (quieted), infinities,
/// subnormals and signed zeros, for 1–12 rows, with and without whole 16-unit groups, odd `k`,
/// and a row stride larger than `k`.
#[test]
fn rounding_while_packing_is_bitwise_rounding_first() {
    if !Isa::Avx512Bf16.is_supported() {
        eprintln!("skipped: the packing runs with the AVX512_BF16 GEMM only");
        return;
    }
    let specials = [
        f32::from_bits(0x3f80_8000), // a tie, even below: rounds down
        f32::from_bits(0x3f81_8000), // a tie, odd below: rounds up
        f32::from_bits(0x3f80_8001),
        f32::from_bits(0x3fff_ffff), // rounds up into the next binade
        f32::MAX,                    // rounds to infinity
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // a signalling NaN, quieted
        f32::from_bits(0xffc0_1234),
        f32::from_bits(0x0000_8000), // a subnormal tie
        f32::from_bits(0x0001_7fff),
        f32::MIN_POSITIVE,
        0.0,
        -0.0,
    ];
    let mut next = crate::simd::xorshift(0x2545_f491_4f6c_dd1d);
    for (r, k, lda) in [
        (12, 64, 64),
        (12, 67, 70),
        (5, 1030, 1030),
        (1, 33, 40),
        (11, 31, 31),
    ] {
        let src: Vec<f32> = (0..(r - 1) * lda + k)
            .map(|i| match next() % 4 {
                0 => specials[i % specials.len()],
                1 => f32::from_bits(next() as u32),
                _ => (next() % 20_000) as f32 / 1000.0 - 10.0,
            })
            .collect();
        let rounded: Vec<bf16> = src.iter().map(|&v| bf16::from_f32(v)).collect();
        let kp = k.div_ceil(2);
        let (mut got, mut want) = (vec![0u32; r * kp], vec![0u32; r * kp]);
        pack_rows::<F32ToBf16Pairs>(&src, |rr| rr * lda, (r, k), &mut got);
        pack_rows::<Bf16Pairs>(&rounded, |rr| rr * lda, (r, k), &mut want);
        assert_eq!(got, want, "r={r} k={k} lda={lda}");
    }
}
