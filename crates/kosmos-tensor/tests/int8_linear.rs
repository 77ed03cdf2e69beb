//! `nn::Linear` with an int8 weight, and int8 weights stored in safetensors: `forward` and
//! `forward_into` agree with `ops::linear_int8` bitwise on every row count, `quantize_int8` keeps
//! the bias in f32, `Int8Weight::load` maps exactly what was written, and bad stored weights are
//! typed errors.

mod support;

use kosmos_tensor::nn::{Linear, LinearWeight};
use kosmos_tensor::quant::{scale_key, Int8Weight};
use kosmos_tensor::{
    ops, write_safetensors, write_safetensors_raw, DType, Device, Error, RawTensor, Tensor,
    WeightStore,
};
use support::*;

fn temp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kt-int8-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("w.safetensors")
}

#[test]
fn int8_linear_forward_and_forward_into_match_the_op() {
    let (n, k) = (37, 29);
    let w = tensor(&rand_vec(1, n * k, 1.0), &[n, k]);
    let b = tensor(&rand_vec(2, n, 0.5), &[n]);
    let dense = Linear::new(w.clone(), Some(b.clone()));
    let q = dense.quantize_int8().unwrap();
    assert!(q.is_int8() && !dense.is_int8());
    assert_eq!(q.dims(), [n, k]);
    assert_eq!(q.weight_bytes(), n * k + 4 * n);
    assert_eq!(dense.weight_bytes(), 4 * n * k);
    assert!(q.dense_weight().is_none());
    let LinearWeight::Int8(qw) = q.weight() else {
        panic!("not int8")
    };
    assert_eq!(qw.q(), Int8Weight::quantize(&w).unwrap().q());
    let bias = b.to_vec_f32().unwrap();
    // Quantising twice is the identity.
    let qq = q.quantize_int8().unwrap();
    for rows in [1, 2, 5, 16, 17, 33] {
        let x = rand_vec(10 + rows as u64, rows * k, 1.0);
        let xt = tensor(&x, &[rows, k]);
        let want = ops::linear_int8(&xt, qw, Some(&bias))
            .unwrap()
            .to_vec_f32()
            .unwrap();
        assert_eq!(q.forward(&xt).unwrap().to_vec_f32().unwrap(), want);
        assert_eq!(qq.forward(&xt).unwrap().to_vec_f32().unwrap(), want);
        let mut out = vec![0f32; rows * n];
        q.forward_into(&x, &mut out).unwrap();
        assert_eq!(out, want, "{rows} rows");
    }
    // Inputs that are not whole rows, or an output of the wrong size: typed errors.
    let mut out = vec![0f32; n];
    assert!(q.forward_into(&vec![0.0; k + 1], &mut out).is_err());
    assert!(q.forward_into(&vec![0.0; k], &mut out[1..]).is_err());
}

