//! `ops::attention_products` with [`AttentionProducts::Bf16`]: q, k, v and the probabilities are
//! rounded to bf16 before they are multiplied (f32 accumulation), on every SIMD level.
//!
//! The probabilities are checked against an f64 softmax of the bf16-rounded q and k; the output
//! against the f64 sum of `bf16(p) · bf16(v)` over the op's own f32 probabilities (the products are
//! exact in f32, so only the f32 summation order may differ). Skipping any of the four roundings
//! moves a result by ≈ 2⁻⁹ relative, far outside both tolerances.

mod support;

use kosmos_tensor::ops::{self, AttentionProducts};
use kosmos_tensor::simd::{with_isa, Isa};
use support::*;

/// As in `ops.rs`: the f32 ops against f64 references.
const F32_TOL: f64 = 1e-6;

fn check((b, h, tq, tk, hd): (usize, usize, usize, usize, usize), masked: bool, seed: u64) {
    let q = rand_vec(seed, b * h * tq * hd, 1.0);
    let k = rand_vec(seed + 1, b * h * tk * hd, 1.0);
    let v = rand_vec(seed + 2, b * h * tk * hd, 1.0);
    let mask: Vec<f32> = rand_vec(seed + 3, b * tq * tk, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &m)| if m > 0.5 && i % tk != 0 { -1e9 } else { m })
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let mask_ref = masked.then_some((&mask[..], true));
    let (_, want_p) = attention_ref(
        &round_bf16(&q),
        &round_bf16(&k),
        &v,
        mask_ref,
        (b, h, tq, tk, hd),
        scale,
    );
    let (qt, kt, vt) = (
        heads_view(&q, (b, h, tq, hd)),
        heads_view(&k, (b, h, tk, hd)),
        heads_view(&v, (b, h, tk, hd)),
    );
    let mt = tensor(&mask, &[b, 1, tq, tk]);
    let vr = round_bf16(&v);
    for isa in Isa::available() {
        let run = |probs| {
            with_isa(isa, || {
                ops::attention_products(
                    &qt,
                    &kt,
                    &vt,
                    masked.then_some(&mt),
                    scale,
                    probs,
                    AttentionProducts::Bf16,
                )
            })
            .unwrap()
            .unwrap()
        };
        let (o, p) = run(true);
        let (o2, none) = run(false);
        assert!(none.is_none());
        let (o, p) = (o.to_vec_f32().unwrap(), p.unwrap().to_vec_f32().unwrap());
        assert_eq!(
            o,
            o2.to_vec_f32().unwrap(),
            "{isa}: with and without probabilities"
        );
        let ones = vec![1.0; want_p.len()];
        assert_close(&format!("probs {isa}"), &p, &want_p, &ones, 4.0 * F32_TOL);
        // out = Σ_j bf16(p_ij) · bf16(v_j), over the op's own probabilities.
        let mut want_o = vec![0f64; b * h * tq * hd];
        let mut mag = vec![0f64; b * h * tq * hd];
        for bh in 0..b * h {
            for i in 0..tq {
                let pr = round_bf16(&p[(bh * tq + i) * tk..(bh * tq + i + 1) * tk]);
                for (j, &pj) in pr.iter().enumerate() {
                    for d in 0..hd {
                        let x = pj as f64 * vr[(bh * tk + j) * hd + d] as f64;
                        want_o[(bh * tq + i) * hd + d] += x;
                        mag[(bh * tq + i) * hd + d] += x.abs();
                    }
                }
            }
        }
        assert_close(
            &format!("out {isa}"),
            &o,
            &want_o,
            &mag,
            4.0 * f32::EPSILON as f64 * (tk as f64).sqrt(),
        );
    }
}

/// The vision tower's heads: 257 tokens of 64, 16 heads would be the model; 3 keep it quick.
#[test]
fn bf16_products_on_vision_sized_heads() {
    check((1, 3, 257, 257, 64), false, 10);
    check((1, 2, 257, 257, 64), true, 20);
}

/// Odd sizes: an odd key count (a half-filled last bf16 pair), a head dim that is not a multiple of
/// the 32-column panels or of 16, one query row, batch 2 with per-row masks.
#[test]
fn bf16_products_on_odd_sizes() {
    for (i, dims) in [
        (2, 2, 5, 7, 20),
        (1, 1, 1, 33, 64),
        (2, 3, 13, 40, 17),
        (1, 2, 40, 65, 96),
    ]
    .into_iter()
    .enumerate()
    {
        check(dims, i % 2 == 0, 100 + i as u64);
        check(dims, i % 2 == 1, 200 + i as u64);
    }
}
