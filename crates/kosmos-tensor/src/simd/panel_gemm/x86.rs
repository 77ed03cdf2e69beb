//! The AVX-512 side of the panel GEMMs: the `R x 32` micro-kernels (`vdpbf16ps`, `vfmadd231ps`)
//! with their tile epilogue, the 16 x 16 transpose that packs weight panels, and prefetch.

use std::arch::x86_64::*;

use crate::ops::Activation;
use crate::simd::erf::x86::{gelu_sorted, SORTED_VECTORS};
use crate::simd::exp::x86::quick_gelu16;

/// `out[c * stride + j] = unit c of row j` for 16 rows and the 16 `u32` units from element `e0`,
/// for the rows `j` set in `mask`: a 16 x 16 transpose of `u32` (unpack 32, unpack 64, two 128-bit
/// lane shuffles). `load`: `Units` reads 64 bytes per row (bf16 pairs or f32 values), `I8ToBf16`
/// 32 int8 values, converted to bf16 pairs, `F32ToBf16` 32 f32 values, rounded to bf16 pairs. W panels use stride 32 and all 16 rows; A's
/// micro-panels stride `r` and the first `r` rows. Each column goes out as a whole vector where 16
/// lanes fit in `out` and either the mask is full or `stride < 16` (with masked stores the
/// transpose took 2.2 % of a bf16 prefill profile, with whole ones 0.5 %). Below 16, a column's
/// lanes past `stride` land on later elements of `out`, which the caller must write afterwards
/// (later columns here, in column order; later units of the block in `pack_rows`).
///
/// # Safety
/// The CPU must support AVX-512 F/BW; the 64 (`Units`), 32 (`I8ToBf16`, `T = i8`) or 128
/// (`F32ToBf16`, `T = f32`) bytes from `w[rows[j] + e0]` must be inside `w` for every `j`, and `out.len() >= 15 * stride + 16` (or
/// `15 * stride + r` with the first `r` rows masked).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn transpose16<T>(
    w: &[T],
    rows: [usize; 16],
    e0: usize,
    load: super::RowLoad,
    (out, stride, mask): (&mut [u32], usize, u16),
) {
    let bytes = match load {
        super::RowLoad::Units => 64,
        super::RowLoad::I8ToBf16 => 32,
        super::RowLoad::F32ToBf16 => 128,
    };
    debug_assert!(out.len() >= 15 * stride + (16 - mask.leading_zeros() as usize));
    debug_assert!(bytes == 64 || size_of::<T>() == bytes / 32);
    debug_assert!(rows
        .iter()
        .all(|&r| (r + e0) * size_of::<T>() + bytes <= std::mem::size_of_val(w)));
    // SAFETY: the loads read `bytes` bytes at `rows[j] + e0` (in bounds by the contract).
    let r: [__m512i; 16] = std::array::from_fn(|j| unsafe {
        let at = w.as_ptr().add(rows[j] + e0);
        match load {
            super::RowLoad::Units => _mm512_loadu_si512(at as *const _),
            super::RowLoad::I8ToBf16 => i8x32_to_bf16(at as *const i8),
            super::RowLoad::F32ToBf16 => f32x32_to_bf16(at as *const f32),
        }
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
    let mut all = [_mm512_setzero_si512(); 16];
    for e in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x88>(u[e], u[4 + e]);
        let w0 = _mm512_shuffle_i32x4::<0xDD>(u[e], u[4 + e]);
        let v1 = _mm512_shuffle_i32x4::<0x88>(u[8 + e], u[12 + e]);
        let w1 = _mm512_shuffle_i32x4::<0xDD>(u[8 + e], u[12 + e]);
        // Column c = 4 * lane + e.
        all[e] = _mm512_shuffle_i32x4::<0x88>(v0, v1);
        all[8 + e] = _mm512_shuffle_i32x4::<0xDD>(v0, v1);
        all[4 + e] = _mm512_shuffle_i32x4::<0x88>(w0, w1);
        all[12 + e] = _mm512_shuffle_i32x4::<0xDD>(w0, w1);
    }
    let p = out.as_mut_ptr();
    for (c, v) in all.into_iter().enumerate() {
        let at = c * stride;
        // SAFETY: a whole store is inside `out` (checked); a masked one writes the masked lanes,
        // inside `out` by the contract.
        unsafe {
            if at + 16 <= out.len() && (stride < 16 || mask == u16::MAX) {
                _mm512_storeu_si512(p.add(at).cast(), v);
            } else {
                _mm512_mask_storeu_epi32(p.add(at).cast(), mask, v);
            }
        }
    }
}

/// The 32 f32 values at `p` rounded to bf16 (`convert`'s rounding, bit-exact with
/// `half::bf16::from_f32`), in order: 16 bf16 pairs.
///
/// # Safety
/// The CPU must support AVX-512 F/BW; `p..p + 32` must be readable.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn f32x32_to_bf16(p: *const f32) -> __m512i {
    let half = |off: usize| {
        // SAFETY: `p + off..p + off + 16` is inside the contract's 32 values.
        let x = unsafe { _mm512_loadu_si512(p.add(off).cast()) };
        _mm512_cvtepi32_epi16(crate::convert::x86::bf16_bits16(x))
    };
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half(0)), half(16))
}

