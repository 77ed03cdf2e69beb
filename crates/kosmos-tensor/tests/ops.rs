//! Every op against a naive f64 reference, under proptest, for every dtype and every SIMD path this
//! CPU has (ops whose kernels depend on the SIMD level — linear/GEMV/bf16 GEMM, softmax, log-softmax,
//! quick GELU, attention — run once per level through `simd::with_isa`).
//!
//! Tolerances (relative to the sum of |terms| for dot products, or to |reference| otherwise):
//! f32 outputs 1e-6 (GEMM-like: 1e-6 of Σ|a·b|, sum-order differences only); bf16 / f16 weights are
//! compared with the reference on the same rounded weights (conversion is exact), so the same bound
//! applies; bf16 / f16 *outputs* add half an ulp of their format (2⁻⁸ / 2⁻¹¹).

mod support;

use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{ops, DType, Device, Error, Tensor};
use proptest::prelude::*;
use support::*;

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
const F32_TOL: f64 = 1e-6;

/// Error scale for LayerNorm: f32 inputs of magnitude M carry ~eps·M absolute error, which
/// normalisation divides by the row's std, so the bound grows with max|x| / std (conditioning).
fn ln_scale(x: &[f32], want: &[f64], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(d).enumerate() {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let cond = row.iter().fold(0f64, |m, &v| m.max((v as f64).abs())) / (var + eps).sqrt();
        for i in 0..d {
            out.push(want[r * d + i].abs() + b[i].abs() as f64 + w[i].abs() as f64 * (1.0 + cond));
        }
    }
    out
}

