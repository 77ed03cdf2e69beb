//! Pre-packed bf16 linear weights (`packed::PackedBf16`, `ops::linear_packed*`, issue 8).
//!
//! - Packing keeps every bf16 value (round trip), from a tensor and from an f32 safetensors file
//!   (packed panel by panel straight from the map) alike.
//! - Up to `MAX_GEMV_ROWS` rows (decode): f32 x, compared with an f64 reference on the bf16 weight
//!   (tolerance 1e-6 of Σ|x·w| + |b|, as the f32 GEMM in `ops.rs`), bitwise equal on every SIMD
//!   level (FMAs in order of k on each), and batch-invariant (each row of an R-row call equals the
//!   one-row call bitwise).
//! - More rows (prefill): x rounded to bf16 (reference on the rounded x, same tolerance); on
//!   AVX512_BF16 bitwise equal to `ops::linear_into` with the row-major bf16 weight (the same panel
//!   GEMM, minus the per-call pack).

mod support;

use kosmos_tensor::nn::Linear;
use kosmos_tensor::packed::PackedBf16;
use kosmos_tensor::simd::{with_isa, Isa};
use kosmos_tensor::{ops, write_safetensors, DType, Device, WeightStore};
use proptest::prelude::*;
use support::*;

const TOL: f64 = 1e-6;
const GEMV: usize = ops::MAX_GEMV_ROWS;

proptest! {
    #![proptest_config(cfg(40))]

    // Round trip: every bf16 value comes back, for any n (partial last panel) and odd k.
    #[test]
    fn pack_round_trip(n in 1usize..80, k in 1usize..300, seed in any::<u64>()) {
        let (w, wv) = typed(&rand_vec(seed, n * k, 1.0), &[n, k], DType::BF16);
        let p = PackedBf16::from_tensor(&w).unwrap();
        prop_assert_eq!(p.dims(), [n, k]);
        let back = p.to_tensor();
        prop_assert_eq!(back.dtype(), DType::BF16);
        prop_assert_eq!(back.to_vec_f32().unwrap(), wv);
        // An f32 weight is rounded to nearest even on the way, as `to_dtype` does.
        let f = tensor(&rand_vec(seed ^ 5, n * k, 1.0), &[n, k]);
        let pf = PackedBf16::from_tensor(&f).unwrap();
        prop_assert_eq!(pf.to_tensor().to_vec_f32().unwrap(), f.to_dtype(DType::BF16).unwrap().to_vec_f32().unwrap());
    }

    // Decode rows: f32 x, reference, bitwise across levels, batch-invariant; bias f32, bf16 or none.
    #[test]
    fn gemv_rows(rows in 1usize..=GEMV, k in 1usize..400, n in 1usize..100, bias in 0usize..3, seed in any::<u64>()) {
        let x = rand_vec(seed, rows * k, 2.0);
        let (w, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let b = round_bf16(&rand_vec(seed ^ 2, n, 1.0));
        let bt = match bias {
            0 => None,
            1 => Some(tensor(&b, &[n])),
            _ => Some(tensor(&b, &[n]).to_dtype(DType::BF16).unwrap()),
        };
        let p = PackedBf16::from_tensor(&w).unwrap();
        let (want, mag) = linear_ref(&x, &wv, (bias > 0).then_some(&b[..]), rows, k, n);
        let mut first: Option<Vec<f32>> = None;
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; rows * n];
            with_isa(isa, || ops::linear_packed_into(&x, &p, bt.as_ref(), &mut out)).unwrap().unwrap();
            assert_close(&format!("packed gemv {isa} rows={rows} k={k} n={n}"), &out, &want, &mag, TOL);
            for r in 0..rows {
                let mut one = vec![f32::NAN; n];
                with_isa(isa, || ops::linear_packed_into(&x[r * k..(r + 1) * k], &p, bt.as_ref(), &mut one)).unwrap().unwrap();
                prop_assert_eq!(&one[..], &out[r * n..(r + 1) * n], "row {} of {} on {}", r, rows, isa);
            }
            match &first {
                None => first = Some(out),
                Some(f) => prop_assert_eq!(f, &out, "{} differs from the first level", isa),
            }
        }
    }

    // Prefill rows: x rounded to bf16; bitwise the row-major bf16 GEMM on AVX512_BF16; `linear`
    // with leading dims and through `nn::Linear` give the same values.
    #[test]
    fn gemm_rows(extra in 1usize..60, k in 1usize..600, n in 1usize..100, bias in any::<bool>(), seed in any::<u64>()) {
        let m = GEMV + extra;
        let x = rand_vec(seed, m * k, 1.5);
        let (w, wv) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let b = rand_vec(seed ^ 2, n, 1.0);
        let bt = bias.then(|| tensor(&b, &[n]));
        let p = PackedBf16::from_tensor(&w).unwrap();
        let (want, mag) = linear_ref(&round_bf16(&x), &wv, bias.then_some(&b[..]), m, k, n);
        for isa in Isa::available() {
            let mut out = vec![f32::NAN; m * n];
            with_isa(isa, || ops::linear_packed_into(&x, &p, bt.as_ref(), &mut out)).unwrap().unwrap();
            assert_close(&format!("packed gemm {isa} m={m} k={k} n={n}"), &out, &want, &mag, TOL);
            if isa == Isa::Avx512Bf16 {
                let mut rowmajor = vec![f32::NAN; m * n];
                with_isa(isa, || ops::linear_into(&x, &w, bt.as_ref(), &mut rowmajor)).unwrap().unwrap();
                prop_assert_eq!(&rowmajor, &out, "packed vs row-major bf16 GEMM");
            }
            let y = with_isa(isa, || ops::linear_packed(&tensor(&x, &[m, 1, k]), &p, bt.as_ref())).unwrap().unwrap();
            prop_assert_eq!(y.dims(), &[m, 1, n]);
            prop_assert_eq!(y.to_vec_f32().unwrap(), out.clone());
            let layer = Linear::new(w.clone(), bt.clone()).pack_bf16().unwrap();
            let z = with_isa(isa, || layer.forward(&tensor(&x, &[m, k]))).unwrap().unwrap();
            prop_assert_eq!(z.to_vec_f32().unwrap(), out);
        }
    }
}

