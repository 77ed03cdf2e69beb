//! f32 weights above the GEMV sizes (prefill, image encode; issue 4): on AVX-512 `linear` /
//! `linear_into` run the panel GEMM (`simd/panel_gemm.rs`, W packed per 32-row panel and K block),
//! elsewhere and for strided weights the `gemm` crate. Both must match an f64 reference within the
//! f32 GEMM tolerance of `ops.rs` (1e-6 of Σ|x·w| + |b| per output: ≈ 17 f32 ulps of the magnitude
//! sum), on every SIMD level this CPU has, with rows from 2 to past several `MR = 12` row blocks,
//! k across K blocks (> 256) and odd, n across 32-column panels with a partial last one, offset and
//! row-strided weight views, and with and without bias. The levels must agree with each other to
//! the same bound (a wrong pack shows up as an O(1) error).

mod support;

use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{ops, DType};
use proptest::prelude::*;
use support::*;

const TOL: f64 = 1e-6;

proptest! {
    #![proptest_config(cfg(48))]

    // `linear`: rows 2..60, k up to 700 (three K blocks), n up to 100 (four panels, the last
    // partial); contiguous or offset/strided weights; every SIMD level.
    #[test]
    fn linear_f32_weights(m in 2usize..60, k in 1usize..700, n in 1usize..100, bias in any::<bool>(), strided in any::<bool>(), seed in any::<u64>()) {
        let x = rand_vec(seed, m * k, 2.0);
        let b = rand_vec(seed ^ 2, n, 1.0);
        let (w, wv) = if strided {
            offset_view(seed ^ 1, n, k, 1 + (seed % 7) as usize, (seed % 2) as usize, DType::F32)
        } else {
            let wv = rand_vec(seed ^ 1, n * k, 1.0);
            (tensor(&wv, &[n, k]), wv)
        };
        let (want, mag) = linear_ref(&x, &wv, bias.then_some(&b[..]), m, k, n);
        let bt = bias.then(|| tensor(&b, &[n]));
        for isa in Isa::available() {
            let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &w, bt.as_ref())).unwrap().unwrap();
            prop_assert_eq!(y.dims(), &[m, n]);
            prop_assert_eq!(y.dtype(), DType::F32);
            assert_close(&format!("linear f32 {isa} m={m} k={k} n={n}"), &y.to_vec_f32().unwrap(), &want, &mag, TOL);
        }
    }

    // `linear_into` above the GEMV rows into a buffer full of NaN (the GEMM must overwrite without
    // a bias), f32 or bf16 bias; the 3-D `linear` gives the same values.
    #[test]
    fn linear_into_f32_weights(extra in 1usize..40, k in 1usize..400, n in 1usize..70, bias in 0usize..3, seed in any::<u64>()) {
        let m = ops::MAX_GEMV_ROWS + extra;
        let x = rand_vec(seed, m * k, 1.5);
        let b: Vec<f32> = rand_vec(seed ^ 2, n, 1.0)
            .iter()
            .map(|&v| kosmos_tensor::bf16::from_f32(v).to_f32())
            .collect();
        let wv = rand_vec(seed ^ 1, n * k, 1.0);
        let w = tensor(&wv, &[n, k]);
        let bt = match bias {
            0 => None,
            1 => Some(tensor(&b, &[n])),
            _ => Some(tensor(&b, &[n]).to_dtype(DType::BF16).unwrap()),
        };
        let (want, mag) = linear_ref(&x, &wv, (bias > 0).then_some(&b[..]), m, k, n);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || ops::linear_into(&x, &w, bt.as_ref(), &mut out)).unwrap().unwrap();
            assert_close(&format!("linear_into f32 {isa}"), &out, &want, &mag, TOL);
            let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, 1, k]), &w, bt.as_ref())).unwrap().unwrap();
            prop_assert_eq!(y.dims(), &[m, 1, n]);
            // Bitwise: `linear`'s new buffer starts from the bias inside the GEMM, `linear_into`
            // adds onto bias rows written first (or, without a bias, overwrites).
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&y.to_vec_f32().unwrap()), bits(&out), "linear 3-D f32 {}", isa);
        }
    }
}

/// The KOSMOS-2 prefill and ViT shapes in miniature: 71 and 257 rows (5 x 12 + 11 and
/// 21 x 12 + 5 row blocks), k = 1030 (five K blocks, the last partial and not a multiple of 16),
/// n = 97 (a partial last panel), bias; every level matches the reference.
#[test]
fn model_sized_f32_gemm() {
    for (m, k, n) in [(71, 1030, 97), (257, 300, 70)] {
        let x = rand_vec(31, m * k, 3.0);
        let wv = rand_vec(32, n * k, 0.05);
        let w = tensor(&wv, &[n, k]);
        let b = rand_vec(33, n, 0.1);
        let (want, mag) = linear_ref(&x, &wv, Some(&b), m, k, n);
        for isa in Isa::available() {
            let y = with_isa(isa, || {
                ops::linear(&tensor(&x, &[m, k]), &w, Some(&tensor(&b, &[n])))
            })
            .unwrap()
            .unwrap();
            assert_close(
                &format!("f32 gemm {isa} {m}x{k}x{n}"),
                &y.to_vec_f32().unwrap(),
                &want,
                &mag,
                TOL,
            );
        }
    }
}

/// Exact small integers: every product and partial sum is an integer below 2²⁴, so any summation
/// order gives the exact result, and the panel GEMM must equal it bit for bit (a dropped or
/// doubled K block, panel column or row block cannot hide in a tolerance).
#[test]
fn integer_valued_gemm_is_exact() {
    let (m, k, n) = (29, 530, 45);
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
    let wv: Vec<f32> = (0..n * k).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
    let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let want: Vec<f32> = (0..m * n)
        .map(|o| {
            let (i, j) = (o / n, o % n);
            let s: i64 = (0..k)
                .map(|p| (x[i * k + p] as i64) * (wv[j * k + p] as i64))
                .sum();
            (s + j as i64) as f32
        })
        .collect();
    let w = tensor(&wv, &[n, k]);
    for isa in Isa::available() {
        let y = with_isa(isa, || {
            ops::linear(&tensor(&x, &[m, k]), &w, Some(&tensor(&b, &[n])))
        })
        .unwrap()
        .unwrap();
        assert_eq!(y.to_vec_f32().unwrap(), want, "{isa}");
    }
}
