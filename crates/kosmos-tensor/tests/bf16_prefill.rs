//! bf16 weights above the GEMV sizes (prefill / image encode, issue 8): `linear` / `linear_into`
//! round the f32 activations to bf16 (nearest even) and multiply them by the bf16 weights, with
//! `vdpbf16ps` on AVX512_BF16 and the f32 GEMM on converted panels elsewhere (same products on
//! every CPU), while decode (≤ `MAX_GEMV_ROWS` rows) keeps f32 activations.
//!
//! Reference: f64 sums over the bf16-ROUNDED x and the bf16 W. Products of two bf16 values are exact
//! in f32, so the only error is f32 summation order: tolerance 1e-6 of Σ|x·w| (+ bias) per output,
//! the same bound as the f32 GEMM in `ops.rs` (≈ 17 f32 ulps of the magnitude sum; a missing
//! rounding of x shows up as ≈ 2⁻⁹ relative, 4000× over it). Every SIMD level this CPU has runs
//! through `simd::with_isa`, with odd sizes, rows just above `MAX_GEMV_ROWS`, several K blocks
//! (> 256 elements) and column panels (> 32), and strided / offset weight views.

mod support;

use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{bf16, ops, DType, Tensor};
use proptest::prelude::*;
use support::*;

const TOL: f64 = 1e-6;
/// The most rows the decode GEMV takes.
const GEMV: usize = ops::MAX_GEMV_ROWS;

/// Reference on the bf16-rounded x and bias `b`; returns (values, error scale).
fn reference(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    (m, k, n): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    linear_ref(&round_bf16(x), w, b, m, k, n)
}

proptest! {
    #![proptest_config(cfg(40))]

    // `linear`, rows just above the GEMV bound, odd k across K blocks, n across panels; contiguous
    // and offset/strided weights; every SIMD level.
    #[test]
    fn linear_rounds_activations(extra in 1usize..14, k in 1usize..600, n in 1usize..80, bias in any::<bool>(), strided in any::<bool>(), seed in any::<u64>()) {
        let m = GEMV + extra;
        let x = rand_vec(seed, m * k, 2.0);
        let b = rand_vec(seed ^ 2, n, 1.0);
        let (w, wv) = if strided {
            offset_view(seed ^ 1, n, k, 1 + (seed % 7) as usize, (seed % 2) as usize, DType::BF16)
        } else {
            typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16)
        };
        let (want, mag) = reference(&x, &wv, bias.then_some(&b[..]), (m, k, n));
        let bt = bias.then(|| tensor(&b, &[n]));
        for isa in Isa::available() {
            let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &w, bt.as_ref())).unwrap().unwrap();
            prop_assert_eq!(y.dims(), &[m, n]);
            prop_assert_eq!(y.dtype(), DType::F32);
            assert_close(&format!("linear {isa} m={m} k={k} n={n}"), &y.to_vec_f32().unwrap(), &want, &mag, TOL);
        }
    }

    // `linear_into` into a buffer full of NaN (the GEMM must overwrite, not accumulate, without a
    // bias), with f32 or bf16 bias; leading dims folded in `linear` give the same values.
    #[test]
    fn linear_into_rounds_activations(extra in 1usize..40, k in 1usize..300, n in 1usize..70, bias in 0usize..3, seed in any::<u64>()) {
        let m = GEMV + extra;
        let x = rand_vec(seed, m * k, 1.5);
        let b = round_bf16(&rand_vec(seed ^ 2, n, 1.0));
        let (w, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let bt = match bias {
            0 => None,
            1 => Some(tensor(&b, &[n])),
            _ => Some(tensor(&b, &[n]).to_dtype(DType::BF16).unwrap()),
        };
        let (want, mag) = reference(&x, &wv, (bias > 0).then_some(&b[..]), (m, k, n));
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || ops::linear_into(&x, &w, bt.as_ref(), &mut out)).unwrap().unwrap();
            assert_close(&format!("linear_into {isa}"), &out, &want, &mag, TOL);
            // Same path through `linear` with leading dims [m, 1, k].
            let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, 1, k]), &w, bt.as_ref())).unwrap().unwrap();
            prop_assert_eq!(y.dims(), &[m, 1, n]);
            // Bitwise: `linear`'s new buffer starts from the bias inside the GEMM, `linear_into`
            // adds onto bias rows written first (or, without a bias, overwrites).
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&y.to_vec_f32().unwrap()), bits(&out), "linear 3-D {}", isa);
        }
    }

    // A transposed bf16 weight (inner stride ≠ 1) cannot feed the vdpbf16ps pack: it takes the
    // converted-panel GEMM, with the same rounding of x.
    #[test]
    fn transposed_weight_rounds_too(extra in 1usize..10, k in 1usize..60, n in 1usize..50, seed in any::<u64>()) {
        let m = GEMV + extra;
        let x = rand_vec(seed, m * k, 1.0);
        let (wt, _) = typed(&rand_vec(seed ^ 1, k * n, 1.0), &[k, n], DType::BF16);
        let w = wt.transpose(0, 1).unwrap();
        let wv = w.to_vec_f32().unwrap();
        let (want, mag) = reference(&x, &wv, None, (m, k, n));
        for isa in Isa::available() {
            let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &w, None)).unwrap().unwrap();
            assert_close(&format!("linear transposed {isa}"), &y.to_vec_f32().unwrap(), &want, &mag, TOL);
        }
    }

    // bf16 activations above the GEMV bound (already bf16: rounding is the identity), bf16 output.
    #[test]
    fn bf16_activations_above_gemv(extra in 1usize..30, k in 1usize..400, n in 1usize..70, seed in any::<u64>()) {
        let m = GEMV + extra;
        let (xt, xv) = typed(&rand_vec(seed, m * k, 1.0), &[m, k], DType::BF16);
        let (w, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let (want, mag) = linear_ref(&xv, &wv, None, m, k, n);
        let scale: Vec<f64> = mag.iter().zip(&want).map(|(g, v)| g + v.abs() * output_eps(DType::BF16) / TOL).collect();
        for isa in Isa::available() {
            let y = with_isa(isa, || ops::linear(&xt, &w, None)).unwrap().unwrap();
            prop_assert_eq!(y.dtype(), DType::BF16);
            assert_close(&format!("linear bf16 x {isa}"), &y.to_vec_f32().unwrap(), &want, &scale, TOL);
        }
    }
}