#[test]
fn bf16_bias_is_kept_in_f32_and_shapes_are_checked() {
    let w = tensor(&rand_vec(3, 8 * 4, 1.0), &[8, 4]);
    let (b16, b_rounded) = typed(&rand_vec(4, 8, 1.0), &[8], DType::BF16);
    let q = Linear::new(w.clone(), Some(b16)).quantize_int8().unwrap();
    let bias = q.bias().unwrap();
    assert_eq!(bias.dtype(), DType::F32);
    assert_eq!(bias.to_vec_f32().unwrap(), b_rounded);
    let qw = Int8Weight::quantize(&w).unwrap();
    let bad = tensor(&[0.0; 7], &[7]);
    assert!(matches!(
        Linear::from_int8(qw, Some(bad)),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn stored_int8_weights_load_as_mapped_views() {
    let (n, k) = (19, 70);
    let w = tensor(&rand_vec(5, n * k, 2.0), &[n, k]);
    let q = Int8Weight::quantize(&w).unwrap();
    let other = tensor(&rand_vec(6, 3, 1.0), &[3]);
    let path = temp("load");
    let f32_raw = other.to_vec_f32().unwrap();
    let f32_bytes: Vec<u8> = f32_raw.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = [
        (
            "other",
            RawTensor {
                dtype: "F32",
                shape: &[3],
                data: &f32_bytes,
            },
        ),
        (
            "m.weight",
            RawTensor {
                dtype: "I8",
                shape: &[n, k],
                data: q.q_bytes(),
            },
        ),
        (
            "m.weight_scale",
            RawTensor {
                dtype: "F32",
                shape: &[n],
                data: q.scale_bytes(),
            },
        ),
    ];
    write_safetensors_raw(&path, &tensors, &[("format", "pt")]).unwrap();
    let store = WeightStore::open(&path).unwrap();
    assert_eq!(store.stored_dtype_name("m.weight").unwrap(), "I8");
    assert_eq!(store.stored_dtype_name("other").unwrap(), "F32");
    assert_eq!(store.raw("m.weight").unwrap().data, q.q_bytes());
    assert_eq!(store.raw("other").unwrap().data, &f32_bytes[..]);
    let loaded = Int8Weight::load(&store, "m.weight", [n, k]).unwrap();
    assert_eq!(loaded.q(), q.q());
    assert_eq!(loaded.scales(), q.scales());
    assert!(format!("{loaded:?}").contains("mapped: true"));
    // Errors: wrong shape, a float weight, a missing key, a float read of an int8 tensor.
    assert!(matches!(
        Int8Weight::load(&store, "m.weight", [k, n]),
        Err(Error::WrongShape { .. })
    ));
    assert!(matches!(
        Int8Weight::load(&store, "other", [3, 1]),
        Err(Error::WrongShape { .. })
    ));
    assert!(matches!(
        Int8Weight::load(&store, "missing", [1, 1]),
        Err(Error::MissingKey { .. })
    ));
    assert!(matches!(
        store.get("m.weight", &[n, k], DType::F32, &Device::Cpu),
        Err(Error::UnsupportedDType { .. })
    ));
    // The mapped weight computes what the owned one does.
    let x = tensor(&rand_vec(7, 2 * k, 1.0), &[2, k]);
    assert_eq!(
        ops::linear_int8(&x, &loaded, None)
            .unwrap()
            .to_vec_f32()
            .unwrap(),
        ops::linear_int8(&x, &q, None)
            .unwrap()
            .to_vec_f32()
            .unwrap()
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn a_float_tensor_where_int8_is_expected_is_a_typed_error() {
    let path = temp("float");
    let w = tensor(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let s = tensor(&[1.0, 1.0], &[2]);
    write_safetensors(&path, &[("w", &w), (&scale_key("w"), &s)]).unwrap();
    let store = WeightStore::open(&path).unwrap();
    match Int8Weight::load(&store, "w", [2, 2]) {
        Err(Error::UnsupportedDType { dtype, .. }) => assert!(dtype.contains("expected I8")),
        other => panic!("expected UnsupportedDType, got {other:?}"),
    }
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn raw_writer_rejects_inconsistent_tensors() {
    let path = temp("raw");
    let cases: [&[(&str, RawTensor<'_>)]; 4] = [
        &[(
            "a",
            RawTensor {
                dtype: "F32",
                shape: &[2],
                data: &[0; 7],
            },
        )],
        &[(
            "a",
            RawTensor {
                dtype: "Q4",
                shape: &[1],
                data: &[0],
            },
        )],
        &[
            (
                "a",
                RawTensor {
                    dtype: "I8",
                    shape: &[1],
                    data: &[0],
                },
            ),
            (
                "a",
                RawTensor {
                    dtype: "I8",
                    shape: &[1],
                    data: &[0],
                },
            ),
        ],
        &[(
            "__metadata__",
            RawTensor {
                dtype: "I8",
                shape: &[1],
                data: &[0],
            },
        )],
    ];
    for tensors in cases {
        assert!(matches!(
            write_safetensors_raw(&path, tensors, &[]),
            Err(Error::InvalidArgument { .. })
        ));
    }
    // A shape whose element count overflows is rejected, not wrapped.
    let huge = [usize::MAX, 2];
    assert!(write_safetensors_raw(
        &path,
        &[(
            "a",
            RawTensor {
                dtype: "I8",
                shape: &huge,
                data: &[0]
            }
        )],
        &[]
    )
    .is_err());
    // Empty tensors are fine and round-trip.
    write_safetensors_raw(
        &path,
        &[(
            "e",
            RawTensor {
                dtype: "I8",
                shape: &[0, 3],
                data: &[],
            },
        )],
        &[],
    )
    .unwrap();
    let store = WeightStore::open(&path).unwrap();
    assert_eq!(store.raw("e").unwrap().shape, &[0, 3]);
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn quantising_works_from_every_float_dtype() {
    // Quantising a tensor works from any float dtype.
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let (w, rounded) = typed(&rand_vec(8, 12, 1.0), &[3, 4], dt);
        let q = Int8Weight::quantize(&w).unwrap();
        let want = Int8Weight::quantize(&Tensor::from_vec(rounded, &[3, 4], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(q.q(), want.q(), "{dt:?}");
    }
}
