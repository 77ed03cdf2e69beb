//! GPU vs CPU parity of the row-wise and elementwise kernels (f32, bf16, f16), on random data,
//! with outputs poisoned before each launch. Skips (with a line) without a GPU; fails instead
//! under `KOSMOS2_REQUIRE_GPU=1`.
#![cfg(feature = "cuda")]

#[path = "cuda_support/mod.rs"]
mod support;

use kosmos_tensor::cuda::{Activation, CudaBackend, CudaElement, ModuleOrigin, ScoreMask};
use kosmos_tensor::{bf16, f16, ops, DType};
use support::*;

macro_rules! all_dtypes {
    ($f:ident, $be:expr) => {
        $f::<f32>(&$be);
        $f::<bf16>(&$be);
        $f::<f16>(&$be);
    };
}

#[test]
fn no_gpu_is_a_typed_error_not_a_panic() {
    match CudaBackend::device_count() {
        Err(e) => {
            assert!(is_absent(&e), "unexpected error {e}");
            let err = CudaBackend::new(0).expect_err("no driver, yet a backend opened");
            assert!(is_absent(&err), "unexpected error {err}");
            assert!(!CudaBackend::is_available(0));
        }
        Ok(n) => {
            let err = CudaBackend::new(n + 3).expect_err("opened a device that does not exist");
            assert!(
                matches!(err, kosmos_tensor::cuda::CudaError::NoDevice { .. }),
                "{err}"
            );
        }
    }
}

#[test]
fn embedded_ptx_loads_without_the_nvrtc_fallback() {
    let Some(be) = backend("embedded_ptx_loads_without_the_nvrtc_fallback") else {
        return;
    };
    if std::env::var("KOSMOS2_CUDA_FORCE_NVRTC").is_ok_and(|v| v == "1") {
        return;
    }
    for (m, origin) in be.preload().expect("loading every module") {
        assert_eq!(origin, ModuleOrigin::EmbeddedPtx, "{m:?} needed NVRTC");
    }
    eprintln!("device: {:?}", be.info());
}

fn check_layer_norm<T: CudaElement>(be: &CudaBackend) {
    for (rows, cols) in [(7, 1), (5, 33), (3, 2048), (2, 8192)] {
        let x = rand_vec(1, rows * cols, 3.0);
        let r = rand_vec(2, rows * cols, 1.0);
        let w = rand_vec(3, cols, 1.5);
        let b = rand_vec(4, cols, 0.5);
        let d = T::DTYPE;
        let (xt, rt) = (cpu(&x, &[rows, cols], d), cpu(&r, &[rows, cols], d));
        let (wt, bt) = (cpu(&w, &[cols], d), cpu(&b, &[cols], d));
        let want = ops::layer_norm(&xt, &wt, &bt, 1e-5).unwrap();
        let (xg, rg, wg, bg) = (
            up::<T>(be, &x),
            up::<T>(be, &r),
            up::<T>(be, &w),
            up::<T>(be, &b),
        );
        let mut y = poisoned::<T>(be, rows * cols);
        be.layer_norm(&xg, &wg, &bg, &mut y, rows, cols, 1e-5)
            .unwrap();
        let what = format!("layer_norm {rows}x{cols}");
        assert_close::<T>(&what, &down(be, &y), &want.to_vec_f32().unwrap(), 1.0);

        // Fused residual: CPU normalises the f32 sum; the GPU the sum rounded to T (as HF).
        let (sum_want, norm_want) = ops::add_layer_norm(&xt, &rt, &wt, &bt, 1e-5).unwrap();
        let mut s = poisoned::<T>(be, rows * cols);
        let mut y = poisoned::<T>(be, rows * cols);
        be.add_layer_norm(&xg, &rg, &wg, &bg, &mut s, &mut y, rows, cols, 1e-5)
            .unwrap();
        let what = format!("add_layer_norm {rows}x{cols}");
        assert_close::<T>(&what, &down(be, &s), &sum_want.to_vec_f32().unwrap(), 0.5);
        assert_close::<T>(&what, &down(be, &y), &norm_want.to_vec_f32().unwrap(), 2.0);

        let mut resid = up::<T>(be, &r);
        let mut y2 = poisoned::<T>(be, rows * cols);
        be.add_layer_norm_inplace(&xg, &mut resid, &wg, &bg, &mut y2, rows, cols, 1e-5)
            .unwrap();
        assert_eq!(down(be, &resid), down(be, &s), "in-place sum differs");
        assert_eq!(down(be, &y2), down(be, &y), "in-place norm differs");

        let want = ops::l2_normalize_last_dim(&xt, 1e-12).unwrap();
        let mut y = poisoned::<T>(be, rows * cols);
        be.l2_normalize(&xg, &mut y, rows, cols, 1e-12).unwrap();
        let what = format!("l2_normalize {rows}x{cols}");
        assert_close::<T>(&what, &down(be, &y), &want.to_vec_f32().unwrap(), 1.0);
    }
}