/// The 32 int8 values at `p` as 32 bf16 (exact), in order: 16 bf16 pairs.
///
/// # Safety
/// The CPU must support AVX-512 F; `p..p + 32` must be readable.
#[target_feature(enable = "avx512f")]
unsafe fn i8x32_to_bf16(p: *const i8) -> __m512i {
    // i8 -> i32 -> f32 (exact) -> the f32's top 16 bits (its exact bf16) -> u16.
    let half = |off: usize| {
        // SAFETY: `p + off..p + off + 16` is inside the contract's 32 bytes.
        let v = _mm512_cvtepi8_epi32(unsafe { _mm_loadu_si128(p.add(off) as *const __m128i) });
        let bits = _mm512_srli_epi32::<16>(_mm512_castps_si512(_mm512_cvtepi32_ps(v)));
        _mm512_cvtepi32_epi16(bits)
    };
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half(0)), half(16))
}

/// Prefetches the cache lines of `v` towards L2 (a hint: never faults, no effect on results).
pub(super) fn prefetch_l2<T>(v: &[T]) {
    for off in (0..v.len()).step_by((64 / size_of::<T>()).max(1)) {
        // SAFETY: prefetch is a hint that never faults; the address is inside `v`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(v.as_ptr().add(off) as *const i8) };
    }
}

/// `match r { 12 => kernel::<12>(..), .., _ => kernel::<1>(..) }` for a micro-kernel.
macro_rules! dispatch {
    ($name:ident, $kernel:ident) => {
        /// The micro-kernel for `r` rows (1..=12).
        ///
        /// # Safety
        /// As the kernel with `R = r`.
        pub(super) unsafe fn $name(
            r: usize,
            a: &[u32],
            panel: &[u32],
            kc: usize,
            c: *mut f32,
            ldc: usize,
            m: super::TileOut,
        ) {
            // SAFETY: forwarded contract.
            unsafe {
                match r {
                    12 => $kernel::<12>(a, panel, kc, c, ldc, m),
                    11 => $kernel::<11>(a, panel, kc, c, ldc, m),
                    10 => $kernel::<10>(a, panel, kc, c, ldc, m),
                    9 => $kernel::<9>(a, panel, kc, c, ldc, m),
                    8 => $kernel::<8>(a, panel, kc, c, ldc, m),
                    7 => $kernel::<7>(a, panel, kc, c, ldc, m),
                    6 => $kernel::<6>(a, panel, kc, c, ldc, m),
                    5 => $kernel::<5>(a, panel, kc, c, ldc, m),
                    4 => $kernel::<4>(a, panel, kc, c, ldc, m),
                    3 => $kernel::<3>(a, panel, kc, c, ldc, m),
                    2 => $kernel::<2>(a, panel, kc, c, ldc, m),
                    _ => $kernel::<1>(a, panel, kc, c, ldc, m),
                }
            }
        }
    };
}
dispatch!(dispatch_bf16, kernel_bf16);
dispatch!(dispatch_f32, kernel_f32);

/// Adds the `R x 32` tile of accumulators `$acc0`/`$acc1` to its start (`$c`'s values, the bias
/// row or zeros: [`super::TileStart`]) and stores the sums in `$c` (columns 0..16 / 16..32
/// selected by the masks), then applies the activation (if any) to the stored sums
/// ([`act_tile`]). A macro so that the add is expanded inside each kernel with its accumulators
/// still in registers (as an `#[inline]` function it was compiled out of line once the
/// activation was added, which cost ≈ 4 % of a bf16 image encode).
///
/// Safety (of the expansion site): the CPU supports AVX-512 F/BW/VL; `$c + r * $ldc + j` is
/// valid for writes, and for reads when the start is `Add`, for `r < R` and every column `j` set
/// in the masks, with no other thread accessing those elements; a `Bias` pointer is valid for
/// reads of those columns.
macro_rules! add_tile {
    ($acc0:expr, $acc1:expr, $r:expr, $c:expr, $ldc:expr, $tile:expr) => {{
        let super::TileOut {
            masks: (m0, m1),
            start,
            act,
        } = $tile;
        // Past the end of a row (or the bias) when the panel has ≤ 16 columns (then `m1` is 0).
        let hi = |p: *mut f32| p.wrapping_add(16);
        if let super::TileStart::Add = start {
            for r in 0..$r {
                // SAFETY: the masked lanes are valid by the expansion site's contract; masked-off
                // lanes are not accessed.
                unsafe {
                    let row = $c.add(r * $ldc);
                    let v0 = _mm512_maskz_loadu_ps(m0, row);
                    _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(v0, $acc0[r]));
                    let v1 = _mm512_maskz_loadu_ps(m1, hi(row));
                    _mm512_mask_storeu_ps(hi(row), m1, _mm512_add_ps(v1, $acc1[r]));
                }
            }
        } else {
            // The same `start + sums` as `Add` on rows holding the bias (or zeros).
            let (b0, b1) = match start {
                // SAFETY: the bias lanes selected by the masks are valid (the contract).
                super::TileStart::Bias(b) => unsafe {
                    let b = b.cast_mut();
                    (
                        _mm512_maskz_loadu_ps(m0, b),
                        _mm512_maskz_loadu_ps(m1, hi(b)),
                    )
                },
                _ => (_mm512_setzero_ps(), _mm512_setzero_ps()),
            };
            for r in 0..$r {
                // SAFETY: as above; nothing is read from `$c`.
                unsafe {
                    let row = $c.add(r * $ldc);
                    _mm512_mask_storeu_ps(row, m0, _mm512_add_ps(b0, $acc0[r]));
                    _mm512_mask_storeu_ps(hi(row), m1, _mm512_add_ps(b1, $acc1[r]));
                }
            }
        }
        if let Some(act) = act {
            // SAFETY: the same tile, now written.
            unsafe { act_tile($r, $c, $ldc, (m0, m1), act) }
        }
    }};
}

