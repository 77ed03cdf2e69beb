//! GEMV for one-row inputs (decode): `y = W x + b` reading `W` straight from its stored dtype, and
//! its batch-invariant multi-row form for small decode batches ([`gemv_rows_into`]).
//!
//! Rows of `W` are split across rayon threads; each output is one SIMD dot product that converts
//! bf16/f16 weights to f32 in registers (see `simd::dot`). Nothing is allocated besides the output.
//! Every output element is computed with the same per-(x, w-row) arithmetic whatever the grouping
//! (`simd::dot`'s contract), so a row's result never depends on the other rows of its batch, on
//! `W`'s row count or on the thread split.

use rayon::prelude::*;

use crate::simd::dot::DotElem;
use crate::simd::Isa;
use crate::storage::CpuSlice;

/// Fewest weight rows per rayon task: big enough to amortise scheduling.
const ROWS_PER_TASK: usize = 64;

/// Most x rows the small-batch GEMV is meant for (callers take the GEMM above it); the weights
/// are streamed once per group of four x rows (two below AVX-512). 16 = the server's default
/// `--max-batch`, so a continuous batch of up to 16 requests keeps every row bitwise equal to its
/// one-row GEMV (and 9–16 rows cost ≈ 4 passes over the weights instead of the GEMM's ≈ 25× one
/// row).
pub const MAX_GEMV_ROWS: usize = 16;

/// A row-major `[out, in]` weight matrix (inner stride 1, row stride `row_stride`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightRows<'a> {
    pub(crate) data: CpuSlice<'a>,
    pub(crate) offset: usize,
    pub(crate) row_stride: usize,
}

