//! `linear_int8`: `x · deq(W)ᵀ + b` with an int8 per-output-channel weight ([`Int8Weight`]).
//!
//! - One row (decode): GEMV reading the int8 rows in place, widened to f32 in registers
//!   (`simd::int8`, AVX-512 / AVX2 / scalar by [`Isa::current`]), rows split across rayon, then
//!   `y[o] = scale[o] * dot(x, q[o]) + b[o]`.
//! - More than `MAX_GEMV_ROWS` rows (prefill): the activations are rounded to bf16 (nearest even,
//!   as the bf16 weights' GEMM does, see `ops::linear`) and multiplied by `q`, then each output
//!   column is scaled. With AVX512_BF16, `q` goes through the `vdpbf16ps` panel GEMM, each panel
//!   block converted to bf16 (exact: |q| <= 127) while it is packed; elsewhere panels of `q` go to f32 for the f32 GEMM. int8 × bf16 products
//!   are exact in f32, so every CPU computes the same products (summation order aside).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::gemv::{
    group_rows, rows_per_task, spread_quad, worth_parallel, SharedOut, MAX_GEMV_ROWS,
};
use crate::ops::matmul::{gemm_f32, StridedMat};
use crate::ops::{apply_opt, Activation};
use crate::quant::Int8Weight;
use crate::simd::int8::{dot4_i8, dot4_rows_i8, dot8_i8, dot_i8, dot_rows_i8};
use crate::simd::Isa;
use crate::tensor::{check_cpu, Tensor};

/// Rows of at least this many weights go through the GEMV eight at a time: their `x` (16 KiB of
/// f32 and up) no longer stays in L1 beside four weight streams.
const LONG_ROW: usize = 4096;

/// Weight rows per rayon task in the GEMV.
const ROWS_PER_TASK: usize = 64;

/// `x [.., in] · deq(W)[out, in]ᵀ (+ bias[out]) -> [.., out]`, in `x`'s dtype (computed in f32;
/// above `MAX_GEMV_ROWS` rows with x rounded to bf16 first, see the module docs).
///
/// ```
/// use kosmos_tensor::{ops, quant::Int8Weight, Device, Tensor};
/// let w = Int8Weight::from_parts(vec![127, 0, -127, 127], vec![0.5, 1.0], 2, 2)?;
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], &Device::Cpu)?;
/// assert_eq!(ops::linear_int8(&x, &w, Some(&[1.0, 0.0]))?.to_vec_f32()?, vec![64.5, 127.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_int8(x: &Tensor, w: &Int8Weight, bias: Option<&[f32]>) -> Result<Tensor> {
    int8_impl(x, w, bias, None)
}

/// `act(x · deq(W)ᵀ + b)`: bitwise [`linear_int8`] followed by the standalone activation op, with
/// the activation applied in the GEMM's per-row scale pass (see [`super::linear_act`]).
///
/// ```
/// use kosmos_tensor::{ops, ops::Activation, quant::Int8Weight, Device, Tensor};
/// let w = Int8Weight::from_parts(vec![127, 0, -127, 127], vec![0.5, 1.0], 2, 2)?;
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], &Device::Cpu)?;
/// let fused = ops::linear_int8_act(&x, &w, None, Activation::GeluErf)?;
/// let apart = ops::gelu_erf(&ops::linear_int8(&x, &w, None)?)?;
/// assert_eq!(fused.to_vec_f32()?, apart.to_vec_f32()?);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_int8_act(
    x: &Tensor,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    act: Activation,
) -> Result<Tensor> {
    if x.dtype() != crate::DType::F32 {
        return act.apply(&linear_int8(x, w, bias)?);
    }
    int8_impl(x, w, bias, Some(act))
}

/// [`linear_int8`] (`act: None`) or [`linear_int8_act`] with f32 activations.
fn int8_impl(
    x: &Tensor,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    act: Option<Activation>,
) -> Result<Tensor> {
    const OP: &str = "linear_int8";
    let isa = Isa::current();
    check_cpu(OP, x.device())?;
    let (rows, k) = super::rows_cols(OP, x)?;
    let [n, wk] = w.dims();
    if wk != k {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.dims().to_vec(),
            rhs: w.dims().to_vec(),
        });
    }
    if let Some(b) = bias {
        if b.len() != n {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: w.dims().to_vec(),
                rhs: vec![b.len()],
            });
        }
    }
    let xv = x.f32_cow(OP)?;
    let mut out = vec![0f32; rows * n];
    let mut shape = x.dims().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = n;
    if rows <= MAX_GEMV_ROWS {
        gemv_int8_rows_into(isa, &xv, rows, w, bias, &mut out);
        apply_opt(act, &mut out);
    } else {
        gemm_int8_into(&xv, rows, w, bias, &mut out, act);
    }
    Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()))
}

