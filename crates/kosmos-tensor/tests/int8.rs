//! Int8 weight-only quantisation: the quantiser against its definition (scale = max|row| / 127,
//! |w - scale·q| <= scale / 2), and `linear_int8` (GEMV on every SIMD path this CPU has, and the
//! multi-row GEMM path) against a naive f64 reference on the exactly dequantised weights
//! `scale[o] · q[o, i]` (computed in f64).
//!
//! Tolerance: f32 outputs within 1e-6 of Σ|x·deq(w)| + |b| (sum-order differences only, as for the
//! f32 linear in `ops.rs`); bf16 / f16 outputs add half an ulp of their format.

mod support;

use kosmos_tensor::quant::{Int8Weight, QuantizedLinear};
use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{ops, DType, Device, Error, Tensor};
use proptest::prelude::*;
use support::*;

const F32_TOL: f64 = 1e-6;

/// `x [m, k] · deq(W)ᵀ + b` in f64 with `deq(W)[o, i] = scale[o] · q[o, i]` exactly; returns
/// (values, Σ|terms| + |b| per output).
fn int8_ref(x: &[f32], w: &Int8Weight, b: Option<&[f32]>, m: usize) -> (Vec<f64>, Vec<f64>) {
    let [n, k] = w.dims();
    let (q, s) = (w.q(), w.scales());
    let mut out = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for o in 0..n {
            let mut acc = b.map_or(0.0, |b| b[o] as f64);
            let mut g = acc.abs();
            for p in 0..k {
                let v = x[i * k + p] as f64 * (s[o] as f64 * q[o * k + p] as f64);
                acc += v;
                g += v.abs();
            }
            out[i * n + o] = acc;
            mag[i * n + o] = g;
        }
    }
    (out, mag)
}

/// The quantiser's contract on `w` (the f32 values of the tensor that was quantised).
fn check_quantised(w: &[f32], qw: &Int8Weight) {
    let [n, k] = qw.dims();
    assert_eq!(w.len(), n * k);
    for o in 0..n {
        let row = &w[o * k..(o + 1) * k];
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = qw.scales()[o];
        assert_eq!(s, max / 127.0, "row {o}: scale");
        let q = &qw.q()[o * k..(o + 1) * k];
        assert!(q.iter().all(|&v| v != i8::MIN), "row {o}: -128");
        if max > 0.0 {
            assert!(
                q.iter().any(|&v| v.unsigned_abs() == 127),
                "row {o}: no ±127"
            );
        }
        for (i, (&wv, &qv)) in row.iter().zip(q).enumerate() {
            let err = (wv as f64 - s as f64 * qv as f64).abs();
            // Half a step, plus the f32 rounding of the scale itself (|q| <= 127 steps of it).
            let bound = s as f64 / 2.0 * (1.0 + 1e-9) + 127.0 * s as f64 * f32::EPSILON as f64;
            assert!(
                err <= bound,
                "row {o} col {i}: w {wv} q {qv} s {s} err {err:e} > {bound:e}"
            );
        }
    }
}

/// `linear_int8` on `[m, k] x [n, k]` for one input dtype, on every SIMD level.
fn check_linear(m: usize, k: usize, n: usize, xdt: DType, seed: u64, with_bias: bool) {
    let wv = rand_vec(seed, n * k, 0.5);
    let (x, xv) = typed(&rand_vec(seed + 1, m * k, 1.0), &[m, k], xdt);
    let bias = rand_vec(seed + 2, n, 0.3);
    let b = with_bias.then_some(bias.as_slice());
    let qw = Int8Weight::quantize(&tensor(&wv, &[n, k])).unwrap();
    // Above the GEMV sizes (prefill) the activations are rounded to bf16 first.
    let xv: Vec<f32> = if m > ops::MAX_GEMV_ROWS {
        xv.iter()
            .map(|&v| kosmos_tensor::bf16::from_f32(v).to_f32())
            .collect()
    } else {
        xv
    };
    let (want, mag) = int8_ref(&xv, &qw, b, m);
    let scale: Vec<f64> = want
        .iter()
        .zip(&mag)
        .map(|(w, g)| F32_TOL * g + output_eps(xdt) * w.abs() + output_abs(xdt))
        .collect();
    for isa in Isa::available() {
        let y = with_isa(isa, || ops::linear_int8(&x, &qw, b))
            .unwrap()
            .unwrap();
        assert_eq!(y.dims(), [m, n]);
        assert_eq!(y.dtype(), xdt);
        let what = format!("linear_int8 {isa} x={xdt} [{m},{k}]x[{n},{k}]");
        assert_close(&what, &y.to_vec_f32().unwrap(), &want, &scale, 1.0);
    }
}