proptest! {
    #![proptest_config(cfg(96))]

    // linear: every weight dtype x every SIMD path; one row takes the GEMV path, more rows the GEMM.
    #[test]
    fn linear_matches_reference(m in 1usize..6, k in 1usize..90, n in 1usize..40, bias in any::<bool>(), seed in any::<u64>()) {
        let x = rand_vec(seed, m * k, 1.0);
        let b = rand_vec(seed ^ 2, n, 1.0);
        for dt in DTYPES {
            let (wt, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], dt);
            let (want, mag) = linear_ref(&x, &wv, bias.then_some(&b[..]), m, k, n);
            for isa in Isa::available() {
                let y = with_isa(isa, || ops::linear(&tensor(&x, &[m, k]), &wt, bias.then(|| tensor(&b, &[n])).as_ref())).unwrap().unwrap();
                prop_assert_eq!(y.dims(), &[m, n]);
                assert_close(&format!("linear {dt} {isa}"), &y.to_vec_f32().unwrap(), &want, &mag, F32_TOL);
            }
        }
    }

    // bf16 activations x bf16 weights (the vdpbf16ps path on AVX512_BF16), odd k, every SIMD path.
    #[test]
    fn linear_bf16_activations(m in 1usize..12, k in 1usize..70, n in 1usize..70, seed in any::<u64>()) {
        let (xt, xv) = typed(&rand_vec(seed, m * k, 1.0), &[m, k], DType::BF16);
        let (wt, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let b = rand_vec(seed ^ 2, n, 1.0);
        let (want, mag) = linear_ref(&xv, &wv, Some(&b), m, k, n);
        let scale: Vec<f64> = mag.iter().zip(&want).map(|(g, w)| g + w.abs() * output_eps(DType::BF16) / F32_TOL).collect();
        for isa in Isa::available() {
            let y = with_isa(isa, || ops::linear(&xt, &wt, Some(&tensor(&b, &[n])))).unwrap().unwrap();
            prop_assert_eq!(y.dtype(), DType::BF16);
            assert_close(&format!("linear bf16 {isa}"), &y.to_vec_f32().unwrap(), &want, &scale, F32_TOL);
        }
    }

    // linear with 3-D input and a transposed (strided) weight view.
    #[test]
    fn linear_folds_leading_dims_and_strided_weight(b0 in 1usize..3, t in 1usize..5, k in 1usize..40, n in 1usize..30, seed in any::<u64>()) {
        let x = rand_vec(seed, b0 * t * k, 1.0);
        let wt_data = rand_vec(seed ^ 1, k * n, 1.0); // stored [k, n], used as its transpose [n, k]
        let w = tensor(&wt_data, &[k, n]).transpose(0, 1).unwrap();
        let wv = w.to_vec_f32().unwrap();
        let (want, mag) = linear_ref(&x, &wv, None, b0 * t, k, n);
        let y = ops::linear(&tensor(&x, &[b0, t, k]), &w, None).unwrap();
        prop_assert_eq!(y.dims(), &[b0, t, n]);
        assert_close("linear strided", &y.to_vec_f32().unwrap(), &want, &mag, F32_TOL);
    }

    #[test]
    fn matmul_matches_reference(bs in 1usize..4, m in 1usize..20, k in 1usize..50, n in 1usize..20, tr in any::<bool>(), seed in any::<u64>()) {
        let a = rand_vec(seed, bs * m * k, 1.0);
        let bd = rand_vec(seed ^ 7, bs * k * n, 1.0);
        // rhs either contiguous [bs, k, n] or a transposed view of [bs, n, k].
        let rhs = if tr { tensor(&bd, &[bs, n, k]).transpose(1, 2).unwrap() } else { tensor(&bd, &[bs, k, n]) };
        let rv = rhs.to_vec_f32().unwrap();
        for dt in DTYPES {
            let (at, av) = typed(&a, &[bs, m, k], dt);
            let y = at.matmul(&rhs).unwrap();
            prop_assert_eq!(y.dims(), &[bs, m, n]);
            prop_assert_eq!(y.dtype(), dt);
            let got = y.to_vec_f32().unwrap();
            for i in 0..bs {
                let (want, mag) = matmul_ref(&av[i * m * k..(i + 1) * m * k], &rv[i * k * n..(i + 1) * k * n], m, k, n);
                let scale: Vec<f64> = mag.iter().zip(&want).map(|(g, w)| g + (w.abs() * output_eps(dt) + output_abs(dt)) / F32_TOL).collect();
                assert_close(&format!("matmul {dt}"), &got[i * m * n..(i + 1) * m * n], &want, &scale, F32_TOL);
            }
        }
    }

    #[test]
    fn layer_norm_matches_reference(rows in 1usize..6, d in 1usize..100, seed in any::<u64>(), shift in -3f32..3f32) {
        let x: Vec<f32> = rand_vec(seed, rows * d, 2.0).iter().map(|v| v + shift).collect();
        let w = rand_vec(seed ^ 1, d, 1.5);
        let b = rand_vec(seed ^ 2, d, 0.5);
        let r = rand_vec(seed ^ 3, rows * d, 1.0);
        let eps = 1e-5;
        for dt in DTYPES {
            let (xt, xv) = typed(&x, &[rows, d], dt);
            let want = layer_norm_ref(&xv, &w, &b, eps as f64);
            let scale = ln_scale(&xv, &want, &w, &b, eps as f64);
            let y = ops::layer_norm(&xt, &tensor(&w, &[d]), &tensor(&b, &[d]), eps).unwrap();
            let tol = F32_TOL * 4.0 + output_eps(dt);
            assert_close(&format!("layer_norm {dt}"), &y.to_vec_f32().unwrap(), &want, &scale, tol);
        }
        // fused residual add
        let sum: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
        let want = layer_norm_ref(&sum, &w, &b, eps as f64);
        let scale = ln_scale(&sum, &want, &w, &b, eps as f64);
        let (s, y) = ops::add_layer_norm(&tensor(&x, &[rows, d]), &tensor(&r, &[rows, d]), &tensor(&w, &[d]), &tensor(&b, &[d]), eps).unwrap();
        prop_assert_eq!(s.to_vec_f32().unwrap(), sum);
        assert_close("add_layer_norm", &y.to_vec_f32().unwrap(), &want, &scale, F32_TOL * 4.0);
    }

    #[test]
    fn softmax_family_matches_reference(rows in 1usize..5, d in 1usize..80, seed in any::<u64>(), amp in 0.1f32..20.0) {
        let x = rand_vec(seed, rows * d, amp);
        for dt in DTYPES {
            let (xt, xv) = typed(&x, &[rows, d], dt);
            let want = softmax_ref(&xv, d);
            for isa in Isa::available() {
                let got = with_isa(isa, || ops::softmax_last_dim(&xt)).unwrap().unwrap().to_vec_f32().unwrap();
                let scale: Vec<f64> = want.iter().map(|w| w.abs() + 1e-4).collect();
                assert_close(&format!("softmax {dt} {isa}"), &got, &want, &scale, 4.0 * F32_TOL + output_eps(dt));
            }
            let got = ops::softmax_last_dim(&xt).unwrap().to_vec_f32().unwrap();
            // The absolute floor covers f16's subnormal spacing for tiny probabilities.
            let scale: Vec<f64> = want.iter().map(|w| w.abs() + 1e-4).collect();
            assert_close(&format!("softmax {dt}"), &got, &want, &scale, 4.0 * F32_TOL + output_eps(dt));
            let want = log_softmax_ref(&xv, d);
            let scale: Vec<f64> = want.iter().map(|w| w.abs() + amp as f64).collect();
            for isa in Isa::available() {
                let got = with_isa(isa, || ops::log_softmax_last_dim(&xt)).unwrap().unwrap().to_vec_f32().unwrap();
                assert_close(&format!("log_softmax {dt} {isa}"), &got, &want, &scale, 2.0 * F32_TOL + output_eps(dt));
            }
            let got = ops::log_softmax_last_dim(&xt).unwrap().to_vec_f32().unwrap();
            assert_close(&format!("log_softmax {dt}"), &got, &want, &scale, 2.0 * F32_TOL + output_eps(dt));
        }
    }

    #[test]
    fn activations_match_reference(n in 1usize..300, seed in any::<u64>(), amp in 0.1f32..12.0) {
        let x = rand_vec(seed, n, amp);
        for dt in DTYPES {
            let (xt, xv) = typed(&x, &[n], dt);
            let gelu: Vec<f64> = xv.iter().map(|&v| { let v = v as f64; 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)) }).collect();
            // Near x << 0, 1 + erf cancels in f32 exactly as in torch: allow ~1 ulp of |x|.
            let tol = 2.0 * F32_TOL + output_eps(dt);
            let floor = output_abs(dt) / tol;
            let scale: Vec<f64> = gelu.iter().zip(&xv).map(|(g, &v)| g.abs() + 0.2 * (v as f64).abs() + floor).collect();
            let got = ops::gelu_erf(&xt).unwrap().to_vec_f32().unwrap();
            assert_close(&format!("gelu {dt}"), &got, &gelu, &scale, 2.0 * F32_TOL + output_eps(dt));
            let qg: Vec<f64> = xv.iter().map(|&v| { let v = v as f64; v / (1.0 + (-1.702 * v).exp()) }).collect();
            let scale: Vec<f64> = qg.iter().zip(&xv).map(|(g, &v)| g.abs() + 0.1 * (v as f64).abs() + floor).collect();
            for isa in Isa::available() {
                let got = with_isa(isa, || ops::quick_gelu(&xt)).unwrap().unwrap().to_vec_f32().unwrap();
                assert_close(&format!("quick_gelu {dt} {isa}"), &got, &qg, &scale, 2.0 * F32_TOL + output_eps(dt));
            }
            let got = ops::quick_gelu(&xt).unwrap().to_vec_f32().unwrap();
            assert_close(&format!("quick_gelu {dt}"), &got, &qg, &scale, 2.0 * F32_TOL + output_eps(dt));
        }
    }

    #[test]
    fn l2_normalize_matches_reference(rows in 1usize..5, d in 1usize..70, seed in any::<u64>()) {
        let x = rand_vec(seed, rows * d, 3.0);
        let eps = 1e-12f32;
        let want: Vec<f64> = x.chunks(d).flat_map(|r| {
            let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt().max(eps as f64);
            r.iter().map(move |&v| v as f64 / norm).collect::<Vec<_>>()
        }).collect();
        let got = ops::l2_normalize_last_dim(&tensor(&x, &[rows, d]), eps).unwrap().to_vec_f32().unwrap();
        let scale = vec![1.0; want.len()];
        assert_close("l2_normalize", &got, &want, &scale, 2.0 * F32_TOL);
        for dt in [DType::BF16, DType::F16] {
            let (xt, xv) = typed(&x, &[rows, d], dt);
            let want: Vec<f64> = xv.chunks(d).flat_map(|r| {
                let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt().max(eps as f64);
                r.iter().map(move |&v| v as f64 / norm).collect::<Vec<_>>()
            }).collect();
            let got = ops::l2_normalize_last_dim(&xt, eps).unwrap().to_vec_f32().unwrap();
            assert_close(&format!("l2_normalize {dt}"), &got, &want, &scale, 2.0 * F32_TOL + output_eps(dt));
        }
    }

    #[test]
    fn attention_matches_reference(b in 1usize..3, h in 1usize..4, tq in 1usize..9, tk in 1usize..12, hd in 1usize..20,
                                   use_mask in any::<bool>(), per_batch in any::<bool>(), strided in any::<bool>(), seed in any::<u64>()) {
        let q = rand_vec(seed, b * h * tq * hd, 1.0);
        let k = rand_vec(seed ^ 1, b * h * tk * hd, 1.0);
        let v = rand_vec(seed ^ 2, b * h * tk * hd, 1.0);
        let mb = if per_batch { b } else { 1 };
        // Large negative entries as HF masks use (never the first key, so no row is fully masked).
        let mask: Vec<f32> = rand_vec(seed ^ 3, mb * tq * tk, 1.0).iter().enumerate()
            .map(|(i, &m)| if m > 0.3 && i % tk != 0 { -1e9 } else { m }).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let (want_o, want_p) = attention_ref(&q, &k, &v, use_mask.then_some((&mask[..], per_batch)), (b, h, tq, tk, hd), scale);
        // Strided: build [B, T, H, hd] buffers and view them as [B, H, T, hd] (as the model does).
        let make = |data: &[f32], t: usize| -> Tensor {
            if strided {
                let bthd = tensor(data, &[b, h, t, hd]).transpose(1, 2).unwrap().contiguous().unwrap();
                bthd.transpose(1, 2).unwrap()
            } else {
                tensor(data, &[b, h, t, hd])
            }
        };
        let (qt, kt, vt) = (make(&q, tq), make(&k, tk), make(&v, tk));
        let mt = tensor(&mask, &[mb, 1, tq, tk]);
        for isa in Isa::available() {
            let (o, p) = with_isa(isa, || ops::attention_with_probs(&qt, &kt, &vt, use_mask.then_some(&mt), scale)).unwrap().unwrap();
            let ones = vec![1.0; want_o.len()];
            assert_close(&format!("attention out {isa}"), &o.to_vec_f32().unwrap(), &want_o, &ones, 4.0 * F32_TOL * (tk as f64).sqrt());
            let ones = vec![1.0; want_p.len()];
            assert_close(&format!("attention probs {isa}"), &p.to_vec_f32().unwrap(), &want_p, &ones, 4.0 * F32_TOL);
        }
        let (o, p) = ops::attention_with_probs(&qt, &kt, &vt, use_mask.then_some(&mt), scale).unwrap();
        let o2 = ops::attention(&qt, &kt, &vt, use_mask.then_some(&mt), scale).unwrap();
        prop_assert_eq!(o.to_vec_f32().unwrap(), o2.to_vec_f32().unwrap());
        let ones = vec![1.0; want_o.len()];
        assert_close("attention out", &o.to_vec_f32().unwrap(), &want_o, &ones, 4.0 * F32_TOL * (tk as f64).sqrt());
        let ones = vec![1.0; want_p.len()];
        assert_close("attention probs", &p.to_vec_f32().unwrap(), &want_p, &ones, 4.0 * F32_TOL);
        // bf16 / f16 inputs: reference on the rounded inputs, output rounded to the input dtype.
        for dt in [DType::BF16, DType::F16] {
            let (qh, kh, vh) = (qt.to_dtype(dt).unwrap(), kt.to_dtype(dt).unwrap(), vt.to_dtype(dt).unwrap());
            let r = |t: &Tensor| t.to_vec_f32().unwrap();
            let (want_o, _) = attention_ref(&r(&qh), &r(&kh), &r(&vh), use_mask.then_some((&mask[..], per_batch)), (b, h, tq, tk, hd), scale);
            let o = ops::attention(&qh, &kh, &vh, use_mask.then_some(&mt), scale).unwrap();
            prop_assert_eq!(o.dtype(), dt);
            let scale_o: Vec<f64> = want_o.iter().map(|w| 1.0 + w.abs() * output_eps(dt) / F32_TOL).collect();
            assert_close(&format!("attention {dt}"), &o.to_vec_f32().unwrap(), &want_o, &scale_o, 4.0 * F32_TOL * (tk as f64).sqrt());
        }
    }

    #[test]
    fn patchify_conv_matches_reference(b in 1usize..3, c in 1usize..4, p in 1usize..5, gh in 1usize..4, gw in 1usize..4, o in 1usize..9, seed in any::<u64>()) {
        let (hh, ww) = (gh * p, gw * p);
        let x = rand_vec(seed, b * c * hh * ww, 1.0);
        let dt = [DType::F32, DType::BF16, DType::F16][(seed % 3) as usize];
        let (wt, w) = typed(&rand_vec(seed ^ 1, o * c * p * p, 1.0), &[o, c, p, p], dt);
        let y = ops::patchify_conv(&tensor(&x, &[b, c, hh, ww]), &wt, p).unwrap();
        prop_assert_eq!(y.dims(), &[b, gh * gw, o]);
        prop_assert_eq!(y.dtype(), DType::F32);
        let got = y.to_vec_f32().unwrap();
        // bf16 weights with more than 16 patch rows (`MAX_GEMV_ROWS`) take the bf16 GEMM, which
        // rounds the activations (the patches) to bf16 first, as HF bf16 does (issue 8).
        let x: Vec<f32> = if dt == DType::BF16 && b * gh * gw > 16 {
            x.iter().map(|&v| kosmos_tensor::bf16::from_f32(v).to_f32()).collect()
        } else {
            x
        };
        for bi in 0..b { for py in 0..gh { for px in 0..gw { for oi in 0..o {
            let (mut s, mut g) = (0f64, 0f64);
            for ci in 0..c { for i in 0..p { for j in 0..p {
                let xv = x[((bi * c + ci) * hh + py * p + i) * ww + px * p + j] as f64;
                let t = xv * w[((oi * c + ci) * p + i) * p + j] as f64;
                s += t; g += t.abs();
            }}}
            let idx = (bi * gh * gw + py * gw + px) * o + oi;
            prop_assert!((got[idx] as f64 - s).abs() <= F32_TOL * g + 1e-30, "conv {} vs {}", got[idx], s);
        }}}}
    }

    #[test]
    fn argmax_and_top_k_match_sorting(rows in 1usize..4, d in 1usize..60, k in 1usize..10, seed in any::<u64>()) {
        // Quantised values so ties happen.
        let x: Vec<f32> = rand_vec(seed, rows * d, 4.0).iter().map(|v| v.round()).collect();
        let t = tensor(&x, &[rows, d]);
        let am = ops::argmax_last_dim(&t).unwrap();
        let k = k.min(d);
        let tk = ops::top_k_last_dim(&t, k).unwrap();
        for (r, row) in x.chunks(d).enumerate() {
            let mut idx: Vec<usize> = (0..d).collect();
            idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
            prop_assert_eq!(am[r] as usize, idx[0]);
            let want: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i as u32, row[i])).collect();
            prop_assert_eq!(&tk[r], &want);
        }
    }

    #[test]
    fn embedding_gathers_rows(v in 1usize..30, d in 1usize..20, n in 1usize..10, seed in any::<u64>()) {
        let table = rand_vec(seed, v * d, 1.0);
        let ids: Vec<u32> = rand_vec(seed ^ 5, n, 1.0).iter().map(|r| ((r + 1.0) * 0.5 * v as f32) as u32 % v as u32).collect();
        for dt in DTYPES {
            let (tt, tv) = typed(&table, &[v, d], dt);
            let e = ops::embedding(&ids, &tt).unwrap();
            prop_assert_eq!(e.dims(), &[n, d]);
            prop_assert_eq!(e.dtype(), dt);
            let want: Vec<f32> = ids.iter().flat_map(|&i| tv[i as usize * d..(i as usize + 1) * d].to_vec()).collect();
            prop_assert_eq!(e.to_vec_f32().unwrap(), want);
        }
    }
}

