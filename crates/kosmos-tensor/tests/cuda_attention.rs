//! GPU attention vs the CPU `ops::attention`: flash prefill (masks, causal, layouts, head dims,
//! ragged lengths), decode over a KV cache (host and device lengths), KV append.
#![cfg(feature = "cuda")]

#[path = "cuda_support/mod.rs"]
mod support;

use kosmos_tensor::cuda::{
    AttentionShape, CudaBackend, CudaElement, DecodeMask, HeadLayout, KvPosition, ScoreMask,
};
use kosmos_tensor::{bf16, f16, ops, DType, Tensor};
use support::*;

const NEG: f32 = f32::MIN;

/// HF's combined additive mask `[b, 1, q, k]`: causal (queries are the last `q` of `k`) and
/// `pads[b]` left pads.
fn hf_mask(b: usize, q: usize, k: usize, causal: bool, pads: &[usize]) -> Vec<f32> {
    let mut m = vec![0f32; b * q * k];
    for bi in 0..b {
        for qi in 0..q {
            for ki in 0..k {
                let c = if causal && ki > qi + (k - q) {
                    NEG
                } else {
                    0.0
                };
                let p = if ki < pads[bi] { NEG } else { 0.0 };
                m[(bi * q + qi) * k + ki] = c + p;
            }
        }
    }
    m
}