/// `y[o] = dot(x, W[o]) + b[o]` for every `o < y.len()`.
pub(crate) fn gemv_into(
    isa: Isa,
    x: &[f32],
    w: WeightRows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match w.data {
        CpuSlice::F32(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
        CpuSlice::BF16(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
        CpuSlice::F16(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
    }
}

/// Batch-invariant small-batch GEMV: `y[r, o] = dot(x[r], W[o]) + b[o]` for `rows` x rows.
///
/// `x` is `[rows, k]` and `y` is `[rows, n]`, both row-major (`k = x.len() / rows`,
/// `n = y.len() / rows`). Each weight row is read once per group of [`group_rows`] x rows,
/// and every `y[r, o]` is **bitwise identical** to what [`gemv_into`] gives for the one row `x[r]`
/// (same SIMD lanes, same accumulation order), for every dtype and SIMD level: a request's result
/// does not depend on which other rows share its decode batch. `rows == 1` is [`gemv_into`].
///
/// # Panics
/// If `rows == 0`, the lengths are not multiples of `rows`, `W` is too short for `n` rows of `k`,
/// or the bias length is not `n` (all internal invariants: callers validate user shapes first).
pub(crate) fn gemv_rows_into(
    isa: Isa,
    x: &[f32],
    rows: usize,
    w: WeightRows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert!(
        rows > 0 && x.len().is_multiple_of(rows) && y.len().is_multiple_of(rows),
        "gemv_rows_into: bad row count"
    );
    let (k, n) = (x.len() / rows, y.len() / rows);
    if rows == 1 {
        return gemv_into(isa, x, w, bias, y);
    }
    if k == 0 {
        // Empty dot products: only the bias (as `gemv_into` gives for `k == 0`).
        for yr in y.chunks_mut(n.max(1)) {
            match bias {
                Some(b) => yr.copy_from_slice(b),
                None => yr.fill(0.0),
            }
        }
        return;
    }
    let g = group_rows(isa);
    for (xg, yg) in x.chunks(g * k).zip(y.chunks_mut(g * n)) {
        match w.data {
            CpuSlice::F32(d) => rows_dispatch(isa, xg, k, d, w, bias, yg),
            CpuSlice::BF16(d) => rows_dispatch(isa, xg, k, d, w, bias, yg),
            CpuSlice::F16(d) => rows_dispatch(isa, xg, k, d, w, bias, yg),
        }
    }
}

/// x rows per pass over the weights: the `4 x M x 2` accumulators of `dot4_rows` must fit the
/// register file (32 zmm with AVX-512, 16 ymm with AVX2). Measured on 2048→8192 bf16 (2 threads):
/// 8 rows in one pass spilled and cost 10× one row; 4 rows per pass cost 1.9×.
pub(crate) fn group_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Avx512Bf16 => 4,
        Isa::Avx2 | Isa::Scalar => 2,
    }
}

/// One group of `1..=4` x rows, monomorphised on the row count.
fn rows_dispatch<T: DotElem>(
    isa: Isa,
    x: &[f32],
    k: usize,
    d: &[T],
    w: WeightRows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (o, s) = (w.offset, w.row_stride);
    match x.len() / k.max(1) {
        1 => gemv_typed(isa, x, d, o, s, bias, y),
        2 => gemv_rows_typed::<T, 2>(isa, x, d, o, s, bias, y),
        3 => gemv_rows_typed::<T, 3>(isa, x, d, o, s, bias, y),
        _ => gemv_rows_typed::<T, 4>(isa, x, d, o, s, bias, y),
    }
}

/// Whether a GEMV over `n` rows of `k` is worth splitting across rayon threads.
pub(crate) fn worth_parallel(n: usize, k: usize) -> bool {
    n * k >= 1 << 16 && n >= 2 * ROWS_PER_TASK
}

/// Weight rows per rayon task: at least [`ROWS_PER_TASK`], at most 256 (long prefetch streams, see
/// [`spread_quad`]), and at least four tasks per thread so the work balances.
pub(crate) fn rows_per_task(n: usize) -> usize {
    (n / (4 * rayon::current_num_threads())).clamp(ROWS_PER_TASK, 256) / 4 * 4
}

/// The four weight rows of quad `j` in a block of `4 * s (+ remainder)` rows starting at `first`:
/// `first + j`, `first + s + j`, `first + 2s + j`, `first + 3s + j`.
///
/// Taking the four rows of a quad from four sub-blocks (not four adjacent rows) makes each of the
/// four memory streams walk `s` contiguous rows instead of restarting after one row: with
/// 2048-wide rows (2–8 KB) the hardware prefetcher otherwise retrains every row. Measured +30–90%
/// GEMV bandwidth on 2048-wide rows (docs/performance.md, "kosmos-tensor kernels vs PyTorch").
/// Which rows share a quad does not change any result (`simd::dot`'s per-pair contract).
#[inline]
pub(crate) fn spread_quad(first: usize, s: usize, j: usize) -> [usize; 4] {
    [
        first + j,
        first + s + j,
        first + 2 * s + j,
        first + 3 * s + j,
    ]
}

fn gemv_typed<T: DotElem>(
    isa: Isa,
    x: &[f32],
    w: &[T],
    offset: usize,
    row_stride: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let k = x.len();
    let row = |o: usize| &w[offset + o * row_stride..offset + o * row_stride + k];
    // Rows `first..first + ys.len()`, four at a time from four sub-blocks (see `spread_quad`).
    let block = |first: usize, ys: &mut [f32]| {
        let s = ys.len() / 4;
        for j in 0..s {
            let [a, b, c, d] = spread_quad(first, s, j);
            let v = T::dot4(isa, x, [row(a), row(b), row(c), row(d)]);
            for (q, v) in v.into_iter().enumerate() {
                ys[q * s + j] = v;
            }
        }
        for (j, v) in ys.iter_mut().enumerate().skip(4 * s) {
            *v = T::dot(isa, x, row(first + j));
        }
        if let Some(b) = bias {
            let len = ys.len();
            for (v, &bb) in ys.iter_mut().zip(&b[first..first + len]) {
                *v += bb;
            }
        }
    };
    if worth_parallel(y.len(), k) {
        let rpt = rows_per_task(y.len());
        y.par_chunks_mut(rpt)
            .enumerate()
            .for_each(|(c, ys)| block(c * rpt, ys));
    } else {
        block(0, y);
    }
}

/// The output `[M, n]` shared by the rayon tasks of [`gemv_rows_typed`], each writing only its own
/// columns `first..first + len` of every row.
pub(crate) struct SharedOut {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: tasks write disjoint column ranges (see `SharedOut::columns`); the pointer comes from a
// unique borrow that outlives the parallel loop.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The `[rows, n]` output `y` (`n = y.len() / rows`).
    pub(crate) fn new(y: &mut [f32], n: usize) -> SharedOut {
        SharedOut {
            ptr: y.as_mut_ptr(),
            n,
        }
    }

    /// Row `r`, columns `first..first + len`.
    ///
    /// # Safety
    /// `r < M`, `first + len <= n`, and no two live slices may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn columns(&self, r: usize, first: usize, len: usize) -> &mut [f32] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + first), len) }
    }
}