#[test]
fn empty_and_bad_inputs_are_rejected() {
    let cpu = Device::Cpu;
    let empty = Tensor::zeros(&[0, 4], DType::F32, &cpu).unwrap();
    let w = Tensor::zeros(&[3, 4], DType::F32, &cpu).unwrap();
    let v4 = Tensor::zeros(&[4], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::linear(&empty, &w, None),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        ops::layer_norm(&empty, &v4, &v4, 1e-5),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        ops::softmax_last_dim(&empty),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(ops::gelu_erf(&empty), Err(Error::Empty { .. })));
    assert!(matches!(
        ops::argmax_last_dim(&empty),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(ops::embedding(&[], &w), Err(Error::Empty { .. })));
    assert!(matches!(
        ops::embedding(&[3], &w),
        Err(Error::IndexOutOfRange {
            index: 3,
            size: 3,
            ..
        })
    ));
    assert!(matches!(empty.matmul(&w), Err(Error::ShapeMismatch { .. })));
    let x = Tensor::zeros(&[2, 5], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::linear(&x, &w, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ops::top_k_last_dim(&w, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        ops::top_k_last_dim(&w, 5),
        Err(Error::InvalidArgument { .. })
    ));
    let img = Tensor::zeros(&[1, 3, 10, 10], DType::F32, &cpu).unwrap();
    let pw = Tensor::zeros(&[2, 3, 3, 3], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::patchify_conv(&img, &pw, 3),
        Err(Error::InvalidArgument { .. })
    ));
    let q = Tensor::zeros(&[1, 2, 3, 4], DType::F32, &cpu).unwrap();
    let bad_mask = Tensor::zeros(&[1, 1, 3, 5], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::attention(&q, &q, &q, Some(&bad_mask), 1.0),
        Err(Error::ShapeMismatch { .. })
    ));
    let kv_empty = Tensor::zeros(&[1, 2, 0, 4], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::attention(&q, &kv_empty, &kv_empty, None, 1.0),
        Err(Error::Empty { .. })
    ));
}

