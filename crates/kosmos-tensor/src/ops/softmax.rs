//! Softmax and log-softmax over the last dim (max-subtracted, f32, vectorised `exp`).

use rayon::prelude::*;

use crate::error::Result;
use crate::ops::norm::lane_sum;
use crate::simd::exp::exp_inplace;
use crate::simd::Isa;
use crate::tensor::{check_cpu, Tensor, PAR_THRESHOLD};

/// The row's largest value, as `fold(-inf, f32::max)` gives it (NaNs skipped; the max of a set
/// does not depend on the order), over 16 independent lanes so that it vectorises.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter()
        .chain(rem)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// In-place `softmax(row · scale + mask)` (the mask optional, `mask.len() == row.len()`): bitwise
/// the scaled and masked row (`x * scale + m`) through [`softmax_row`], in three vector passes
/// on AVX-512.
#[inline]
pub(crate) fn softmax_scaled_row(isa: Isa, row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx512Bf16) {
        // SAFETY: `isa` is only ever a level `Isa::is_supported` returned true for.
        return unsafe { x86::softmax_scaled_row(row, scale, mask) };
    }
    match mask {
        Some(m) => {
            for (s, &mv) in row.iter_mut().zip(m) {
                *s = *s * scale + mv;
            }
        }
        None => row.iter_mut().for_each(|s| *s *= scale),
    }
    softmax_row(isa, row);
}

/// In-place softmax of one row. A row that is entirely `-inf` becomes all zeros (not NaN).
#[inline]
pub(crate) fn softmax_row(isa: Isa, row: &mut [f32]) {
    let max = lane_max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    row.iter_mut().for_each(|v| *v -= max);
    exp_inplace(isa, row);
    let inv = 1.0 / lane_sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// In-place log-softmax of one row: `x - max - ln(sum(exp(x - max)))`.
fn log_softmax_row(isa: Isa, row: &mut [f32], scratch: &mut Vec<f32>) {
    let max = lane_max(row);
    if max == f32::NEG_INFINITY {
        return;
    }
    scratch.clear();
    scratch.extend(row.iter().map(|v| v - max));
    exp_inplace(isa, scratch);
    let lse = lane_sum(scratch, |v| v).ln();
    row.iter_mut().for_each(|v| *v = *v - max - lse);
}

fn rowwise(
    op: &'static str,
    x: &Tensor,
    f: impl Fn(&mut [f32], &mut Vec<f32>) + Sync,
) -> Result<Tensor> {
    check_cpu(op, x.device())?;
    let (_, d) = super::rows_cols(op, x)?;
    let mut out = x.f32_cow(op)?.into_owned();
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(d)
            .for_each_init(Vec::new, |s, r| f(r, s));
    } else {
        let mut s = Vec::new();
        out.chunks_mut(d).for_each(|r| f(r, &mut s));
    }
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}

/// `softmax(x)` over the last dim.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let isa = Isa::current();
    rowwise("softmax_last_dim", x, |r, _| softmax_row(isa, r))
}

/// `log_softmax(x) = x - max - ln(sum(exp(x - max)))` over the last dim.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let isa = Isa::current();
    rowwise("log_softmax_last_dim", x, |r, s| log_softmax_row(isa, r, s))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::exp::x86::exp16;

    /// `softmax_scaled_row` on AVX-512: the max pass also scales and masks; the exp pass sums in
    /// 16 lanes and the tail sequentially, reduced as `lane_sum` reduces them.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL; `mask`, when given, is at least `row.len()` long.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn softmax_scaled_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
        let n = row.len();
        let p = row.as_mut_ptr();
        let tail = n % 16;
        let body = n - tail;
        let tmask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
        let vs = _mm512_set1_ps(scale);
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut vmax = ninf;
        // SAFETY (all blocks below): accesses stay inside `0..n` (the tail is masked), and `mask`
        // holds at least `n` values (the caller's contract).
        let scaled = |i: usize, m: __mmask16| unsafe {
            let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(i)), vs);
            match mask {
                Some(mk) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, mk.as_ptr().add(i))),
                None => x,
            }
        };
        let mut i = 0;
        while i < body {
            let x = scaled(i, 0xffff);
            unsafe { _mm512_storeu_ps(p.add(i), x) };
            // `max(x, acc)` returns `acc` where `x` is NaN: NaNs are skipped, as `f32::max` does.
            vmax = _mm512_max_ps(x, vmax);
            i += 16;
        }
        if tail > 0 {
            let x = _mm512_mask_mov_ps(ninf, tmask, scaled(body, tmask));
            unsafe { _mm512_mask_storeu_ps(p.add(body), tmask, x) };
            vmax = _mm512_max_ps(x, vmax);
        }
        let mut lanes = [0f32; 16];
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), vmax) };
        let max = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            return;
        }
        let vmx = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < body {
            let e = exp16(_mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(i)) }, vmx));
            unsafe { _mm512_storeu_ps(p.add(i), e) };
            acc = _mm512_add_ps(acc, e);
            i += 16;
        }
        let mut tail_sum = 0f32;
        if tail > 0 {
            let x = unsafe { _mm512_maskz_loadu_ps(tmask, p.add(body)) };
            let e = exp16(_mm512_sub_ps(x, vmx));
            unsafe { _mm512_mask_storeu_ps(p.add(body), tmask, e) };
            for &v in &row[body..] {
                tail_sum += v;
            }
        }
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        let mut w = 16;
        while w > 1 {
            w /= 2;
            for l in 0..w {
                lanes[l] += lanes[l + w];
            }
        }
        let inv = _mm512_set1_ps(1.0 / (lanes[0] + tail_sum));
        let mut i = 0;
        while i < body {
            unsafe { _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv)) };
            i += 16;
        }
        if tail > 0 {
            unsafe {
                let x = _mm512_maskz_loadu_ps(tmask, p.add(body));
                _mm512_mask_storeu_ps(p.add(body), tmask, _mm512_mul_ps(x, inv));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused row (every level) is bitwise the scaled, masked row through `softmax_row`.
    #[test]
    fn the_fused_scaled_row_is_bitwise_the_composed_one() {
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 37.0 - 13.0;
        for isa in Isa::available() {
            for n in [1usize, 5, 15, 16, 17, 31, 64, 257, 300] {
                let row: Vec<f32> = (0..n).map(val).collect();
                let mask: Vec<f32> = (0..n)
                    .map(|i| {
                        if i % 5 == 3 {
                            f32::NEG_INFINITY
                        } else {
                            (i % 3) as f32
                        }
                    })
                    .collect();
                let mut special = row.clone();
                special[n / 2] = f32::NAN;
                let all_masked = vec![f32::NEG_INFINITY; n];
                let cases: [(&[f32], Option<&[f32]>); 4] = [
                    (&row, None),
                    (&row, Some(&mask)),
                    (&special, Some(&mask)),
                    (&row, Some(&all_masked)),
                ];
                for (x, m) in cases {
                    let mut want = x.to_vec();
                    match m {
                        Some(m) => want
                            .iter_mut()
                            .zip(m)
                            .for_each(|(s, &mv)| *s = *s * 0.125 + mv),
                        None => want.iter_mut().for_each(|s| *s *= 0.125),
                    }
                    softmax_row(isa, &mut want);
                    let mut got = x.to_vec();
                    softmax_scaled_row(isa, &mut got, 0.125, m);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{isa} n={n} mask={}", m.is_some());
                }
            }
        }
    }
}
