//! Naive f64 references and helpers shared by the integration tests.
#![allow(dead_code)]

use kosmos_tensor::{bf16, f16, DType, Device, Tensor};
use proptest::prelude::ProptestConfig;

/// `cases` proptest cases, no failure-persistence files.
pub fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `v` rounded to bf16 (nearest even) and back.
pub fn round_bf16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

/// `[b, h, t, hd]` data as the model passes it to attention: the `transpose(1, 2)` view of a
/// contiguous `[b, t, h, hd]` buffer.
pub fn heads_view(d: &[f32], (b, h, t, hd): (usize, usize, usize, usize)) -> Tensor {
    let bthd = tensor(d, &[b, h, t, hd])
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    bthd.transpose(1, 2).unwrap()
}

/// A `[n, k]` weight of `dtype` that is a view into a larger `[n + 3, k + pad]` tensor at row 2,
/// column `col` (offset and row stride ≠ k), and its values.
pub fn offset_view(
    seed: u64,
    n: usize,
    k: usize,
    pad: usize,
    col: usize,
    dtype: DType,
) -> (Tensor, Vec<f32>) {
    let (big, _) = typed(
        &rand_vec(seed, (n + 3) * (k + pad), 1.0),
        &[n + 3, k + pad],
        dtype,
    );
    let w = big.narrow(0, 2, n).unwrap().narrow(1, col, k).unwrap();
    assert_eq!(w.strides()[0], k + pad);
    let wv = w.to_vec_f32().unwrap();
    (w, wv)
}

/// Deterministic values in [-scale, scale) from a seed (SplitMix64).
pub fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn tensor(data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
}

/// `data` rounded to `dtype` and stored as `dtype`; also returns the exact (rounded) values.
pub fn typed(data: &[f32], shape: &[usize], dtype: DType) -> (Tensor, Vec<f32>) {
    let t = tensor(data, shape).to_dtype(dtype).unwrap();
    let v = t.to_vec_f32().unwrap();
    (t, v)
}

/// Round like a store in `dtype` would.
pub fn round_to(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::BF16 => bf16::from_f64(v).to_f64(),
        DType::F16 => f16::from_f64(v).to_f64(),
    }
}

/// Relative precision of an output stored in `dtype` (half an ulp).
pub fn output_eps(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 0.0,
        DType::BF16 => 1.0 / 256.0,
        DType::F16 => 1.0 / 2048.0,
    }
}

/// Absolute precision of an output stored in `dtype` near zero (half the f16 subnormal spacing).
pub fn output_abs(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 1.0 / (1u64 << 25) as f64,
        _ => 0.0,
    }
}

/// Assert `|got - want| <= tol * scale[i]` element-wise.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= tol * scale[i] + 1e-30,
            "{what}[{i}]: got {} want {} (err {err:e}, allowed {:e})",
            got[i],
            want[i],
            tol * scale[i]
        );
    }
}

/// `[m, k] x [k, n]` in f64; returns (values, sum of |products| per output).
pub fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let v = a[i * k + p] as f64 * b[p * n + j] as f64;
                out[i * n + j] += v;
                mag[i * n + j] += v.abs();
            }
        }
    }
    (out, mag)
}

/// `x [m, k] · w[n, k]ᵀ + b`.
pub fn linear_ref(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = b.map_or(0.0, |b| b[j] as f64);
            let mut g = s.abs();
            for p in 0..k {
                let v = x[i * k + p] as f64 * w[j * k + p] as f64;
                s += v;
                g += v.abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = g;
        }
    }
    (out, mag)
}

pub fn layer_norm_ref(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let d = w.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..d {
            out.push((row[i] as f64 - mean) * rstd * w[i] as f64 + b[i] as f64);
        }
    }
    out
}

pub fn softmax_ref(x: &[f32], d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

pub fn log_softmax_ref(x: &[f32], d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        out.extend(row.iter().map(|&v| v as f64 - lse));
    }
    out
}

/// softmax(q kᵀ · scale + mask) v for contiguous [B, H, T, hd] inputs and a [B or 1, 1, Tq, Tk] mask.
#[allow(clippy::too_many_arguments)]
pub fn attention_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<(&[f32], bool)>,
    (b, h, tq, tk, hd): (usize, usize, usize, usize, usize),
    scale: f32,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; b * h * tq * hd];
    let mut probs = vec![0f64; b * h * tq * tk];
    for bi in 0..b {
        for hi in 0..h {
            let base_q = (bi * h + hi) * tq * hd;
            let base_k = (bi * h + hi) * tk * hd;
            for i in 0..tq {
                let mut s: Vec<f64> = (0..tk)
                    .map(|j| {
                        let dot: f64 = (0..hd)
                            .map(|d| q[base_q + i * hd + d] as f64 * k[base_k + j * hd + d] as f64)
                            .sum();
                        let m = mask.map_or(0.0, |(m, per_batch)| {
                            let mb = if per_batch { bi } else { 0 };
                            m[(mb * tq + i) * tk + j] as f64
                        });
                        dot * scale as f64 + m
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f64 = s.iter().sum();
                for j in 0..tk {
                    let p = s[j] / sum;
                    probs[((bi * h + hi) * tq + i) * tk + j] = p;
                    for d in 0..hd {
                        out[base_q + i * hd + d] += p * v[base_k + j * hd + d] as f64;
                    }
                }
            }
        }
    }
    (out, probs)
}