#[test]
fn gemv_large_rows_every_path_and_dtype() {
    // Wide enough to use the rayon split and every SIMD main loop + tail.
    let (k, n) = (1037, 515);
    let x = rand_vec(11, k, 1.0);
    let b = rand_vec(12, n, 1.0);
    for dt in DTYPES {
        let (wt, wv) = typed(&rand_vec(13, n * k, 1.0), &[n, k], dt);
        let (want, mag) = linear_ref(&x, &wv, Some(&b), 1, k, n);
        for isa in Isa::available() {
            let y = with_isa(isa, || {
                ops::linear(&tensor(&x, &[1, 1, k]), &wt, Some(&tensor(&b, &[n])))
            })
            .unwrap()
            .unwrap();
            assert_eq!(y.dims(), &[1, 1, n]);
            assert_close(
                &format!("gemv {dt} {isa}"),
                &y.to_vec_f32().unwrap(),
                &want,
                &mag,
                F32_TOL,
            );
        }
    }
}

#[test]
fn matmul_broadcasts_a_2d_rhs() {
    let (bs, m, k, n) = (3, 5, 7, 4);
    let a = rand_vec(31, bs * m * k, 1.0);
    let b = rand_vec(32, k * n, 1.0);
    let y = tensor(&a, &[bs, m, k])
        .matmul(&tensor(&b, &[k, n]))
        .unwrap();
    assert_eq!(y.dims(), &[bs, m, n]);
    let got = y.to_vec_f32().unwrap();
    for i in 0..bs {
        let (want, mag) = matmul_ref(&a[i * m * k..(i + 1) * m * k], &b, m, k, n);
        assert_close(
            "matmul 2d rhs",
            &got[i * m * n..(i + 1) * m * n],
            &want,
            &mag,
            F32_TOL,
        );
    }
    let bad = tensor(&b, &[k, n]).matmul(&tensor(&a, &[bs, m, k]));
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })));
}

