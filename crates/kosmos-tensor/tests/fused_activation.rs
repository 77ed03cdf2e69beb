//! A linear layer with its activation applied as the output is produced (`Linear::forward_act`,
//! `ops::linear_act` / `linear_packed_act` / `linear_int8_act`; issue 8: GELU in the GEMM
//! epilogue) is bitwise the same as the layer followed by the standalone activation op, for every
//! weight kind (f32, bf16 and f16 tensors, a strided f32 view, packed bf16, int8), both activations,
//! with and without bias, on every SIMD level, from one row (GEMV) through GEMMs that cross the
//! panel GEMM's K blocks (256 units), its partial 32-column panels and its 384-row M blocks.

mod support;

use kosmos_tensor::nn::Linear;
use kosmos_tensor::ops::Activation;
use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{DType, Tensor};
use proptest::prelude::*;
use support::*;

const ACTS: [Activation; 2] = [Activation::GeluErf, Activation::QuickGelu];

/// Every weight kind for a `[n, k]` layer (with a bias when `bias`), by name.
fn layers(n: usize, k: usize, bias: bool, seed: u64) -> Vec<(&'static str, Linear)> {
    let b = bias.then(|| tensor(&rand_vec(seed ^ 7, n, 0.5), &[n]));
    let dense = |dtype| {
        let (w, _) = typed(&rand_vec(seed, n * k, 0.5), &[n, k], dtype);
        Linear::new(w, b.clone())
    };
    let (strided, _) = offset_view(seed ^ 3, n, k, 5, 2, DType::F32);
    let bf16 = dense(DType::BF16);
    vec![
        ("f32", dense(DType::F32)),
        ("f32 strided", Linear::new(strided, b.clone())),
        ("f16", dense(DType::F16)),
        ("packed bf16", bf16.pack_bf16().unwrap()),
        ("bf16", bf16),
        ("int8", dense(DType::F32).quantize_int8().unwrap()),
    ]
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// `forward_act` against `forward` + the standalone op on every level, every kind, both acts.
fn check(m: usize, k: usize, n: usize, bias: bool, seed: u64) {
    // Inputs around the activations' interesting range (GELU's erf switches method at |x| 1.77).
    let x = tensor(&rand_vec(seed ^ 11, m * k, 1.0), &[m, k]);
    for (name, layer) in layers(n, k, bias, seed) {
        for isa in Isa::available() {
            for act in ACTS {
                let (fused, apart) = with_isa(isa, || {
                    let fused = layer.forward_act(&x, act).unwrap();
                    let apart = act.apply(&layer.forward(&x).unwrap()).unwrap();
                    (fused, apart)
                })
                .unwrap();
                assert_eq!(fused.dims(), [m, n]);
                assert!(
                    bits(&fused) == bits(&apart),
                    "{name} {isa} {act:?} m={m} k={k} n={n} bias={bias}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(cfg(24))]

    // Decode and small prefill shapes (GEMV through the first GEMM sizes), odd sizes.
    #[test]
    fn fused_equals_apart_small(
        m in 1usize..24, k in 1usize..80, n in 1usize..70, bias in any::<bool>(), seed in any::<u64>(),
    ) {
        check(m, k, n, bias, seed);
    }
}

/// Shapes across the panel GEMM's blocking: `k` past one K block of f32 units (256) and of bf16
/// pairs (512), partial last panels, and 400 rows (two M blocks of at most 384).
#[test]
fn fused_equals_apart_across_gemm_blocks() {
    for (i, (m, k, n)) in [(17, 600, 33), (71, 1030, 64), (400, 300, 45)]
        .into_iter()
        .enumerate()
    {
        check(m, k, n, i != 1, 40 + i as u64);
    }
}

/// bf16 activations: the output is rounded to bf16 before the activation, as with the two ops.
#[test]
fn bf16_activations_round_before_the_activation() {
    let (m, k, n) = (20, 40, 33);
    let x = tensor(&rand_vec(5, m * k, 1.0), &[m, k])
        .to_dtype(DType::BF16)
        .unwrap();
    for (name, layer) in layers(n, k, true, 9) {
        for act in ACTS {
            let fused = layer.forward_act(&x, act).unwrap();
            let apart = act.apply(&layer.forward(&x).unwrap()).unwrap();
            assert_eq!(fused.dtype(), DType::BF16, "{name}");
            assert!(bits(&fused) == bits(&apart), "{name} {act:?}");
        }
    }
}
