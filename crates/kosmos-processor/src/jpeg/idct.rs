//! libjpeg-turbo's `jpeg_idct_islow` (`jidctint.c`): the accurate integer IDCT that Pillow's
//! default `dct_method` (`JDCT_ISLOW`) selects. Its SIMD versions give the same bytes.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline(always)]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's post-IDCT range limit (`IDCT_range_limit` with `RANGE_MASK`): values wrap
/// modulo 1024 and then saturate, exactly like the table lookup.
#[inline(always)]
fn range_limit(x: i64) -> u8 {
    let t = (x & 1023) as u32;
    if t < 128 {
        (t + 128) as u8
    } else if t < 512 {
        255
    } else if t < 896 {
        0
    } else {
        (t - 896) as u8
    }
}

/// One 1-D pass of the even/odd butterfly. `v[k]` are the 8 inputs (already dequantised in
/// pass 1); returns the 8 un-descaled outputs in natural order.
#[inline(always)]
fn butterfly(v: [i64; 8]) -> [i64; 8] {
    // Even part.
    let (z2, z3) = (v[2], v[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (v[0] + v[4]) << CONST_BITS;
    let tmp1 = (v[0] - v[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    // Odd part.
    let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Eight lanes of i32: one row (pass 1: lanes are columns) or one column (pass 2).
type V = [i32; 8];

#[inline(always)]
fn add(a: V, b: V) -> V {
    let mut r = [0; 8];
    for i in 0..8 {
        r[i] = a[i].wrapping_add(b[i]);
    }
    r
}

#[inline(always)]
fn sub(a: V, b: V) -> V {
    let mut r = [0; 8];
    for i in 0..8 {
        r[i] = a[i].wrapping_sub(b[i]);
    }
    r
}

#[inline(always)]
fn mulc(a: V, c: i64) -> V {
    let mut r = [0; 8];
    for i in 0..8 {
        r[i] = a[i].wrapping_mul(c as i32);
    }
    r
}

#[inline(always)]
fn shl(a: V, n: u32) -> V {
    let mut r = [0; 8];
    for i in 0..8 {
        r[i] = a[i].wrapping_shl(n);
    }
    r
}

/// The butterfly of [`butterfly`] on 8 lanes at once, in wrapping i32 arithmetic.
///
/// Only `+`, `−` and `×` are involved, so wrapping intermediates still give the exact
/// result whenever the true outputs fit in i32: with every input in ±32767 each output is
/// at most 61214 · 32767 + 2¹⁷ < 2³¹ in magnitude (the sum of the absolute values of the
/// combined constants is 61214), which [`idct_block`] checks before using this path.
#[inline(always)]
fn butterfly8(v: [V; 8]) -> [V; 8] {
    let (z2, z3) = (v[2], v[6]);
    let z1 = mulc(add(z2, z3), FIX_0_541196100);
    let tmp2 = add(z1, mulc(z3, -FIX_1_847759065));
    let tmp3 = add(z1, mulc(z2, FIX_0_765366865));
    let tmp0 = shl(add(v[0], v[4]), CONST_BITS);
    let tmp1 = shl(sub(v[0], v[4]), CONST_BITS);
    let tmp10 = add(tmp0, tmp3);
    let tmp13 = sub(tmp0, tmp3);
    let tmp11 = add(tmp1, tmp2);
    let tmp12 = sub(tmp1, tmp2);
    let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
    let z1 = add(t0, t3);
    let z2 = add(t1, t2);
    let z3 = add(t0, t2);
    let z4 = add(t1, t3);
    let z5 = mulc(add(z3, z4), FIX_1_175875602);
    let t0 = mulc(t0, FIX_0_298631336);
    let t1 = mulc(t1, FIX_2_053119869);
    let t2 = mulc(t2, FIX_3_072711026);
    let t3 = mulc(t3, FIX_1_501321110);
    let z1 = mulc(z1, -FIX_0_899976223);
    let z2 = mulc(z2, -FIX_2_562915447);
    let z3 = add(mulc(z3, -FIX_1_961570560), z5);
    let z4 = add(mulc(z4, -FIX_0_390180644), z5);
    let t0 = add(t0, add(z1, z3));
    let t1 = add(t1, add(z2, z4));
    let t2 = add(t2, add(z2, z3));
    let t3 = add(t3, add(z1, z4));
    [
        add(tmp10, t3),
        add(tmp11, t2),
        add(tmp12, t1),
        add(tmp13, t0),
        sub(tmp13, t0),
        sub(tmp12, t1),
        sub(tmp11, t2),
        sub(tmp10, t3),
    ]
}

#[inline(always)]
fn descale8(a: V, n: u32) -> V {
    let mut r = [0; 8];
    for i in 0..8 {
        r[i] = a[i].wrapping_add(1 << (n - 1)) >> n;
    }
    r
}

/// Inverse DCT of one block, bit-exact with `jpeg_idct_islow`: an 8-lane i32 version when
/// every intermediate provably fits (always for real images), else the i64 reference.
pub(crate) fn idct_block(coef: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    assert!(
        out.len() >= 7 * stride + 8,
        "IDCT output block out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above) and `out` holds the 8×8
        // block (asserted above).
        if unsafe { avx2::idct(coef, quant, out, stride) } {
            return;
        }
        return idct_islow(coef, quant, out, stride);
    }
    if !idct_lanes(coef, quant, out, stride) {
        idct_islow(coef, quant, out, stride);
    }
}

/// The 8-lane IDCT with AVX2 intrinsics: the same operations as [`butterfly8`].
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    #[inline(always)]
    unsafe fn c(x: i64) -> __m256i {
        // SAFETY: the caller guarantees AVX2 (see the function docs).
        unsafe { _mm256_set1_epi32(x as i32) }
    }

    #[inline(always)]
    unsafe fn butterfly(v: [__m256i; 8]) -> [__m256i; 8] {
        // SAFETY: the caller guarantees AVX2 (see the function docs).
        unsafe {
            let (add, sub, mul) = (_mm256_add_epi32, _mm256_sub_epi32, _mm256_mullo_epi32);
            let (z2, z3) = (v[2], v[6]);
            let z1 = mul(add(z2, z3), c(FIX_0_541196100));
            let tmp2 = add(z1, mul(z3, c(-FIX_1_847759065)));
            let tmp3 = add(z1, mul(z2, c(FIX_0_765366865)));
            let tmp0 = _mm256_slli_epi32::<13>(add(v[0], v[4]));
            let tmp1 = _mm256_slli_epi32::<13>(sub(v[0], v[4]));
            let tmp10 = add(tmp0, tmp3);
            let tmp13 = sub(tmp0, tmp3);
            let tmp11 = add(tmp1, tmp2);
            let tmp12 = sub(tmp1, tmp2);
            let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
            let z1 = add(t0, t3);
            let z2 = add(t1, t2);
            let z3 = add(t0, t2);
            let z4 = add(t1, t3);
            let z5 = mul(add(z3, z4), c(FIX_1_175875602));
            let t0 = mul(t0, c(FIX_0_298631336));
            let t1 = mul(t1, c(FIX_2_053119869));
            let t2 = mul(t2, c(FIX_3_072711026));
            let t3 = mul(t3, c(FIX_1_501321110));
            let z1 = mul(z1, c(-FIX_0_899976223));
            let z2 = mul(z2, c(-FIX_2_562915447));
            let z3 = add(mul(z3, c(-FIX_1_961570560)), z5);
            let z4 = add(mul(z4, c(-FIX_0_390180644)), z5);
            let t0 = add(t0, add(z1, z3));
            let t1 = add(t1, add(z2, z4));
            let t2 = add(t2, add(z2, z3));
            let t3 = add(t3, add(z1, z4));
            [
                add(tmp10, t3),
                add(tmp11, t2),
                add(tmp12, t1),
                add(tmp13, t0),
                sub(tmp13, t0),
                sub(tmp12, t1),
                sub(tmp11, t2),
                sub(tmp10, t3),
            ]
        }
    }

    #[inline(always)]
    unsafe fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        // SAFETY: the caller guarantees AVX2 (see the function docs).
        unsafe {
            let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
            let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
            let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
            let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
            let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
            let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
            let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
            let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
            let u0 = _mm256_unpacklo_epi64(t0, t2);
            let u1 = _mm256_unpackhi_epi64(t0, t2);
            let u2 = _mm256_unpacklo_epi64(t1, t3);
            let u3 = _mm256_unpackhi_epi64(t1, t3);
            let u4 = _mm256_unpacklo_epi64(t4, t6);
            let u5 = _mm256_unpackhi_epi64(t4, t6);
            let u6 = _mm256_unpacklo_epi64(t5, t7);
            let u7 = _mm256_unpackhi_epi64(t5, t7);
            [
                _mm256_permute2x128_si256::<0x20>(u0, u4),
                _mm256_permute2x128_si256::<0x20>(u1, u5),
                _mm256_permute2x128_si256::<0x20>(u2, u6),
                _mm256_permute2x128_si256::<0x20>(u3, u7),
                _mm256_permute2x128_si256::<0x31>(u0, u4),
                _mm256_permute2x128_si256::<0x31>(u1, u5),
                _mm256_permute2x128_si256::<0x31>(u2, u6),
                _mm256_permute2x128_si256::<0x31>(u3, u7),
            ]
        }
    }

    /// Returns `false` (writing nothing) when a value leaves the provably exact range.
    ///
    /// # Safety
    /// The CPU must support AVX2 and `out` must hold `7 * stride + 8` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn idct(
        coef: &[i16; 64],
        quant: &[u16; 64],
        out: &mut [u8],
        stride: usize,
    ) -> bool {
        // SAFETY: the caller guarantees AVX2 (see the function docs).
        unsafe {
            let limit = _mm256_set1_epi32(32767);
            let mut v = [_mm256_setzero_si256(); 8];
            let mut too_big = _mm256_setzero_si256();
            for (r, x) in v.iter_mut().enumerate() {
                let cf = _mm256_cvtepi16_epi32(_mm_loadu_si128(coef.as_ptr().add(r * 8).cast()));
                let q = _mm256_cvtepu16_epi32(_mm_loadu_si128(quant.as_ptr().add(r * 8).cast()));
                *x = _mm256_mullo_epi32(cf, q);
                too_big = _mm256_or_si256(too_big, _mm256_cmpgt_epi32(_mm256_abs_epi32(*x), limit));
            }
            if _mm256_movemask_epi8(too_big) != 0 {
                return false;
            }
            let o = butterfly(v);
            let round1 = _mm256_set1_epi32(1 << (CONST_BITS - PASS1_BITS - 1));
            let mut ws = [_mm256_setzero_si256(); 8];
            for (w, x) in ws.iter_mut().zip(o) {
                *w = _mm256_srai_epi32::<11>(_mm256_add_epi32(x, round1));
                too_big = _mm256_or_si256(too_big, _mm256_cmpgt_epi32(_mm256_abs_epi32(*w), limit));
            }
            if _mm256_movemask_epi8(too_big) != 0 {
                return false;
            }
            let o = butterfly(transpose(ws));
            let round2 = _mm256_set1_epi32(1 << (CONST_BITS + PASS1_BITS + 3 - 1));
            let (k128, k1023, k639, k255) = (
                _mm256_set1_epi32(128),
                _mm256_set1_epi32(1023),
                _mm256_set1_epi32(639),
                _mm256_set1_epi32(255),
            );
            let mut px = [_mm256_setzero_si256(); 8];
            for (p, x) in px.iter_mut().zip(o) {
                let d = _mm256_srai_epi32::<18>(_mm256_add_epi32(x, round2));
                // range_limit_i32, lane-wise.
                let u = _mm256_and_si256(_mm256_add_epi32(d, k128), k1023);
                let wrapped = _mm256_cmpgt_epi32(u, k639);
                *p = _mm256_andnot_si256(wrapped, _mm256_min_epi32(u, k255));
            }
            // px[c] holds column c (lanes are rows): transpose back to rows and pack to bytes.
            let rows = transpose(px);
            let gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            for (r, row) in rows.iter().enumerate() {
                let p16 = _mm256_packus_epi32(*row, *row);
                let p8 = _mm256_packus_epi16(p16, p16);
                let p = _mm256_permutevar8x32_epi32(p8, gather);
                _mm_storel_epi64(
                    out.as_mut_ptr().add(r * stride).cast(),
                    _mm256_castsi256_si128(p),
                );
            }
            true
        }
    }
}

/// The 8-lane IDCT; returns `false` (writing nothing) when an input is out of the safe
/// range, so the caller falls back to the i64 version.
#[inline(always)]
fn idct_lanes(coef: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) -> bool {
    const LIMIT: i32 = 32767;
    let mut v = [[0i32; 8]; 8];
    let mut ok = true;
    for r in 0..8 {
        for c in 0..8 {
            let d = i32::from(coef[r * 8 + c]) * i32::from(quant[r * 8 + c]);
            ok &= d.abs() <= LIMIT;
            v[r][c] = d;
        }
    }
    if !ok {
        return false;
    }
    // Pass 1: lanes are columns; each vector is one row of coefficients.
    let o = butterfly8(v);
    // Descale and transpose so that lanes become rows for pass 2.
    let mut t = [[0i32; 8]; 8];
    for r in 0..8 {
        let ws = descale8(o[r], CONST_BITS - PASS1_BITS);
        for c in 0..8 {
            ok &= ws[c].abs() <= LIMIT;
            t[c][r] = ws[c];
        }
    }
    if !ok {
        return false;
    }
    let o = butterfly8(t);
    // px[c][r]: the sample of row r, column c.
    let mut px = [[0u8; 8]; 8];
    for c in 0..8 {
        let d = descale8(o[c], CONST_BITS + PASS1_BITS + 3);
        for r in 0..8 {
            px[c][r] = range_limit_i32(d[r]);
        }
    }
    for r in 0..8 {
        let dst = &mut out[r * stride..r * stride + 8];
        for (c, d) in dst.iter_mut().enumerate() {
            *d = px[c][r];
        }
    }
    true
}

/// [`range_limit`] without a branch per case: `u = (x + 128) mod 1024` is the sample when
/// below 256, saturates to 255 up to 639, and wraps to 0 above.
#[inline(always)]
fn range_limit_i32(x: i32) -> u8 {
    let u = x.wrapping_add(128) & 1023;
    if u >= 640 {
        0
    } else {
        u.min(255) as u8
    }
}

/// Inverse DCT of one block (`coef` in natural order, `quant` in natural order), writing
/// 8 rows of 8 samples at `out[row * stride..]`: the i64 reference, line by line as in C.
pub(crate) fn idct_islow(coef: &[i16; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i64; 64];
    // Pass 1: columns.
    for c in 0..8 {
        let ac_zero = (1..8).all(|r| coef[r * 8 + c] == 0);
        if ac_zero {
            // C: an `int` shifted left; wrap like it on absurd (corrupt) values.
            let dq = (i32::from(coef[c])).wrapping_mul(i32::from(quant[c]));
            let dc = i64::from(dq.wrapping_shl(PASS1_BITS));
            for r in 0..8 {
                ws[r * 8 + c] = dc;
            }
            continue;
        }
        let mut v = [0i64; 8];
        for (r, x) in v.iter_mut().enumerate() {
            *x = i64::from(i32::from(coef[r * 8 + c]).wrapping_mul(i32::from(quant[r * 8 + c])));
        }
        let o = butterfly(v);
        for r in 0..8 {
            // C stores pass-1 results in an `int` workspace.
            ws[r * 8 + c] = i64::from(descale(o[r], CONST_BITS - PASS1_BITS) as i32);
        }
    }
    // Pass 2: rows.
    for r in 0..8 {
        let row = &ws[r * 8..r * 8 + 8];
        let dst = &mut out[r * stride..r * stride + 8];
        if row[1..].iter().all(|&x| x == 0) {
            let v = range_limit(descale(row[0], PASS1_BITS + 3));
            dst.fill(v);
            continue;
        }
        let o = butterfly([
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        ]);
        for (d, x) in dst.iter_mut().zip(o) {
            *d = range_limit(descale(x, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dc_only_block() {
        let mut coef = [0i16; 64];
        coef[0] = 10;
        let quant = [8u16; 64];
        let mut out = [0u8; 64];
        idct_islow(&coef, &quant, &mut out, 8);
        // DC 80 / 8 = 10 above mid-grey.
        assert!(out.iter().all(|&v| v == 138));
    }

    #[test]
    fn lanes_match_reference() {
        // Pseudo-random blocks, including out-of-range ones that take the fallback.
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as i64
        };
        for case in 0..2000 {
            let mut coef = [0i16; 64];
            let mut quant = [1u16; 64];
            let span = [64, 1024, 32768][case % 3];
            for k in 0..64 {
                if next() % 3 == 0 || k == 0 {
                    coef[k] = ((next() % (2 * span)) - span) as i16;
                }
                quant[k] = (1 + next() % if case % 5 == 0 { 255 } else { 16 }) as u16;
            }
            let (mut a, mut b, mut c) = ([0u8; 64], [0u8; 64], [0u8; 64]);
            idct_islow(&coef, &quant, &mut a, 8);
            idct_block(&coef, &quant, &mut b, 8);
            assert_eq!(a, b, "case {case}");
            // The portable 8-lane version, when it accepts the block.
            if idct_lanes(&coef, &quant, &mut c, 8) {
                assert_eq!(a, c, "portable lanes, case {case}");
            }
        }
    }

    #[test]
    fn range_limit_forms_agree() {
        for x in -5000..5000 {
            assert_eq!(range_limit(i64::from(x)), range_limit_i32(x), "{x}");
        }
    }

    #[test]
    fn range_limit_table() {
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(-1), 127);
        assert_eq!(range_limit(400), 255);
        assert_eq!(range_limit(-400), 0);
    }
}