/// `[b, t, h, d]` host data as a `[b, h, t, d]` CPU view.
fn bthd_tensor(v: &[f32], b: usize, t: usize, h: usize, d: usize, dt: DType) -> Tensor {
    cpu(v, &[b, t, h, d], dt).transpose(1, 2).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn check_flash<T: CudaElement>(
    be: &CudaBackend,
    (b, h, q, k, d): (usize, usize, usize, usize, usize),
    mask_kind: &str,
    causal_flag: bool,
    seed: u64,
) {
    let dt = T::DTYPE;
    let (qv, kv, vv) = (
        rand_vec(seed, b * q * h * d, 1.0),
        rand_vec(seed + 1, b * k * h * d, 1.0),
        rand_vec(seed + 2, b * k * h * d, 1.0),
    );
    let pads: Vec<usize> = (0..b)
        .map(|i| if i == 1 { 3.min(k - 1) } else { 0 })
        .collect();
    let (gpu_mask, cpu_mask) = match mask_kind {
        "none" => (None, None),
        "pad" => {
            let m = hf_mask(b, q, k, false, &pads);
            (Some(m.clone()), Some(m))
        }
        "pad+causal" => {
            let m = hf_mask(b, q, k, true, &pads);
            (Some(m.clone()), Some(m))
        }
        "broadcast-causal" => {
            let m = hf_mask(1, q, k, true, &[0]);
            (Some(m.clone()), Some(m))
        }
        other => panic!("{other}"),
    };
    // The CPU sees the in-kernel causal flag as an explicit mask added to the given one.
    let causal_only = hf_mask(1, q, k, true, &[0]);
    let cpu_mask = match (cpu_mask, causal_flag) {
        (m, false) => m,
        (None, true) => Some(causal_only),
        (Some(m), true) => Some(
            m.iter()
                .enumerate()
                .map(|(i, &v)| v + causal_only[i % (q * k)])
                .collect(),
        ),
    };
    let mb = cpu_mask.as_ref().map_or(1, |m| m.len() / (q * k));
    let mask_t = cpu_mask
        .as_ref()
        .map(|m| cpu(m, &[mb, 1, q, k], DType::F32));
    let want = ops::attention(
        &bthd_tensor(&qv, b, q, h, d, dt),
        &bthd_tensor(&kv, b, k, h, d, dt),
        &bthd_tensor(&vv, b, k, h, d, dt),
        mask_t.as_ref(),
        1.0 / (d as f32).sqrt(),
    )
    .unwrap()
    .to_vec_f32()
    .unwrap();

    let (qg, kg, vg) = (up::<T>(be, &qv), up::<T>(be, &kv), up::<T>(be, &vv));
    let mut og = poisoned::<T>(be, b * h * q * d);
    let mg = gpu_mask.as_ref().map(|m| up::<f32>(be, m));
    let shape = AttentionShape {
        batch: b,
        heads: h,
        q_len: q,
        kv_len: k,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
    };
    let mask = mg.as_ref().map(|m| ScoreMask {
        values: m,
        batch: m.len() / (q * k),
    });
    be.flash_attention(
        &shape,
        (&qg, HeadLayout::bthd(h, q, d)),
        (&kg, HeadLayout::bthd(h, k, d)),
        (&vg, HeadLayout::bthd(h, k, d)),
        (&mut og, HeadLayout::bhtd(h, q, d)),
        mask,
        causal_flag,
    )
    .unwrap();
    let what = format!("flash b{b} h{h} q{q} k{k} d{d} mask={mask_kind} causal={causal_flag}");
    assert_close::<T>(&what, &down(be, &og), &want, 4.0);
}

fn flash_cases<T: CudaElement>(be: &CudaBackend) {
    let mut seed = 100;
    for shape in [
        (2, 3, 37, 37, 64),
        (1, 2, 16, 16, 8),
        (2, 2, 33, 33, 16),
        (1, 1, 5, 40, 128),
        (2, 4, 70, 70, 80),
        (1, 16, 257, 257, 64),
    ] {
        for (mask, causal) in [
            ("none", false),
            ("none", true),
            ("pad", false),
            ("pad+causal", false),
            ("pad", true),
            ("broadcast-causal", false),
        ] {
            seed += 3;
            check_flash::<T>(be, shape, mask, causal, seed);
        }
    }
}

#[test]
fn flash_attention_matches_the_cpu() {
    let Some(be) = backend("flash_attention_matches_the_cpu") else {
        return;
    };
    flash_cases::<f32>(&be);
    flash_cases::<bf16>(&be);
    flash_cases::<f16>(&be);
}

fn check_decode<T: CudaElement>(be: &CudaBackend, d: usize, device_len: bool, masked: bool) {
    let dt = T::DTYPE;
    let (b, h, cap, len) = (3, 4, 50, 37);
    let qv = rand_vec(200, b * h * d, 1.0);
    let kc = rand_vec(201, b * h * cap * d, 1.0);
    let vc = rand_vec(202, b * h * cap * d, 1.0);
    let pads = [0usize, 2, 5];
    // Decode mask rows of `cap` columns (HF: [b, 1, 1, len]).
    let mut mask = vec![0f32; b * cap];
    for bi in 0..b {
        for j in 0..pads[bi] {
            mask[bi * cap + j] = NEG;
        }
    }
    // CPU: q [b,h,1,d], k/v = the first `len` cached tokens.
    let k_t = cpu(&kc, &[b, h, cap, d], dt).narrow(2, 0, len).unwrap();
    let v_t = cpu(&vc, &[b, h, cap, d], dt).narrow(2, 0, len).unwrap();
    let m_t = cpu(&mask, &[b, 1, 1, cap], DType::F32)
        .narrow(3, 0, len)
        .unwrap();
    let want = ops::attention(
        &cpu(&qv, &[b, h, 1, d], dt),
        &k_t,
        &v_t,
        masked.then_some(&m_t),
        0.125,
    )
    .unwrap()
    .to_vec_f32()
    .unwrap();

    let (qg, kg, vg) = (up::<T>(be, &qv), up::<T>(be, &kc), up::<T>(be, &vc));
    let mg = up::<f32>(be, &mask);
    let counter = be.htod(&[len as i32 - 1]).unwrap();
    let mut og = poisoned::<T>(be, b * h * d);
    let shape = AttentionShape {
        batch: b,
        heads: h,
        q_len: 1,
        kv_len: if device_len { cap } else { len },
        head_dim: d,
        scale: 0.125,
    };
    let cache = HeadLayout::bhtd(h, cap, d);
    be.decode_attention(
        &shape,
        (&qg, HeadLayout::bhtd(h, 1, d)),
        (&kg, cache),
        (&vg, cache),
        (&mut og, HeadLayout::bhtd(h, 1, d)),
        masked.then_some(DecodeMask {
            values: &mg,
            row_stride: cap,
        }),
        device_len.then_some((&counter, 1)),
    )
    .unwrap();
    let what = format!("decode d{d} device_len={device_len} masked={masked}");
    assert_close::<T>(&what, &down(be, &og), &want, 4.0);
}

#[test]
fn decode_attention_matches_the_cpu() {
    let Some(be) = backend("decode_attention_matches_the_cpu") else {
        return;
    };
    for d in [8, 16, 64, 128] {
        for (dl, m) in [(false, false), (true, false), (false, true), (true, true)] {
            check_decode::<f32>(&be, d, dl, m);
            check_decode::<bf16>(&be, d, dl, m);
            check_decode::<f16>(&be, d, dl, m);
        }
    }
}

#[test]
fn kv_append_writes_at_host_and_device_positions() {
    let Some(be) = backend("kv_append_writes_at_host_and_device_positions") else {
        return;
    };
    let (b, h, cap, d, t) = (2, 3, 10, 8, 4);
    let src = rand_vec(300, b * t * h * d, 1.0);
    let sg = up::<f32>(&be, &src);
    let layout = HeadLayout::bhtd(h, cap, d);
    for pos in [0usize, 6] {
        let mut cache = up::<f32>(&be, &vec![-7.0; b * h * cap * d]);
        let counter = be.htod(&[pos as i32]).unwrap();
        let p = if pos == 0 {
            KvPosition::Host(pos)
        } else {
            KvPosition::Device(&counter)
        };
        be.kv_append(
            (&sg, HeadLayout::bthd(h, t, d)),
            (&mut cache, layout),
            b,
            h,
            t,
            d,
            cap,
            p,
        )
        .unwrap();
        let got = down(&be, &cache);
        for bi in 0..b {
            for hi in 0..h {
                for s in 0..cap {
                    for e in 0..d {
                        let g = got[((bi * h + hi) * cap + s) * d + e];
                        let want = if s >= pos && s < pos + t {
                            src[((bi * t + (s - pos)) * h + hi) * d + e]
                        } else {
                            -7.0
                        };
                        assert_eq!(g, want, "pos {pos} b{bi} h{hi} s{s} e{e}");
                    }
                }
            }
        }
    }
    let mut cache = be.zeros::<f32>(b * h * cap * d).unwrap();
    let overflow = be.kv_append(
        (&sg, HeadLayout::bthd(h, t, d)),
        (&mut cache, layout),
        b,
        h,
        t,
        d,
        cap,
        KvPosition::Host(cap - 1),
    );
    assert!(overflow.is_err(), "overflowing append accepted");
}