/// `M` x rows (`x` is `[M, k]`) against every weight row; `y` is `[M, n]`.
fn gemv_rows_typed<T: DotElem, const M: usize>(
    isa: Isa,
    x: &[f32],
    w: &[T],
    offset: usize,
    row_stride: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let k = x.len() / M;
    let n = y.len() / M;
    assert!(x.len() == M * k && y.len() == M * n, "gemv_rows bounds");
    assert!(
        n == 0 || offset + (n - 1) * row_stride + k <= w.len(),
        "gemv_rows weight bounds"
    );
    assert!(bias.is_none_or(|b| b.len() == n), "gemv_rows bias length");
    let xs: [&[f32]; M] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    let row = |o: usize| &w[offset + o * row_stride..offset + o * row_stride + k];
    let out = SharedOut::new(y, n);
    // Columns `first..first + len` of every output row.
    let block = |first: usize, len: usize| {
        // SAFETY: `first + len <= n` (the callers below), and the blocks are disjoint column ranges.
        let mut ys: [&mut [f32]; M] =
            std::array::from_fn(|r| unsafe { out.columns(r, first, len) });
        // Four weight rows at a time from four sub-blocks, as in the one-row GEMV (`spread_quad`).
        let s = len / 4;
        for j in 0..s {
            let quad = spread_quad(first, s, j).map(row);
            let d = T::dot4_rows::<M>(isa, xs, quad);
            for (q, dq) in d.iter().enumerate() {
                for (yr, &v) in ys.iter_mut().zip(dq) {
                    yr[q * s + j] = v;
                }
            }
        }
        for j in 4 * s..len {
            let d = T::dot_rows::<M>(isa, xs, row(first + j));
            for (yr, v) in ys.iter_mut().zip(d) {
                yr[j] = v;
            }
        }
        if let Some(b) = bias {
            for yr in ys.iter_mut() {
                for (v, &bb) in yr.iter_mut().zip(&b[first..first + len]) {
                    *v += bb;
                }
            }
        }
    };
    if worth_parallel(n, k) {
        let rpt = rows_per_task(n);
        (0..n.div_ceil(rpt)).into_par_iter().for_each(|c| {
            let first = c * rpt;
            block(first, rpt.min(n - first));
        });
    } else {
        block(0, n);
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use proptest::prelude::*;

    use super::*;
    use crate::simd::with_isa;

    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Weights in every dtype as one storage, plus their f32 values.
    fn storages(w: &[f32]) -> (Vec<f32>, Vec<bf16>, Vec<f16>) {
        (
            w.to_vec(),
            w.iter().map(|&v| bf16::from_f32(v)).collect(),
            w.iter().map(|&v| f16::from_f32(v)).collect(),
        )
    }

    /// Runs the multi-row and the one-row GEMV on every dtype and SIMD level and checks bitwise
    /// equality row by row, plus closeness to an f64 reference.
    #[allow(clippy::too_many_arguments)]
    fn check(
        m: usize,
        k: usize,
        n: usize,
        stride_pad: usize,
        offset: usize,
        bias: bool,
        seed: u64,
    ) {
        let row_stride = k + stride_pad;
        let wlen = offset + n * row_stride;
        let (wf, wb, wh) = storages(&values(seed, wlen));
        let x = values(seed ^ 0x9e37, m * k);
        let b = values(seed ^ 0x51ed, n);
        let b = bias.then_some(&b[..]);
        for data in [CpuSlice::F32(&wf), CpuSlice::BF16(&wb), CpuSlice::F16(&wh)] {
            let w = WeightRows {
                data,
                offset,
                row_stride,
            };
            let wv: Vec<f32> = match data {
                CpuSlice::F32(d) => d.to_vec(),
                CpuSlice::BF16(d) => d.iter().map(|v| v.to_f32()).collect(),
                CpuSlice::F16(d) => d.iter().map(|v| v.to_f32()).collect(),
            };
            for isa in Isa::available() {
                let mut many = vec![f32::NAN; m * n];
                with_isa(isa, || gemv_rows_into(isa, &x, m, w, b, &mut many)).unwrap();
                for r in 0..m {
                    let xr = &x[r * k..(r + 1) * k];
                    let mut one = vec![f32::NAN; n];
                    gemv_into(isa, xr, w, b, &mut one);
                    for o in 0..n {
                        let got = many[r * n + o];
                        assert_eq!(
                            got.to_bits(),
                            one[o].to_bits(),
                            "{isa} {} m={m} k={k} n={n} row {r} col {o}: {got} vs {}",
                            dtype_name(data),
                            one[o]
                        );
                        let wr = &wv[offset + o * row_stride..][..k];
                        let (mut want, mut mag) = (0f64, 0f64);
                        for (&a, &c) in xr.iter().zip(wr) {
                            want += a as f64 * c as f64;
                            mag += (a as f64 * c as f64).abs();
                        }
                        if let Some(b) = b {
                            want += b[o] as f64;
                            mag += (b[o] as f64).abs();
                        }
                        assert!(((got as f64 - want) / (mag + 1e-30)).abs() < 1e-5);
                    }
                }
            }
        }
    }

    fn dtype_name(d: CpuSlice<'_>) -> &'static str {
        match d {
            CpuSlice::F32(_) => "f32",
            CpuSlice::BF16(_) => "bf16",
            CpuSlice::F16(_) => "f16",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Odd sizes, strided/offset weight views, 2..=16 rows and beyond (several passes).
        #[test]
        fn rows_are_bitwise_equal_to_one_row(
            m in 2usize..20, k in 1usize..140, n in 1usize..70, pad in 0usize..5,
            offset in 0usize..7, bias in any::<bool>(), seed in any::<u64>(),
        ) {
            check(m, k, n, pad, offset, bias, seed);
        }
    }

    /// Shapes big enough for the rayon split (different chunk boundaries than one task).
    #[test]
    fn rows_are_bitwise_equal_on_parallel_shapes() {
        for (m, k, n) in [(2, 515, 301), (8, 257, 333), (5, 1024, 130)] {
            check(m, k, n, 3, 1, true, 7 + k as u64);
        }
    }

    #[test]
    fn zero_width_rows_give_the_bias() {
        let w = WeightRows {
            data: CpuSlice::F32(&[]),
            offset: 0,
            row_stride: 0,
        };
        let mut y = [f32::NAN; 6];
        gemv_rows_into(Isa::current(), &[], 3, w, Some(&[1.0, 2.0]), &mut y);
        assert_eq!(y, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    }
}