#[test]
fn half_weight_gemm_spans_several_panels() {
    // k = 1000 gives ~1056-row conversion panels: 1100 outputs need two, the second one partial.
    let (m, k, n) = (3, 1000, 1100);
    let x = rand_vec(21, m * k, 1.0);
    let b = rand_vec(22, n, 1.0);
    for dt in [DType::BF16, DType::F16] {
        let (wt, wv) = typed(&rand_vec(23, n * k, 1.0), &[n, k], dt);
        let (want, mag) = linear_ref(&x, &wv, Some(&b), m, k, n);
        let y = ops::linear(&tensor(&x, &[m, k]), &wt, Some(&tensor(&b, &[n]))).unwrap();
        assert_close(
            &format!("gemm {dt}"),
            &y.to_vec_f32().unwrap(),
            &want,
            &mag,
            F32_TOL,
        );
    }
}

#[test]
fn gelu_matches_torch_values() {
    // torch.nn.functional.gelu(torch.tensor([...])) in float32.
    let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
    let want = [
        -0.0040496886f32,
        -0.15865526,
        -0.15426877,
        0.0,
        0.34573123,
        0.8413447,
        2.9959502,
    ];
    let got = ops::gelu_erf(&tensor(&x, &[7]))
        .unwrap()
        .to_vec_f32()
        .unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 2.0 * f32::EPSILON * w.abs().max(1e-3),
            "{g} vs {w}"
        );
    }
}