#[test]
fn norms_match_the_cpu() {
    let Some(be) = backend("norms_match_the_cpu") else {
        return;
    };
    all_dtypes!(check_layer_norm, be);
}

fn check_softmax<T: CudaElement>(be: &CudaBackend) {
    let d = T::DTYPE;
    for (rows, cols) in [(4, 1), (6, 77), (2, 65037)] {
        let mut x = rand_vec(5, rows * cols, 8.0);
        if cols > 1 {
            // One row of -inf (softmax gives zeros), one with a single -inf.
            x[..cols].fill(f32::NEG_INFINITY);
            x[cols] = f32::NEG_INFINITY;
        }
        let xt = cpu(&x, &[rows, cols], d);
        let xg = up::<T>(be, &x);
        let mut y = poisoned::<T>(be, rows * cols);
        be.softmax(&xg, &mut y, rows, cols).unwrap();
        let want = ops::softmax_last_dim(&xt).unwrap().to_vec_f32().unwrap();
        assert_close::<T>(&format!("softmax {rows}x{cols}"), &down(be, &y), &want, 1.0);

        let mut y = poisoned::<T>(be, rows * cols);
        be.log_softmax(&xg, &mut y, rows, cols).unwrap();
        let want = ops::log_softmax_last_dim(&xt)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let got = down(be, &y);
        // -inf entries stay -inf on both sides; compare the finite ones.
        let (g, w): (Vec<f32>, Vec<f32>) = got
            .iter()
            .zip(&want)
            .filter(|(_, w)| w.is_finite())
            .map(|(&g, &w)| (g, w))
            .unzip();
        assert_close::<T>(&format!("log_softmax {rows}x{cols}"), &g, &w, 1.0);
    }
}

#[test]
fn softmax_matches_the_cpu() {
    let Some(be) = backend("softmax_matches_the_cpu") else {
        return;
    };
    all_dtypes!(check_softmax, be);
}

fn check_scale_mask_softmax<T: CudaElement>(be: &CudaBackend) {
    let (b, h, q, k) = (2, 3, 5, 9);
    let d = T::DTYPE;
    let x = rand_vec(6, b * h * q * k, 4.0);
    let mut mask = vec![0f32; b * q * k];
    let neg = f32::MIN;
    for bi in 0..b {
        for qi in 0..q {
            for ki in 0..k {
                // causal (offset k - q) plus two left pads in batch row 1
                let causal = ki > qi + (k - q);
                let pad = bi == 1 && ki < 2;
                mask[(bi * q + qi) * k + ki] =
                    if causal { neg } else { 0.0 } + if pad { neg } else { 0.0 };
            }
        }
    }
    let scale = 0.37f32;
    let scores = cpu(&x, &[b, h, q, k], d)
        .to_dtype(DType::F32)
        .unwrap()
        .scale(scale)
        .unwrap();
    let mut want = Vec::new();
    let sv = scores.to_vec_f32().unwrap();
    for bi in 0..b {
        for hi in 0..h {
            for qi in 0..q {
                let row: Vec<f32> = (0..k)
                    .map(|ki| sv[((bi * h + hi) * q + qi) * k + ki] + mask[(bi * q + qi) * k + ki])
                    .collect();
                let t = cpu(&row, &[k], DType::F32);
                want.extend(ops::softmax_last_dim(&t).unwrap().to_vec_f32().unwrap());
            }
        }
    }
    let xg = up::<T>(be, &x);
    let mg = up::<f32>(be, &mask);
    let mut y = poisoned::<T>(be, x.len());
    let m = ScoreMask {
        values: &mg,
        batch: b,
    };
    be.scale_mask_softmax(&xg, &mut y, Some(m), b, h, q, k, scale)
        .unwrap();
    assert_close::<T>("scale_mask_softmax", &down(be, &y), &want, 1.0);
}