/// Applies `act` in place to the `r x 32` tile at `c` (the masked columns), with the 16-lane
/// functions of the standalone ops.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; `c + i * ldc + j` must be valid for reads and writes
/// for `i < r` and every column `j` set in the masks, with no other thread accessing them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn act_tile(r: usize, c: *mut f32, ldc: usize, (m0, m1): (u16, u16), act: Activation) {
    if act == Activation::GeluErf {
        // The erf GELU sorts the tile's lanes by range first (bitwise `gelu16`).
        // (`SORTED_VECTORS` is a whole tile of `MR` rows: one batch.)
        let mut vecs = [(std::ptr::null_mut(), 0); SORTED_VECTORS];
        let mut n = 0;
        for i in 0..r {
            let row = c.wrapping_add(i * ldc);
            for (p, m) in [(row, m0), (row.wrapping_add(16), m1)] {
                if m != 0 {
                    vecs[n] = (p, m);
                    n += 1;
                }
                if n == SORTED_VECTORS {
                    // SAFETY: the masked lanes of each row half are valid and disjoint (the
                    // contract).
                    unsafe { gelu_sorted(&vecs) };
                    n = 0;
                }
            }
        }
        // SAFETY: as above.
        return unsafe { gelu_sorted(&vecs[..n]) };
    }
    for i in 0..r {
        // SAFETY: the masked lanes are valid by the contract.
        unsafe {
            let row = c.add(i * ldc);
            _mm512_mask_storeu_ps(row, m0, quick_gelu16(_mm512_maskz_loadu_ps(m0, row)));
            let hi = row.wrapping_add(16);
            _mm512_mask_storeu_ps(hi, m1, quick_gelu16(_mm512_maskz_loadu_ps(m1, hi)));
        }
    }
}

/// `c[r * ldc + j] += sum_p A[p][r] · panel[p][j]` (bf16 pairs, `vdpbf16ps`) for `R` rows and
/// the 32 columns `j` selected by `masks` (columns 0..16, 16..32).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL and BF16; `a.len() >= kc * R`, `panel.len() >= kc * 32`,
/// and `c` valid as [`add_tile!`] requires; `tile` holds the column masks and the activation.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn kernel_bf16<const R: usize>(
    a: &[u32],
    panel: &[u32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    tile: super::TileOut,
) {
    debug_assert!(a.len() >= R * kc && panel.len() >= kc * 32);
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let bp = panel.as_ptr();
    let ap = a.as_ptr();
    for p in 0..kc {
        // SAFETY: `p < kc`, so both loads are inside the panel and every A read inside `a`.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(p * 32) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(bp.add(p * 32 + 16) as *const _));
            for r in 0..R {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*ap.add(p * R + r) as i32));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
            }
        }
    }
    add_tile!(acc0, acc1, R, c, ldc, tile)
}

/// `c[r * ldc + j] += sum_p A[p][r] · panel[p][j]` (f32, `vfmadd231ps`, in order of `p`) for
/// `R` rows and the 32 columns `j` selected by `masks` (columns 0..16, 16..32).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL; `a.len() >= kc * R`, `panel.len() >= kc * 32`, and `c`
/// valid as [`add_tile!`] requires; `tile` holds the column masks and the activation.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn kernel_f32<const R: usize>(
    a: &[u32],
    panel: &[u32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    tile: super::TileOut,
) {
    debug_assert!(a.len() >= R * kc && panel.len() >= kc * 32);
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let bp = panel.as_ptr().cast::<f32>();
    let ap = a.as_ptr().cast::<f32>();
    for p in 0..kc {
        // SAFETY: `p < kc`, so both loads are inside the panel and every A read inside `a`.
        unsafe {
            let b0 = _mm512_loadu_ps(bp.add(p * 32));
            let b1 = _mm512_loadu_ps(bp.add(p * 32 + 16));
            for r in 0..R {
                let av = _mm512_set1_ps(*ap.add(p * R + r));
                acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
            }
        }
    }
    add_tile!(acc0, acc1, R, c, ldc, tile)
}