/// Heads of the vision tower's size (257 tokens, 64 dims, `[B, T, H, hd]` views as the model
/// makes them, with a mask), on every level against the f64 reference.
#[test]
fn attention_on_vision_sized_heads_matches_reference() {
    let (b, h, t, hd) = (1, 2, 257, 64);
    let data = |seed| rand_vec(seed, b * h * t * hd, 1.0);
    let (q, k, v) = (data(1), data(2), data(3));
    let mask: Vec<f32> = rand_vec(4, t * t, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &m)| if m > 0.5 && i % t != 0 { -1e9 } else { m })
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let (want_o, want_p) = attention_ref(
        &q,
        &k,
        &v,
        Some((&mask[..], false)),
        (b, h, t, t, hd),
        scale,
    );
    let view = |d: &[f32]| heads_view(d, (b, h, t, hd));
    let (qt, kt, vt) = (view(&q), view(&k), view(&v));
    let mt = tensor(&mask, &[1, 1, t, t]);
    for isa in Isa::available() {
        let (o, p) = with_isa(isa, || {
            ops::attention_with_probs(&qt, &kt, &vt, Some(&mt), scale)
        })
        .unwrap()
        .unwrap();
        let ones = vec![1.0; want_o.len()];
        let tol = 4.0 * F32_TOL * (t as f64).sqrt();
        assert_close(
            &format!("out {isa}"),
            &o.to_vec_f32().unwrap(),
            &want_o,
            &ones,
            tol,
        );
        let ones = vec![1.0; want_p.len()];
        assert_close(
            &format!("probs {isa}"),
            &p.to_vec_f32().unwrap(),
            &want_p,
            &ones,
            4.0 * F32_TOL,
        );
    }
}