#[test]
fn attention_probabilities_match_the_cpu() {
    let Some(be) = backend("attention_probabilities_match_the_cpu") else {
        return;
    };
    all_dtypes!(check_scale_mask_softmax, be);
}

fn check_elementwise<T: CudaElement>(be: &CudaBackend) {
    let d = T::DTYPE;
    let (rows, cols) = (9, 130);
    let n = rows * cols;
    let x = rand_vec(7, n, 6.0);
    let bias = rand_vec(8, cols, 1.0);
    let r = rand_vec(9, n, 2.0);
    let xt = cpu(&x, &[rows, cols], d);
    let xg = up::<T>(be, &x);

    let mut y = poisoned::<T>(be, n);
    be.gelu_erf(&xg, &mut y, n).unwrap();
    let want = ops::gelu_erf(&xt).unwrap().to_vec_f32().unwrap();
    assert_close::<T>("gelu_erf", &down(be, &y), &want, 1.0);

    let mut y = poisoned::<T>(be, n);
    be.quick_gelu(&xg, &mut y, n).unwrap();
    let want = ops::quick_gelu(&xt).unwrap().to_vec_f32().unwrap();
    assert_close::<T>("quick_gelu", &down(be, &y), &want, 1.0);

    // Epilogues: reference from rounded inputs in f64.
    let xr: Vec<f32> = x.iter().map(|&v| T::from_f32(v).to_f32()).collect();
    let br: Vec<f32> = bias.iter().map(|&v| T::from_f32(v).to_f32()).collect();
    let rr: Vec<f32> = r.iter().map(|&v| T::from_f32(v).to_f32()).collect();
    let bg = up::<T>(be, &bias);
    for act in [Activation::None, Activation::GeluErf, Activation::QuickGelu] {
        let mut y = up::<T>(be, &x);
        be.bias_act(&mut y, &bg, rows, cols, act).unwrap();
        let pre: Vec<f32> = (0..n).map(|i| xr[i] + br[i % cols]).collect();
        let pre_t = cpu(&pre, &[rows, cols], DType::F32);
        let want = match act {
            Activation::None => pre.clone(),
            Activation::GeluErf => ops::gelu_erf(&pre_t).unwrap().to_vec_f32().unwrap(),
            Activation::QuickGelu => ops::quick_gelu(&pre_t).unwrap().to_vec_f32().unwrap(),
        };
        assert_close::<T>(&format!("bias_act {act:?}"), &down(be, &y), &want, 1.0);
    }
    let mut res = up::<T>(be, &r);
    be.bias_residual(&xg, Some(&bg), &mut res, rows, cols)
        .unwrap();
    let want: Vec<f32> = (0..n)
        .map(|i| rr[i] + T::from_f32(xr[i] + br[i % cols]).to_f32())
        .collect();
    assert_close::<T>("bias_residual", &down(be, &res), &want, 1.0);
    let mut res = up::<T>(be, &r);
    be.bias_residual(&xg, None, &mut res, rows, cols).unwrap();
    let want: Vec<f32> = (0..n).map(|i| rr[i] + xr[i]).collect();
    assert_close::<T>("residual", &down(be, &res), &want, 1.0);

    let mut y = poisoned::<T>(be, n);
    be.add(&xg, &bg, &mut y, n, cols).unwrap();
    let want = xt
        .add(&cpu(&bias, &[cols], d))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_close::<T>("add", &down(be, &y), &want, 1.0);
    let mut y = poisoned::<T>(be, n);
    be.mul(&xg, &bg, &mut y, n, cols).unwrap();
    let want = xt
        .mul(&cpu(&bias, &[cols], d))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_close::<T>("mul", &down(be, &y), &want, 1.0);
    let mut y = poisoned::<T>(be, n);
    be.scale(&xg, &mut y, n, 45.254833).unwrap();
    let want = xt.scale(45.254833).unwrap().to_vec_f32().unwrap();
    assert_close::<T>("scale", &down(be, &y), &want, 1.0);
    assert!(
        be.add(&xg, &bg, &mut y, n, cols + 1).is_err(),
        "bad broadcast accepted"
    );

    let mut y = poisoned::<T>(be, n);
    be.fill(&mut y, n, 0.75).unwrap();
    assert!(down(be, &y).iter().all(|&v| v == 0.75));
}

