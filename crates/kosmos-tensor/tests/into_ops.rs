//! The `_into` / in-place ops (the allocation-free decode step's building blocks) against the
//! allocating ops they mirror: bitwise equal where the arithmetic is the same, within 1e-5 relative
//! (f32 summation order) where it is not, in every weight dtype.

use kosmos_tensor::{ops, DType, Device, Tensor};

fn data(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + salt * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 2.0)
        .collect()
}

fn t(n: &[usize], salt: usize, dtype: DType) -> Tensor {
    let len = n.iter().product();
    Tensor::from_vec(data(len, salt), n, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|&b| (b as f64).abs()).fold(0.0, f64::max);
    diff / scale.max(f64::MIN_POSITIVE)
}

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

#[test]
fn linear_into_matches_linear() {
    for dtype in DTYPES {
        let (n, k) = (301, 67);
        let w = t(&[n, k], 1, dtype);
        let b = t(&[n], 2, dtype);
        for rows in [1usize, 3, 8, 11, 16, 17] {
            let x = data(rows * k, 3 + rows);
            let xt = Tensor::from_slice(&x, &[rows, k], &Device::Cpu).unwrap();
            for bias in [None, Some(&b)] {
                let want = ops::linear(&xt, &w, bias).unwrap().to_vec_f32().unwrap();
                let mut got = vec![f32::NAN; rows * n];
                ops::linear_into(&x, &w, bias, &mut got).unwrap();
                if rows == 1 {
                    assert_eq!(got, want, "{dtype:?} one row: the same GEMV");
                } else {
                    let e = rel(&got, &want);
                    assert!(e < 1e-5, "{dtype:?} {rows} rows: {e:e}");
                }
                // Up to 8 rows are batch-invariant: row 1 equals its one-row result.
                if (2..=8).contains(&rows) {
                    let mut one = vec![0f32; n];
                    ops::linear_into(&x[k..2 * k], &w, bias, &mut one).unwrap();
                    assert_eq!(&got[n..2 * n], &one[..], "{dtype:?} {rows} rows: row 1");
                }
            }
        }
        let mut out = vec![0f32; 5];
        assert!(ops::linear_into(&data(k, 0), &w, None, &mut out).is_err());
        assert!(ops::linear_into(&[], &w, None, &mut []).is_err());
    }
}

#[test]
fn layer_norms_into_match() {
    for dtype in DTYPES {
        let d = 77;
        let (w, b) = (t(&[d], 4, dtype), t(&[d], 5, dtype));
        let x = data(3 * d, 6);
        let r = data(3 * d, 7);
        let xt = Tensor::from_slice(&x, &[3, d], &Device::Cpu).unwrap();
        let rt = Tensor::from_slice(&r, &[3, d], &Device::Cpu).unwrap();
        let want = ops::layer_norm(&xt, &w, &b, 1e-5)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        let mut got = vec![0f32; 3 * d];
        ops::layer_norm_into(&x, &w, &b, 1e-5, &mut got).unwrap();
        assert_eq!(got, want, "{dtype:?} layer_norm");
        let (ws, wn) = ops::add_layer_norm(&xt, &rt, &w, &b, 1e-5).unwrap();
        let (mut s, mut nrm) = (vec![0f32; 3 * d], vec![0f32; 3 * d]);
        ops::add_layer_norm_into(&x, &r, &w, &b, 1e-5, &mut s, &mut nrm).unwrap();
        assert_eq!(s, ws.to_vec_f32().unwrap(), "{dtype:?} sum");
        assert_eq!(nrm, wn.to_vec_f32().unwrap(), "{dtype:?} normed");
        assert!(ops::layer_norm_into(&x[..d + 1], &w, &b, 1e-5, &mut got[..d + 1]).is_err());
        assert!(ops::layer_norm_into(&x, &w, &b, 1e-5, &mut got[..d]).is_err());
    }
}

#[test]
fn activations_in_place_match() {
    for n in [1usize, 255, 257, 40_000] {
        let x = data(n, 8);
        let xt = Tensor::from_slice(&x, &[n], &Device::Cpu).unwrap();
        let mut g = x.clone();
        ops::gelu_erf_inplace(&mut g);
        assert_eq!(g, ops::gelu_erf(&xt).unwrap().to_vec_f32().unwrap());
        let mut q = x.clone();
        ops::quick_gelu_inplace(&mut q);
        let want = ops::quick_gelu(&xt).unwrap().to_vec_f32().unwrap();
        assert!(rel(&q, &want) < 1e-6, "quick_gelu {n}");
    }
}