proptest! {
    #![proptest_config(cfg(48))]

    #[test]
    fn quantise_bound_any_dtype(n in 1usize..20, k in 1usize..300, d in 0usize..3, seed in 0u64..1000) {
        let dtype = [DType::F32, DType::BF16, DType::F16][d];
        let (t, v) = typed(&rand_vec(seed, n * k, 3.0), &[n, k], dtype);
        check_quantised(&v, &Int8Weight::quantize(&t).unwrap());
    }

    #[test]
    fn gemv_every_isa(k in 1usize..300, n in 1usize..40, d in 0usize..3, seed in 0u64..1000, bias: bool) {
        check_linear(1, k, n, [DType::F32, DType::BF16, DType::F16][d], seed, bias);
    }

    #[test]
    fn multi_row(m in 2usize..9, k in 1usize..200, n in 1usize..70, seed in 0u64..1000, bias: bool) {
        check_linear(m, k, n, DType::F32, seed, bias);
    }
}

#[test]
fn odd_sizes_and_parallel_paths() {
    // Sizes around the SIMD widths (8, 16, 32) and row quads, plus shapes big enough for the
    // rayon-split GEMV (n·k >= 2^18, n >= 128) and several GEMM panels.
    for (i, &(m, k, n)) in [
        (1, 1, 1),
        (1, 7, 5),
        (1, 15, 3),
        (1, 17, 9),
        (1, 31, 4),
        (1, 33, 6),
        (1, 63, 13),
        (1, 1000, 301),
        (1, 2049, 131),
        (1, 4113, 79),
        (1, 8200, 260),
        (3, 1000, 301),
        (17, 129, 515),
    ]
    .iter()
    .enumerate()
    {
        for dtype in [DType::F32, DType::BF16] {
            check_linear(m, k, n, dtype, 100 + i as u64, i % 2 == 0);
        }
    }
}

#[test]
fn strided_and_batched_inputs() {
    let (k, n) = (37, 11);
    let wv = rand_vec(7, n * k, 1.0);
    let qw = Int8Weight::quantize(&tensor(&wv, &[n, k])).unwrap();
    // A transposed weight tensor quantises to the same thing as its contiguous copy.
    let wt = tensor(&wv, &[n, k])
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap();
    let qt = Int8Weight::quantize(&wt.transpose(0, 1).unwrap()).unwrap();
    assert_eq!((qt.q(), qt.scales()), (qw.q(), qw.scales()));
    // [2, 3, k] folds into 6 rows.
    let xv = rand_vec(8, 6 * k, 1.0);
    let x = tensor(&xv, &[2, 3, k]);
    let y = ops::linear_int8(&x, &qw, None).unwrap();
    assert_eq!(y.dims(), [2, 3, n]);
    let (want, mag) = int8_ref(&xv, &qw, None, 6);
    assert_close("batched", &y.to_vec_f32().unwrap(), &want, &mag, F32_TOL);
    // The buffer API gives the same rows, and rejects inconsistent lengths.
    let mut buf = vec![0f32; 6 * n];
    ops::linear_int8_into(&xv, 6, &qw, None, &mut buf).unwrap();
    assert_eq!(buf, y.to_vec_f32().unwrap());
    let mut one = vec![0f32; n];
    ops::linear_int8_into(&xv[..k], 1, &qw, None, &mut one).unwrap();
    // (GEMV and GEMM sum in different orders: compare with the reference, not bitwise.)
    assert_close("into, one row", &one, &want[..n], &mag[..n], F32_TOL);
    assert!(matches!(
        ops::linear_int8_into(&xv, 5, &qw, None, &mut buf),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ops::linear_int8_into(&xv[..k], 1, &qw, Some(&[0.0; 2]), &mut one),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        ops::linear_int8_into(&[], 0, &qw, None, &mut []),
        Err(Error::Empty { .. })
    ));
    // Agrees with the dense linear on the dequantised weight.
    let dense = ops::linear(&x, &qw.dequantize().unwrap(), None).unwrap();
    assert_close(
        "vs dense",
        &dense.to_vec_f32().unwrap(),
        &want,
        &mag,
        F32_TOL,
    );
}

