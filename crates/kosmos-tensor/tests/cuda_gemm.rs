//! cuBLAS GEMM vs references: row-major semantics with every transpose combination, batched
//! with broadcast operands, bf16/f16 inputs with f32 accumulation (f32 or 16-bit output), and
//! nn.Linear with its fused bias/activation epilogue.
#![cfg(feature = "cuda")]

#[path = "cuda_support/mod.rs"]
mod support;

use kosmos_tensor::cuda::{Activation, CudaBackend, CudaElement, GemmShape};
use kosmos_tensor::{bf16, f16, ops, DType};
use support::*;

/// f64 reference of the row-major batched product, from the values as stored in `T`.
fn reference<T: CudaElement>(s: &GemmShape, a: &[f32], b: &[f32]) -> Vec<f32> {
    let r = |v: f32| T::from_f32(v).to_f32() as f64;
    let mut c = vec![0f32; s.batch * s.m * s.n];
    for bi in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0f64;
                for p in 0..s.k {
                    let av = if s.trans_a {
                        a[bi * s.stride_a + p * s.m + i]
                    } else {
                        a[bi * s.stride_a + i * s.k + p]
                    };
                    let bv = if s.trans_b {
                        b[bi * s.stride_b + j * s.k + p]
                    } else {
                        b[bi * s.stride_b + p * s.n + j]
                    };
                    acc += r(av) * r(bv);
                }
                c[bi * s.stride_c + i * s.n + j] = acc as f32;
            }
        }
    }
    c
}

fn check_gemm<T: CudaElement, C: CudaElement>(be: &CudaBackend, s: GemmShape, seed: u64) {
    let a_len = (s.batch - 1) * s.stride_a + s.m * s.k;
    let b_len = (s.batch - 1) * s.stride_b + s.k * s.n;
    let a = rand_vec(seed, a_len, 1.0);
    let b = rand_vec(seed + 1, b_len, 1.0);
    let want = reference::<T>(&s, &a, &b);
    let (ag, bg) = (up::<T>(be, &a), up::<T>(be, &b));
    let mut cg = poisoned::<C>(be, s.batch * s.m * s.n);
    be.gemm::<T, C>(&s, &ag, &bg, &mut cg, 1.0, 0.0).unwrap();
    // f32 accumulation: an f32 output is accurate to f32 rounding whatever the input dtype.
    let what = format!("gemm {}->{} {s:?}", T::SUFFIX, C::SUFFIX);
    assert_close::<C>(&what, &down(be, &cg), &want, 1.0);
}

#[test]
fn gemm_matches_the_f64_reference() {
    let Some(be) = backend("gemm_matches_the_f64_reference") else {
        return;
    };
    let mut seed = 1;
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let (m, n, k) = (37, 29, 53);
        let s = GemmShape {
            trans_a: ta,
            trans_b: tb,
            ..GemmShape::single(m, n, k)
        };
        seed += 2;
        check_gemm::<f32, f32>(&be, s, seed);
        check_gemm::<bf16, bf16>(&be, s, seed);
        check_gemm::<f16, f16>(&be, s, seed);
        check_gemm::<bf16, f32>(&be, s, seed);
        check_gemm::<f16, f32>(&be, s, seed);
    }
    // Batched, B broadcast (stride 0): per-head scores against one shared matrix.
    let s = GemmShape {
        batch: 3,
        stride_b: 0,
        ..GemmShape::single(17, 19, 23)
    };
    check_gemm::<f32, f32>(&be, s, 50);
    check_gemm::<bf16, f32>(&be, s, 51);
    // Long inner dimension: a bf16 (or f16) accumulation would miss 2e-6 by orders of magnitude.
    let s = GemmShape::linear(4, 8192, 64);
    check_gemm::<bf16, f32>(&be, s, 60);
    check_gemm::<f16, f32>(&be, s, 61);
}

#[test]
fn gemm_rejects_bad_shapes() {
    let Some(be) = backend("gemm_rejects_bad_shapes") else {
        return;
    };
    let a = be.zeros::<f32>(10).unwrap();
    let mut c = be.zeros::<f32>(100).unwrap();
    let s = GemmShape::single(4, 4, 4);
    assert!(be.gemm::<f32, f32>(&s, &a, &a, &mut c, 1.0, 0.0).is_err());
    let mut c16 = be.zeros::<f16>(100).unwrap();
    let a16 = be.zeros::<bf16>(100).unwrap();
    assert!(
        be.gemm::<bf16, f16>(&GemmShape::single(2, 2, 2), &a16, &a16, &mut c16, 1.0, 0.0)
            .is_err(),
        "bf16 -> f16 output accepted"
    );
}

fn check_linear<T: CudaElement>(be: &CudaBackend) {
    let (rows, inf, outf) = (7, 96, 80);
    let d = T::DTYPE;
    let x = rand_vec(70, rows * inf, 1.0);
    let w = rand_vec(71, outf * inf, 0.2);
    let b = rand_vec(72, outf, 0.5);
    let (xt, wt, bt) = (
        cpu(&x, &[rows, inf], d),
        cpu(&w, &[outf, inf], d),
        cpu(&b, &[outf], d),
    );
    let (xg, wg, bg) = (up::<T>(be, &x), up::<T>(be, &w), up::<T>(be, &b));
    for act in [Activation::None, Activation::GeluErf, Activation::QuickGelu] {
        let lin = ops::linear(&xt, &wt, Some(&bt)).unwrap();
        let want = match act {
            Activation::None => lin,
            Activation::GeluErf => ops::gelu_erf(&lin).unwrap(),
            Activation::QuickGelu => ops::quick_gelu(&lin).unwrap(),
        }
        .to_vec_f32()
        .unwrap();
        let mut y = poisoned::<T>(be, rows * outf);
        be.linear(&xg, &wg, Some(&bg), &mut y, rows, inf, outf, act)
            .unwrap();
        // The GPU applies the activation to the f32 sum; the CPU to the sum rounded to T.
        let factor = if d == DType::F32 { 2.0 } else { 1.5 };
        assert_close::<T>(&format!("linear {act:?}"), &down(be, &y), &want, factor);
    }
}

#[test]
fn linear_matches_the_cpu() {
    let Some(be) = backend("linear_matches_the_cpu") else {
        return;
    };
    check_linear::<f32>(&be);
    check_linear::<bf16>(&be);
    check_linear::<f16>(&be);
}