/// [`linear_int8`] on raw f32 rows into a caller-owned buffer (for a decode loop that allocates
/// nothing per token when `rows == 1`): `x` is `[rows, in]` row-major, `out` is `[rows, out]`.
///
/// ```
/// use kosmos_tensor::{ops, quant::Int8Weight};
/// let w = Int8Weight::from_parts(vec![127, 0, -127, 127], vec![0.5, 1.0], 2, 2)?;
/// let mut y = [0f32; 2];
/// ops::linear_int8_into(&[1.0, 2.0], 1, &w, None, &mut y)?;
/// assert_eq!(y, [63.5, 127.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_int8_into(
    x: &[f32],
    rows: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "linear_int8_into";
    let [n, k] = w.dims();
    if rows == 0 {
        return Err(Error::Empty {
            op: OP,
            shape: vec![rows, k],
        });
    }
    if Some(x.len()) != rows.checked_mul(k)
        || Some(out.len()) != rows.checked_mul(n)
        || bias.is_some_and(|b| b.len() != n)
    {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: vec![x.len(), out.len(), bias.map_or(n, <[f32]>::len)],
            rhs: w.dims().to_vec(),
        });
    }
    if rows <= MAX_GEMV_ROWS {
        gemv_int8_rows_into(Isa::current(), x, rows, w, bias, out);
    } else {
        // Both GEMMs write every output (neither reads `out` first).
        gemm_int8_into(x, rows, w, bias, out, None);
    }
    Ok(())
}

/// `y[o] = scale[o] * dot(x, q[o]) (+ b[o])` for every output row; `y.len() == out`.
fn gemv_int8_into(isa: Isa, x: &[f32], w: &Int8Weight, bias: Option<&[f32]>, y: &mut [f32]) {
    let [n, k] = w.dims();
    assert!(x.len() == k && y.len() == n, "gemv_int8 bounds");
    let (q, scales) = (w.q(), w.scales());
    let row = |o: usize| &q[o * k..(o + 1) * k];
    // Rows `first..first + ys.len()`, four at a time from four sub-blocks (long prefetch
    // streams: `gemv::spread_quad`); rows longer than `LONG_ROW` eight at a time from eight.
    let block = |first: usize, ys: &mut [f32]| {
        let len = ys.len();
        let mut done = 0;
        if k >= LONG_ROW {
            let s8 = len / 8;
            for j in 0..s8 {
                let v = dot8_i8(isa, x, std::array::from_fn(|r| row(first + r * s8 + j)));
                for (r, v) in v.into_iter().enumerate() {
                    ys[r * s8 + j] = v;
                }
            }
            done = 8 * s8;
        }
        let s4 = (len - done) / 4;
        for j in 0..s4 {
            let [a, b, c, d] = spread_quad(first + done, s4, j);
            let v = dot4_i8(isa, x, [row(a), row(b), row(c), row(d)]);
            for (r, v) in v.into_iter().enumerate() {
                ys[done + r * s4 + j] = v;
            }
        }
        for (j, v) in ys.iter_mut().enumerate().skip(done + 4 * s4) {
            *v = dot_i8(isa, x, row(first + j));
        }
        let s = &scales[first..first + len];
        match bias {
            Some(b) => {
                let b = &b[first..first + len];
                for ((v, &s), &b) in ys.iter_mut().zip(s).zip(b) {
                    *v = *v * s + b;
                }
            }
            None => ys.iter_mut().zip(s).for_each(|(v, &s)| *v *= s),
        }
    };
    if n * k >= 1 << 18 && n >= 2 * ROWS_PER_TASK {
        let rpt = rows_per_task(n);
        y.par_chunks_mut(rpt)
            .enumerate()
            .for_each(|(c, ys)| block(c * rpt, ys));
    } else {
        block(0, y);
    }
}