#[test]
fn quantised_linear_layer() {
    let (k, n) = (70, 9);
    let w = tensor(&rand_vec(3, n * k, 1.0), &[n, k])
        .to_dtype(DType::BF16)
        .unwrap();
    let bv = rand_vec(4, n, 1.0);
    let layer = QuantizedLinear::new(&w, Some(&tensor(&bv, &[n]))).unwrap();
    check_quantised(&w.to_vec_f32().unwrap(), &layer.weight);
    assert_eq!(layer.bias.as_deref(), Some(bv.as_slice()));
    let xv = rand_vec(5, k, 1.0);
    let y = layer.forward(&tensor(&xv, &[1, k])).unwrap();
    let (want, mag) = int8_ref(&xv, &layer.weight, Some(&bv), 1);
    assert_close("layer", &y.to_vec_f32().unwrap(), &want, &mag, F32_TOL);
    assert_eq!(layer.weight.size_in_bytes(), n * k + 4 * n);
    // Rebuilding from parts gives the same layer.
    let again = QuantizedLinear::from_weight(
        Int8Weight::from_parts(
            layer.weight.q().to_vec(),
            layer.weight.scales().to_vec(),
            n,
            k,
        )
        .unwrap(),
        Some(bv.clone()),
    )
    .unwrap();
    let y2 = again.forward(&tensor(&xv, &[1, k])).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), y2.to_vec_f32().unwrap());
}