/// The rounding is real and ties go to even: 1 + 2⁻⁸ (a tie) rounds to 1, 1 + 3·2⁻⁸ (a tie) to
/// 1 + 2⁻⁶, 1 + 2⁻¹⁰ to 1, so each output is an exact small integer sum that the unrounded
/// product misses by far more than f32 error.
#[test]
fn activations_are_rounded_to_nearest_even() {
    let (m, k, n) = (GEMV + 3, 70, 33);
    let vals = [
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        1.0 + 2f32.powi(-10),
        -3.0,
    ];
    let rounded = [1.0f32, 1.0 + 2f32.powi(-6), 1.0, -3.0];
    let x: Vec<f32> = (0..m * k).map(|i| vals[(i / k + i) % 4]).collect();
    let w = Tensor::from_vec_bf16(vec![bf16::ONE; n * k], &[n, k], &kosmos_tensor::Device::Cpu)
        .unwrap();
    for isa in Isa::available() {
        let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &w, None))
            .unwrap()
            .unwrap();
        let y = y.to_vec_f32().unwrap();
        for i in 0..m {
            let want: f32 = (0..k).map(|p| rounded[(i + i * k + p) % 4]).sum();
            for j in 0..n {
                assert_eq!(y[i * n + j], want, "{isa} row {i} col {j}");
            }
        }
    }
}

/// Decode stays as it was: up to `MAX_GEMV_ROWS` rows `linear_into` keeps f32 activations (it
/// matches the reference on the UNROUNDED x) and each row is bitwise the one-row `linear`.
#[test]
fn gemv_rows_keep_f32_activations() {
    let (k, n) = (300, 45);
    let (w, wv) = typed(&rand_vec(5, n * k, 1.0), &[n, k], DType::BF16);
    for m in [1, 2, GEMV - 1, GEMV] {
        let x = rand_vec(m as u64, m * k, 1.0);
        let (want, mag) = linear_ref(&x, &wv, None, m, k, n);
        for isa in Isa::available() {
            let mut out = vec![0f32; m * n];
            with_isa(isa, || ops::linear_into(&x, &w, None, &mut out))
                .unwrap()
                .unwrap();
            assert_close(&format!("gemv {m} rows {isa}"), &out, &want, &mag, TOL);
            for i in 0..m {
                let one = with_isa(isa, || {
                    ops::linear(&tensor(&x[i * k..(i + 1) * k], &[1, k]), &w, None)
                })
                .unwrap()
                .unwrap()
                .to_vec_f32()
                .unwrap();
                assert_eq!(
                    &out[i * n..(i + 1) * n],
                    &one[..],
                    "{isa} {m} rows, row {i}"
                );
            }
        }
    }
}

/// f16 weights above the GEMV bound are not rounded through bf16 (their f32 GEMM keeps x).
#[test]
fn f16_weights_keep_f32_activations() {
    let (m, k, n) = (GEMV + 5, 130, 40);
    let x = rand_vec(11, m * k, 1.0);
    let (w, wv) = typed(&rand_vec(12, n * k, 1.0), &[n, k], DType::F16);
    let (want, mag) = linear_ref(&x, &wv, None, m, k, n);
    for isa in Isa::available() {
        let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &w, None))
            .unwrap()
            .unwrap();
        assert_close(
            &format!("f16 {isa}"),
            &y.to_vec_f32().unwrap(),
            &want,
            &mag,
            TOL,
        );
    }
}

/// KOSMOS-2-like sizes (71-row prefill, several K blocks and a partial last panel), every level.
#[test]
fn prefill_sized_gemm() {
    let (m, k, n) = (71, 1030, 97);
    let x = rand_vec(21, m * k, 3.0);
    let (w, wv) = typed(&rand_vec(22, n * k, 0.05), &[n, k], DType::BF16);
    let b = rand_vec(23, n, 0.1);
    let (want, mag) = reference(&x, &wv, Some(&b), (m, k, n));
    for isa in Isa::available() {
        let y = with_isa(isa, || {
            ops::linear(&tensor(&x, &[m, k]), &w, Some(&tensor(&b, &[n])))
        })
        .unwrap()
        .unwrap();
        assert_close(
            &format!("prefill {isa}"),
            &y.to_vec_f32().unwrap(),
            &want,
            &mag,
            TOL,
        );
    }
}