#[test]
fn elementwise_ops_match_the_cpu() {
    let Some(be) = backend("elementwise_ops_match_the_cpu") else {
        return;
    };
    all_dtypes!(check_elementwise, be);
}

fn check_convert<T: CudaElement, U: CudaElement>(be: &CudaBackend) {
    let mut x = rand_vec(10, 4000, 70000.0);
    x.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-30,
        -3.0e-8,
        65504.0,
        65520.0,
    ]);
    let n = x.len();
    let xg = up::<T>(be, &x);
    let mut y = be.zeros::<U>(n).unwrap();
    be.convert(&xg, &mut y, n).unwrap();
    let got: Vec<U> = be.dtoh(&y).unwrap();
    for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
        let want = U::from_f32(T::from_f32(v).to_f32());
        assert_eq!(
            g.to_f32().to_bits(),
            want.to_f32().to_bits(),
            "convert {}->{} element {i} ({v})",
            T::SUFFIX,
            U::SUFFIX
        );
    }
}

#[test]
fn conversion_is_bit_exact_with_half() {
    let Some(be) = backend("conversion_is_bit_exact_with_half") else {
        return;
    };
    check_convert::<f32, bf16>(&be);
    check_convert::<f32, f16>(&be);
    check_convert::<bf16, f32>(&be);
    check_convert::<f16, f32>(&be);
    check_convert::<bf16, f16>(&be);
    check_convert::<f16, bf16>(&be);
    check_convert::<f32, f32>(&be);
}

#[test]
fn strided_copy_makes_views_contiguous() {
    let Some(be) = backend("strided_copy_makes_views_contiguous") else {
        return;
    };
    // [2, 3, 4] transposed to [4, 3, 2] (strides 1, 4, 12), then a narrowed broadcast view.
    let x: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let xg = up::<f32>(&be, &x);
    let mut y = poisoned::<f32>(&be, 24);
    be.copy_strided(&xg, &mut y, &[4, 3, 2], &[1, 4, 12], 0)
        .unwrap();
    let mut want = Vec::new();
    for i in 0..4 {
        for j in 0..3 {
            for k in 0..2 {
                want.push((k * 12 + j * 4 + i) as f32);
            }
        }
    }
    assert_eq!(down(&be, &y), want);
    let mut y = poisoned::<f32>(&be, 6);
    be.copy_strided(&xg, &mut y, &[2, 3], &[0, 1], 5).unwrap();
    assert_eq!(down(&be, &y), vec![5.0, 6.0, 7.0, 5.0, 6.0, 7.0]);
    assert!(
        be.copy_strided(&xg, &mut y, &[2, 3], &[12, 5], 5).is_err(),
        "out-of-range view accepted"
    );
}

#[test]
fn nvrtc_fallback_compiles_every_module() {
    let Some(be) = backend("nvrtc_fallback_compiles_every_module") else {
        return;
    };
    let nv = match CudaBackend::open(0, true) {
        Ok(b) => b,
        Err(e) => panic!("opening with NVRTC: {e}"),
    };
    match nv.preload() {
        Ok(origins) => {
            assert!(origins.iter().all(|(_, o)| *o == ModuleOrigin::Nvrtc));
        }
        Err(kosmos_tensor::cuda::CudaError::LibraryMissing { lib }) => {
            eprintln!("skipping the NVRTC run: {lib} is not installed");
            return;
        }
        Err(e) => panic!("NVRTC: {e}"),
    }
    let (rows, cols) = (3, 1000);
    let x = rand_vec(11, rows * cols, 2.0);
    let (w, b) = (rand_vec(12, cols, 1.0), rand_vec(13, cols, 1.0));
    let run = |be: &CudaBackend| {
        let (xg, wg, bg) = (up::<bf16>(be, &x), up::<bf16>(be, &w), up::<bf16>(be, &b));
        let mut y = poisoned::<bf16>(be, rows * cols);
        be.layer_norm(&xg, &wg, &bg, &mut y, rows, cols, 1e-5)
            .unwrap();
        down(be, &y)
    };
    assert_close::<bf16>("nvrtc layer_norm", &run(&nv), &run(&be), 0.1);
}