#[test]
fn embedding_into_and_argmax_slice() {
    for dtype in DTYPES {
        let table = t(&[10, 6], 9, dtype);
        let ids = [3u32, 0, 9, 3];
        let want = ops::embedding(&ids, &table).unwrap().to_vec_f32().unwrap();
        let mut got = vec![0f32; 24];
        ops::embedding_into(&ids, &table, &mut got).unwrap();
        assert_eq!(got, want);
        assert!(ops::embedding_into(&[10], &table, &mut got[..6]).is_err());
        assert!(ops::embedding_into(&ids, &table, &mut got[..6]).is_err());
    }
    let x = data(4 * 33, 10);
    let xt = Tensor::from_slice(&x, &[4, 33], &Device::Cpu).unwrap();
    let want = ops::argmax_last_dim(&xt).unwrap();
    let got: Vec<u32> = x
        .chunks(33)
        .map(|r| ops::argmax_slice(r).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(ops::argmax_slice(&[]), None);
    assert_eq!(ops::argmax_slice(&[0.0, -0.0, 1.0, 1.0]), Some(2));
}

/// Decode attention over a cache buffer vs `attention` on the valid prefix, with and without an
/// additive mask, serial and parallel sizes.
#[test]
fn attention_decode_into_matches_attention() {
    for (batch, heads, hd, cap, keys) in [(1, 2, 8, 9, 5), (3, 4, 16, 40, 33), (2, 8, 64, 300, 290)]
    {
        let cache_len = batch * heads * cap * hd;
        let (k, v) = (data(cache_len, 11), data(cache_len, 12));
        let q = data(batch * heads * hd, 13);
        let dev = Device::Cpu;
        let kt = Tensor::from_slice(&k, &[batch, heads, cap, hd], &dev)
            .unwrap()
            .narrow(2, 0, keys)
            .unwrap();
        let vt = Tensor::from_slice(&v, &[batch, heads, cap, hd], &dev)
            .unwrap()
            .narrow(2, 0, keys)
            .unwrap();
        // q as [B, 1, H, hd] -> [B, H, 1, hd], the layout of q_proj's output.
        let qt = Tensor::from_slice(&q, &[batch, 1, heads, hd], &dev)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let mask: Vec<f32> = (0..batch * keys)
            .map(|i| if i % 7 == 3 { f32::MIN } else { 0.0 })
            .collect();
        let mt = Tensor::from_slice(&mask, &[batch, 1, 1, keys], &dev).unwrap();
        let shape = ops::DecodeAttention {
            batch,
            heads,
            head_dim: hd,
            capacity: cap,
            keys,
        };
        for m in [None, Some(&mask)] {
            let want = ops::attention(&qt, &kt, &vt, m.map(|_| &mt), 0.125)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .to_vec_f32()
                .unwrap();
            let mut scores = vec![0f32; batch * heads * keys];
            let mut got = vec![0f32; batch * heads * hd];
            ops::attention_decode_into(
                &q,
                &k,
                &v,
                shape,
                m.map(Vec::as_slice),
                0.125,
                &mut scores,
                &mut got,
            )
            .unwrap();
            let e = rel(&got, &want);
            assert!(e < 1e-5, "{batch}x{heads}x{hd} keys {keys}: {e:e}");
        }
        let mut small = vec![0f32; 1];
        let mut got = vec![0f32; batch * heads * hd];
        assert!(
            ops::attention_decode_into(&q, &k, &v, shape, None, 1.0, &mut small, &mut got).is_err()
        );
    }
}

#[test]
fn as_f32_slice_mut_copies_shared_storage_once() {
    let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], &Device::Cpu).unwrap();
    let mut b = a.clone();
    b.as_f32_slice_mut().unwrap()[0] = 9.0;
    assert_eq!(a.to_vec_f32().unwrap(), [1.0, 2.0, 3.0]);
    assert_eq!(b.as_f32_slice().unwrap(), [9.0, 2.0, 3.0]);
    let mut h = a.to_dtype(DType::BF16).unwrap();
    assert!(h.as_f32_slice_mut().is_err());
    let mut tr = Tensor::from_vec(vec![0.0; 6], &[2, 3], &Device::Cpu)
        .unwrap()
        .transpose(0, 1)
        .unwrap();
    assert!(tr.as_f32_slice_mut().is_err());
}