#[test]
fn zero_rows_and_exact_values() {
    let w = tensor(&[0.0, 0.0, 0.0, 2.54, -1.27, 0.01], &[2, 3]);
    let q = Int8Weight::quantize(&w).unwrap();
    assert_eq!(q.scales()[0], 0.0);
    assert_eq!(&q.q()[..3], &[0, 0, 0]);
    assert_eq!(&q.q()[3..], &[127, -64, 0]);
    // Round half to even: 0.5 and 1.5 steps, and -2.5 steps.
    let s = 127.0f32;
    let w = tensor(&[s, 0.5, 1.5, -2.5], &[1, 4]);
    assert_eq!(Int8Weight::quantize(&w).unwrap().q(), &[127, 0, 2, -2]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let cpu = Device::Cpu;
    let nan = Tensor::from_vec(vec![1.0, f32::NAN], &[1, 2], &cpu).unwrap();
    assert!(matches!(
        Int8Weight::quantize(&nan),
        Err(Error::InvalidArgument { .. })
    ));
    let inf = Tensor::from_vec(vec![f32::INFINITY, 1.0], &[2, 1], &cpu).unwrap();
    assert!(matches!(
        Int8Weight::quantize(&inf),
        Err(Error::InvalidArgument { .. })
    ));
    let v = Tensor::from_vec(vec![1.0; 4], &[4], &cpu).unwrap();
    assert!(matches!(Int8Weight::quantize(&v), Err(Error::Rank { .. })));
    let empty = Tensor::zeros(&[0, 3], DType::F32, &cpu).unwrap();
    assert!(matches!(
        Int8Weight::quantize(&empty),
        Err(Error::Empty { .. })
    ));
    for (q, s, n, k) in [
        (vec![1i8; 5], vec![1.0f32; 2], 2usize, 3usize),
        (vec![1; 6], vec![1.0; 3], 2, 3),
        (vec![-128, 0, 0, 0, 0, 0], vec![1.0; 2], 2, 3),
        (vec![1; 6], vec![1.0, -1.0], 2, 3),
        (vec![1; 6], vec![1.0, f32::NAN], 2, 3),
    ] {
        assert!(matches!(
            Int8Weight::from_parts(q, s, n, k),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        Int8Weight::from_parts(vec![], vec![], 0, 3),
        Err(Error::Empty { .. })
    ));
    let qw = Int8Weight::quantize(&Tensor::from_vec(vec![1.0; 6], &[2, 3], &cpu).unwrap()).unwrap();
    let x4 = Tensor::from_vec(vec![1.0; 4], &[1, 4], &cpu).unwrap();
    assert!(matches!(
        ops::linear_int8(&x4, &qw, None),
        Err(Error::ShapeMismatch { .. })
    ));
    let x3 = Tensor::from_vec(vec![1.0; 3], &[1, 3], &cpu).unwrap();
    assert!(matches!(
        ops::linear_int8(&x3, &qw, Some(&[1.0; 3])),
        Err(Error::ShapeMismatch { .. })
    ));
    let x0 = Tensor::zeros(&[0, 3], DType::F32, &cpu).unwrap();
    assert!(matches!(
        ops::linear_int8(&x0, &qw, None),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        QuantizedLinear::from_weight(qw.clone(), Some(vec![0.0; 3])),
        Err(Error::ShapeMismatch { .. })
    ));
    let w = Tensor::from_vec(vec![1.0; 6], &[2, 3], &cpu).unwrap();
    let b3 = Tensor::from_vec(vec![1.0; 3], &[3], &cpu).unwrap();
    assert!(matches!(
        QuantizedLinear::new(&w, Some(&b3)),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// `quantize_stored` (block by block, releasing an f32 source's pages as it goes) gives exactly
/// `quantize`'s weights, over several blocks with a partial last one, for an f32 and a bf16
/// stored weight; a non-finite value in the last block is the same typed error.
#[test]
fn quantize_stored_matches_quantize_across_blocks() {
    use kosmos_tensor::{write_safetensors_raw, RawTensor, WeightStore};
    // 1000 f32 per row: blocks of 1048 rows, so 3000 rows are three blocks, the last partial.
    let (n, k) = (3000usize, 1000usize);
    let mut w = rand_vec(7, n * k, 2.0);
    let bf: Vec<u8> = w
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let f32_bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    w[(n - 1) * k + 5] = f32::NAN;
    let nan_bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dir = std::env::temp_dir().join(format!("kt-int8-stored-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let shape = [n, k];
    let raw = |dtype, data| RawTensor {
        dtype,
        shape: &shape,
        data,
    };
    write_safetensors_raw(
        &path,
        &[
            ("f32", raw("F32", &f32_bytes)),
            ("bf16", raw("BF16", &bf)),
            ("nan", raw("F32", &nan_bytes)),
        ],
        &[],
    )
    .unwrap();
    let store = WeightStore::open(&path).unwrap();
    for key in ["f32", "bf16"] {
        let stored = Int8Weight::quantize_stored(&store, key, [n, k]).unwrap();
        let t = store.get(key, &[n, k], DType::F32, &Device::Cpu).unwrap();
        let whole = Int8Weight::quantize(&t).unwrap();
        assert_eq!(stored.q(), whole.q(), "{key}");
        assert_eq!(stored.scales(), whole.scales(), "{key}");
        check_quantised(&t.to_vec_f32().unwrap(), &stored);
    }
    assert!(matches!(
        Int8Weight::quantize_stored(&store, "nan", [n, k]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Int8Weight::quantize_stored(&store, "f32", [n, k + 1]),
        Err(Error::WrongShape { .. })
    ));
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}