/// Batch-invariant small-batch int8 GEMV: `y[r, o] = scale[o] * dot(x[r], q[o]) (+ b[o])` for
/// `rows` x rows (`x` is `[rows, in]`, `y` is `[rows, out]`), each weight row read once per group
/// of `gemv::group_rows` x rows. Every `y[r, o]` is bitwise identical to the one-row GEMV of
/// `x[r]` (`simd::int8::dot_rows_i8`'s contract), so a request's logits do not depend on which
/// other rows share its decode batch.
pub(crate) fn gemv_int8_rows_into(
    isa: Isa,
    x: &[f32],
    rows: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let [n, k] = w.dims();
    assert!(
        rows > 0 && x.len() == rows * k && y.len() == rows * n,
        "gemv_int8_rows bounds"
    );
    if rows == 1 {
        return gemv_int8_into(isa, x, w, bias, y);
    }
    let g = group_rows(isa);
    for (xg, yg) in x.chunks(g * k).zip(y.chunks_mut(g * n)) {
        // `Int8Weight` is never empty (`n, k > 0`).
        match yg.len() / n {
            1 => gemv_int8_into(isa, xg, w, bias, yg),
            2 => gemv_int8_m::<2>(isa, xg, w, bias, yg),
            3 => gemv_int8_m::<3>(isa, xg, w, bias, yg),
            _ => gemv_int8_m::<4>(isa, xg, w, bias, yg),
        }
    }
}