/// `WeightStore::get_packed_bf16` from f32 (packed from the map, source pages released) and bf16
/// files equals packing the tensor `get` converts, and its layer computes the same as the dense
/// bf16 layer at prefill size on this CPU's best level.
#[test]
fn store_packs_like_tensor() {
    let dir = std::env::temp_dir().join(format!("kosmos-packed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let (n, k) = (70, 301);
    let f = tensor(&rand_vec(7, n * k, 1.0), &[n, k]);
    let h = f.to_dtype(DType::BF16).unwrap();
    write_safetensors(&path, &[("f", &f), ("h", &h)]).unwrap();
    let store = WeightStore::open(&path).unwrap();
    for name in ["f", "h"] {
        let p = store.get_packed_bf16(name, [n, k]).unwrap();
        let dense = store.get(name, &[n, k], DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(
            p.to_tensor().to_vec_f32().unwrap(),
            dense.to_vec_f32().unwrap(),
            "{name}"
        );
        let x = tensor(&rand_vec(8, 40 * k, 1.0), &[40, k]);
        let a = Linear::from_packed(p, None).unwrap().forward(&x).unwrap();
        let b = ops::linear(&x, &dense, None).unwrap();
        let (av, bv) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
        if Isa::current() == Isa::Avx512Bf16 {
            assert_eq!(av, bv, "{name}");
        } else {
            let (want, mag) = linear_ref(
                &round_bf16(&x.to_vec_f32().unwrap()),
                &dense.to_vec_f32().unwrap(),
                None,
                40,
                k,
                n,
            );
            assert_close(name, &av, &want, &mag, TOL);
        }
    }
    // A wrong shape or a missing key is a typed error.
    assert!(store.get_packed_bf16("f", [k, n]).is_err());
    assert!(store.get_packed_bf16("nope", [n, k]).is_err());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The packed GEMM walks the weights panel by panel over super-blocks of K when at least two K
/// blocks (256 pairs) of packed A fit its L2 budget (m ≤ 192 rows), and K block by K block
/// otherwise; both orders add each tile's K blocks in the same order, so on AVX512_BF16 either is
/// bitwise the row-major bf16 GEMM. The shapes: one super-block (71 rows), two (100 rows), two
/// with a partial last K block and an odd k (93 rows), and the K-block order (200, 257 rows);
/// partial last panels throughout.
#[test]
fn packed_gemm_orders_match_the_row_major_gemm() {
    if Isa::current() != Isa::Avx512Bf16 {
        eprintln!(
            "skipping: the packed GEMM orders need AVX512_BF16 (this CPU: {})",
            Isa::current()
        );
        return;
    }
    for (i, (m, k, n)) in [
        (71, 2048, 96),
        (93, 2063, 40),
        (100, 2048, 70),
        (200, 600, 50),
        (257, 1030, 45),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 40 + i as u64;
        let x = rand_vec(seed, m * k, 1.5);
        let (w, _) = typed(&rand_vec(seed ^ 1, n * k, 1.0), &[n, k], DType::BF16);
        let b = tensor(&rand_vec(seed ^ 2, n, 1.0), &[n]);
        let p = PackedBf16::from_tensor(&w).unwrap();
        let mut packed = vec![f32::NAN; m * n];
        ops::linear_packed_into(&x, &p, Some(&b), &mut packed).unwrap();
        let mut rowmajor = vec![f32::NAN; m * n];
        ops::linear_into(&x, &w, Some(&b), &mut rowmajor).unwrap();
        assert_eq!(packed, rowmajor, "m={m} k={k} n={n}");
    }
}

/// Shape errors are typed, never a panic.
#[test]
fn packed_shape_errors() {
    let (w, _) = typed(&rand_vec(1, 6 * 5, 1.0), &[6, 5], DType::BF16);
    let p = PackedBf16::from_tensor(&w).unwrap();
    let x = tensor(&rand_vec(2, 2 * 4, 1.0), &[2, 4]);
    assert!(ops::linear_packed(&x, &p, None).is_err());
    let mut out = vec![0f32; 12];
    assert!(ops::linear_packed_into(&[1.0; 10], &p, None, &mut out[..11]).is_err());
    assert!(
        ops::linear_packed_into(&[1.0; 10], &p, Some(&tensor(&[0.0; 5], &[5])), &mut out).is_err()
    );
    assert!(Linear::from_packed(p, Some(tensor(&[0.0; 5], &[5]))).is_err());
    assert!(PackedBf16::from_tensor(&tensor(&[1.0; 4], &[4])).is_err());
}