/// `M` x rows against every int8 weight row; same row order and epilogue as [`gemv_int8_into`].
fn gemv_int8_m<const M: usize>(
    isa: Isa,
    x: &[f32],
    w: &Int8Weight,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let [n, k] = w.dims();
    assert!(x.len() == M * k && y.len() == M * n, "gemv_int8_m bounds");
    let (q, scales) = (w.q(), w.scales());
    let xs: [&[f32]; M] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    let out = SharedOut::new(y, n);
    let block = |first: usize, len: usize| {
        // SAFETY: `first + len <= n` (the callers below), and the blocks are disjoint column ranges.
        let mut ys: [&mut [f32]; M] =
            std::array::from_fn(|r| unsafe { out.columns(r, first, len) });
        let row = |o: usize| &q[o * k..(o + 1) * k];
        // Four weight rows at a time from four sub-blocks, as in the one-row GEMV.
        let s4 = len / 4;
        for j in 0..s4 {
            let d = dot4_rows_i8::<M>(isa, xs, spread_quad(first, s4, j).map(row));
            for (t, dt) in d.iter().enumerate() {
                for (yr, &v) in ys.iter_mut().zip(dt) {
                    yr[t * s4 + j] = v;
                }
            }
        }
        for j in 4 * s4..len {
            let d = dot_rows_i8::<M>(isa, xs, row(first + j));
            for (yr, v) in ys.iter_mut().zip(d) {
                yr[j] = v;
            }
        }
        let s = &scales[first..first + len];
        for yr in ys.iter_mut() {
            match bias {
                Some(b) => {
                    let b = &b[first..first + len];
                    for ((v, &s), &b) in yr.iter_mut().zip(s).zip(b) {
                        *v = *v * s + b;
                    }
                }
                None => yr.iter_mut().zip(s).for_each(|(v, &s)| *v *= s),
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

/// Multi-row path: `bf16(x) · qᵀ`, then scale (and bias). See the module docs. Every output is
/// written; `out`'s old values are not read.
/// `act` (if any) is applied after the scale and bias, in the same pass on AVX512_BF16.
fn gemm_int8_into(
    x: &[f32],
    rows: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
    act: Option<Activation>,
) {
    #[cfg(target_arch = "x86_64")]
    if Isa::current() == Isa::Avx512Bf16 {
        return gemm_int8_bf16(x, rows, w, bias, out, act);
    }
    // Round x to bf16 first: the same products as the `vdpbf16ps` path.
    gemm_int8_f32(&crate::convert::bf16_rounded(x), rows, w, bias, out);
    apply_opt(act, &mut out[..rows * w.dims()[0]]);
}

/// `gemm_int8_into` on AVX512_BF16: the `vdpbf16ps` panel GEMM reading `q` as it is (each panel
/// block converted to bf16 pairs, exactly, while it is packed; x rounded to bf16 while it is
/// packed), then `out = act(out * scale + bias)` row by row.
#[cfg(target_arch = "x86_64")]
fn gemm_int8_bf16(
    x: &[f32],
    rows: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
    act: Option<Activation>,
) {
    let isa = Isa::current();
    use crate::simd::panel_gemm::{gemm_i8_avx512, GemmOut, Lhs};
    let [n, k] = w.dims();
    let scales = w.scales();
    gemm_i8_avx512(Lhs::F32(x), (rows, n, k), w.q(), GemmOut::set(out, None));
    out[..rows * n].par_chunks_mut(n).for_each(|row| {
        match bias {
            Some(b) => {
                for ((d, &s), &b) in row.iter_mut().zip(scales).zip(b) {
                    *d = *d * s + b;
                }
            }
            None => row.iter_mut().zip(scales).for_each(|(d, &s)| *d *= s),
        }
        if let Some(a) = act {
            a.apply_serial(isa, row);
        }
    });
}

/// The f32 GEMM path: per panel of output rows, `q` → f32 (exact) in a reused buffer, a
/// single-threaded f32 GEMM into the panel's own block, then scale (and bias) while scattering.
fn gemm_int8_f32(x: &[f32], rows: usize, w: &Int8Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let [n, k] = w.dims();
    let (q, scales) = (w.q(), w.scales());
    let lhs = StridedMat {
        data: x,
        offset: 0,
        rs: k,
        cs: 1,
    };
    // Panels of at most ~4 MB of f32 (a converted panel stays in cache) and at least four panels
    // per thread; whole multiples of 16 rows.
    let by_cache = ((1usize << 20) / k).max(16);
    let by_balance = n.div_ceil(4 * rayon::current_num_threads()).max(16);
    let panel = by_cache.min(by_balance).next_multiple_of(16);
    let mut blocks = vec![0f32; rows * n];
    blocks
        .par_chunks_mut(rows * panel)
        .enumerate()
        .for_each_init(Vec::new, |wbuf: &mut Vec<f32>, (pi, block)| {
            let n0 = pi * panel;
            let nb = panel.min(n - n0);
            wbuf.resize(nb * k, 0.0);
            wbuf.iter_mut()
                .zip(&q[n0 * k..(n0 + nb) * k])
                .for_each(|(d, &v)| *d = f32::from(v));
            let rhs = StridedMat {
                data: wbuf,
                offset: 0,
                rs: 1,
                cs: k,
            };
            gemm_f32(block, nb, (rows, nb, k), lhs, rhs, false, false);
        });
    for n0 in (0..n).step_by(panel) {
        let nb = panel.min(n - n0);
        let block = &blocks[rows * n0..rows * (n0 + nb)];
        let s = &scales[n0..n0 + nb];
        for (i, src) in block.chunks(nb).enumerate() {
            let dst = &mut out[i * n + n0..i * n + n0 + nb];
            match bias {
                Some(b) => {
                    let b = &b[n0..n0 + nb];
                    for (((d, &v), &s), &b) in dst.iter_mut().zip(src).zip(s).zip(b) {
                        *d = v * s + b;
                    }
                }
                None => {
                    for ((d, &v), &s) in dst.iter_mut().zip(src).zip(s) {
                        *d = v * s;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn weight(seed: u64, n: usize, k: usize) -> Int8Weight {
        let q = values(seed, n * k)
            .iter()
            .map(|v| (v * 63.0) as i8)
            .collect();
        let scales = values(seed ^ 5, n).iter().map(|v| v.abs() + 0.01).collect();
        Int8Weight::from_parts(q, scales, n, k).unwrap()
    }

    /// `(values, Σ|terms| + |b|)` of `x · deq(W)ᵀ + b` in f64.
    fn reference(x: &[f32], w: &Int8Weight, b: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let [n, k] = w.dims();
        let (mut want, mut mag) = (Vec::new(), Vec::new());
        for xr in x.chunks(k) {
            for o in 0..n {
                let mut acc = b.map_or(0.0, |b| b[o] as f64);
                let mut g = acc.abs();
                for (i, &xv) in xr.iter().enumerate() {
                    let t = xv as f64 * w.scales()[o] as f64 * w.q()[o * k + i] as f64;
                    acc += t;
                    g += t.abs();
                }
                want.push(acc);
                mag.push(g);
            }
        }
        (want, mag)
    }

    fn check_rows(m: usize, k: usize, n: usize, bias: bool, seed: u64) {
        let w = weight(seed, n, k);
        let x = values(seed ^ 0x9e37, m * k);
        let b = values(seed ^ 0x51ed, n);
        let b = bias.then_some(&b[..]);
        let (want, mag) = reference(&x, &w, b);
        for isa in Isa::available() {
            let mut many = vec![f32::NAN; m * n];
            with_isa(isa, || gemv_int8_rows_into(isa, &x, m, &w, b, &mut many)).unwrap();
            for r in 0..m {
                let mut one = vec![f32::NAN; n];
                gemv_int8_into(isa, &x[r * k..(r + 1) * k], &w, b, &mut one);
                for o in 0..n {
                    let got = many[r * n + o];
                    assert_eq!(
                        got.to_bits(),
                        one[o].to_bits(),
                        "{isa} m={m} k={k} n={n} row {r} col {o}: {got} vs {}",
                        one[o]
                    );
                    let e = r * n + o;
                    assert!(((got as f64 - want[e]) / (mag[e] + 1e-30)).abs() < 1e-5);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// 2..=16 rows and beyond (several passes), odd sizes: bitwise equal to the one-row GEMV.
        #[test]
        fn int8_rows_are_bitwise_equal_to_one_row(
            m in 2usize..20, k in 1usize..140, n in 1usize..70, bias in any::<bool>(), seed in any::<u64>(),
        ) {
            check_rows(m, k, n, bias, seed);
        }

        /// More than `MAX_GEMV_ROWS` rows take the GEMM on bf16-rounded x, on every SIMD level
        /// (the reference uses the rounded x: the products are exact, only sums differ).
        #[test]
        fn int8_gemm_matches_reference(
            m in 17usize..28, k in 1usize..100, n in 1usize..50, bias in any::<bool>(), seed in any::<u64>(),
        ) {
            let w = weight(seed, n, k);
            let x = values(seed ^ 3, m * k);
            let xr: Vec<f32> = x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
            let b = values(seed ^ 4, n);
            let b = bias.then_some(&b[..]);
            let (want, mag) = reference(&xr, &w, b);
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; m * n];
                with_isa(isa, || linear_int8_into(&x, m, &w, b, &mut y)).unwrap().unwrap();
                for ((&got, &want), &mag) in y.iter().zip(&want).zip(&mag) {
                    prop_assert!(((got as f64 - want) / (mag + 1e-30)).abs() < 1e-6, "{}", isa);
                }
            }
        }
    }

    /// On AVX512_BF16 the int8 GEMM packs `q` straight from its int8 rows: bitwise the bf16 panel
    /// GEMM on `q` converted to bf16 first (the route it replaced), across K blocks (512 int8),
    /// odd `k`, partial 16-row / 32-column panels and the extreme values -128 and 127.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn int8_gemm_is_bitwise_the_bf16_gemm_on_converted_weights() {
        use crate::simd::panel_gemm::{gemm_bf16_avx512, gemm_i8_avx512, GemmOut, Lhs};
        if !Isa::Avx512Bf16.is_supported() {
            eprintln!("skipped: needs AVX512_BF16");
            return;
        }
        let shapes = [
            (17, 1, 1),
            (20, 33, 47),
            (17, 511, 16),
            (25, 1025, 70),
            (71, 1300, 33),
        ];
        for (i, (m, k, n)) in shapes.into_iter().enumerate() {
            let mut q: Vec<i8> = weight(i as u64 + 7, n, k).q().to_vec();
            q[0] = i8::MIN;
            q[n * k - 1] = i8::MAX;
            if n * k > 40 {
                q[40] = i8::MIN;
            }
            let x = values(i as u64 + 99, m * k);
            let mut got = vec![0f32; m * n];
            gemm_i8_avx512(Lhs::F32(&x), (m, n, k), &q, GemmOut::set(&mut got, None));
            let wb: Vec<half::bf16> = q.iter().map(|&v| half::bf16::from_f32(v.into())).collect();
            let mut want = vec![0f32; m * n];
            let want_out = GemmOut::set(&mut want, None);
            gemm_bf16_avx512(Lhs::F32(&x), (m, n, k), &wb, 0, k, want_out, None);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "m={m} k={k} n={n}");
        }
    }

    /// Shapes big enough for the rayon split.
    #[test]
    fn int8_rows_are_bitwise_equal_on_parallel_shapes() {
        // The last two have rows of ≥ `LONG_ROW`: the one-row GEMV takes them eight at a time
        // (with four-row groups and single rows for the rest of each task).
        for (m, k, n) in [
            (2, 515, 301),
            (8, 1031, 260),
            (3, 2048, 130),
            (2, 4113, 79),
            (3, 8192, 300),
        ] {
            check_rows(m, k, n, true, 11 + k as u64);
        }
    }
}
