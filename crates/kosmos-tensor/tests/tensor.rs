//! Tensor layout ops: views, copies, concat, in-place writes, dtype conversion, devices.

mod support;

use kosmos_tensor::{bf16, f16, DType, Device, Error, Tensor};
use proptest::prelude::*;
use support::*;

/// Row-major index -> value for a [a, b, c] tensor filled with 0..n.
fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    tensor(&(0..n).map(|v| v as f32).collect::<Vec<_>>(), shape)
}

#[test]
fn views_share_storage_and_index_correctly() {
    let t = iota(&[2, 3, 4]);
    let tr = t.transpose(0, 2).unwrap();
    assert_eq!(tr.dims(), &[4, 3, 2]);
    assert!(!tr.is_contiguous());
    let v = tr.to_vec_f32().unwrap();
    // tr[i, j, k] = t[k, j, i] = k*12 + j*4 + i
    for i in 0..4 {
        for j in 0..3 {
            for k in 0..2 {
                assert_eq!(v[(i * 3 + j) * 2 + k], (k * 12 + j * 4 + i) as f32);
            }
        }
    }
    let n = t.narrow(1, 1, 2).unwrap();
    assert_eq!(n.dims(), &[2, 2, 4]);
    assert_eq!(n.to_vec_f32().unwrap()[..4], [4.0, 5.0, 6.0, 7.0]);
    let first = t.narrow(0, 1, 1).unwrap();
    assert!(first.is_contiguous());
    assert_eq!(first.reshape(&[12]).unwrap().to_vec_f32().unwrap()[0], 12.0);
    // reshape of a non-contiguous view copies
    let r = tr.reshape(&[24]).unwrap();
    assert!(r.is_contiguous());
    assert_eq!(r.to_vec_f32().unwrap(), v);
    assert!(matches!(
        t.reshape(&[5, 5]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        t.narrow(1, 2, 2),
        Err(Error::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        t.transpose(0, 3),
        Err(Error::DimOutOfRange { .. })
    ));
    assert!(matches!(t.dim(3), Err(Error::DimOutOfRange { .. })));
    assert_eq!(t.dim(2).unwrap(), 4);
    assert_eq!((t.rank(), t.elem_count()), (3, 24));
}

#[test]
fn cat_and_broadcast() {
    let a = iota(&[2, 3]);
    let b = iota(&[2, 1]).scale(10.0).unwrap();
    let c = Tensor::cat(&[&a, &b], 1).unwrap();
    assert_eq!(c.dims(), &[2, 4]);
    assert_eq!(
        c.to_vec_f32().unwrap(),
        vec![0., 1., 2., 0., 3., 4., 5., 10.]
    );
    let r = Tensor::cat(
        &[&a, &a.transpose(0, 1).unwrap().transpose(0, 1).unwrap()],
        0,
    )
    .unwrap();
    assert_eq!(r.dims(), &[4, 3]);
    assert!(matches!(
        Tensor::cat(&[&a, &b], 0),
        Err(Error::ShapeMismatch { .. })
    ));
    let bf = a.to_dtype(DType::BF16).unwrap();
    assert!(matches!(
        Tensor::cat(&[&a, &bf], 0),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(Tensor::cat(&[], 0).is_err());
    let bl = b.broadcast_left(3).unwrap();
    assert_eq!(bl.dims(), &[3, 2, 1]);
    assert_eq!(bl.to_vec_f32().unwrap(), vec![0., 10., 0., 10., 0., 10.]);
}

#[test]
fn elementwise_broadcasts_suffix_only() {
    let x = iota(&[2, 2, 3]);
    let bias = tensor(&[1.0, 2.0, 3.0], &[3]);
    let y = x.add(&bias).unwrap();
    assert_eq!(y.to_vec_f32().unwrap()[..6], [1., 3., 5., 4., 6., 8.]);
    let m = x.mul(&iota(&[2, 3])).unwrap();
    assert_eq!(m.to_vec_f32().unwrap()[6..], [0., 7., 16., 27., 40., 55.]);
    assert!(matches!(
        x.add(&iota(&[2])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        x.add(&iota(&[3, 3])),
        Err(Error::ShapeMismatch { .. })
    ));
    // scale is an exact f32 product
    let s = tensor(&[0.1, 3.0], &[2])
        .scale(0.7)
        .unwrap()
        .to_vec_f32()
        .unwrap();
    assert_eq!(s, vec![0.1f32 * 0.7f32, 3.0f32 * 0.7f32]);
    // bf16 in, bf16 out, computed in f32
    let xb = x.to_dtype(DType::BF16).unwrap();
    let yb = xb.add(&bias).unwrap();
    assert_eq!(yb.dtype(), DType::BF16);
    assert_eq!(yb.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
}

#[test]
fn write_narrow_appends_like_a_kv_cache() {
    let mut cache = Tensor::zeros(&[1, 2, 5, 3], DType::F32, &Device::Cpu).unwrap();
    for step in 0..5 {
        let kv = iota(&[1, 2, 1, 3]).scale(step as f32 + 1.0).unwrap();
        cache.write_narrow(2, step, &kv).unwrap();
        let seen = cache.narrow(2, 0, step + 1).unwrap();
        assert_eq!(seen.dims(), &[1, 2, step + 1, 3]);
    }
    let v = cache.to_vec_f32().unwrap();
    // head 1, position 4, channel 2: iota value 5 times 5
    assert_eq!(v[(5 + 4) * 3 + 2], 25.0);
    // a shared view is copied on write: the view keeps the old values
    let view = cache.clone();
    cache
        .write_narrow(
            2,
            0,
            &Tensor::zeros(&[1, 2, 1, 3], DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    assert_eq!(view.to_vec_f32().unwrap(), v);
    assert_eq!(cache.to_vec_f32().unwrap()[1], 0.0);
    assert_eq!(v[1], 1.0);
    // writing through a transposed layout
    let mut t = iota(&[2, 3]).transpose(0, 1).unwrap(); // [3, 2]
    t.write_narrow(0, 1, &tensor(&[-1.0, -2.0], &[1, 2]))
        .unwrap();
    assert_eq!(t.to_vec_f32().unwrap(), vec![0., 3., -1., -2., 2., 5.]);
    // bf16 cache, f32 source
    let mut cb = Tensor::zeros(&[2, 2], DType::BF16, &Device::Cpu).unwrap();
    cb.write_narrow(1, 1, &tensor(&[1.5, 2.5], &[2, 1]))
        .unwrap();
    assert_eq!(cb.to_vec_f32().unwrap(), vec![0., 1.5, 0., 2.5]);
    assert!(matches!(
        cb.write_narrow(1, 2, &tensor(&[1.0, 2.0], &[2, 1])),
        Err(Error::RangeOutOfBounds { .. })
    ));
    assert!(matches!(
        cb.write_narrow(1, 0, &tensor(&[1.0, 2.0, 3.0], &[3, 1])),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn constructors_and_dtypes() {
    let cpu = Device::Cpu;
    assert!(matches!(
        Tensor::from_vec(vec![1.0; 5], &[2, 3], &cpu),
        Err(Error::ElementCount { .. })
    ));
    let b = Tensor::from_vec_bf16(vec![bf16::from_f32(1.5); 2], &[2], &cpu).unwrap();
    assert_eq!(b.dtype(), DType::BF16);
    let h = Tensor::from_vec_f16(vec![f16::from_f32(-2.0); 2], &[1, 2], &cpu).unwrap();
    assert_eq!(
        h.to_dtype(DType::F32).unwrap().to_vec_f32().unwrap(),
        vec![-2.0, -2.0]
    );
    // round to nearest even on conversion
    let x = tensor(&[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0], &[2]);
    assert_eq!(
        x.to_dtype(DType::BF16).unwrap().to_vec_f32().unwrap(),
        vec![1.0, 1.0 + 4.0 / 256.0]
    );
    assert!(matches!(
        Device::cuda(0),
        Err(Error::CudaNotCompiled { .. })
    ));
    assert!(Device::Cpu.is_cpu());
    assert_eq!(
        Tensor::zeros(&[], DType::F32, &cpu)
            .unwrap()
            .to_scalar_f32()
            .unwrap(),
        0.0
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    // Random chains of views against an explicitly indexed reference.
    #[test]
    fn view_chains_match_index_math(a in 1usize..5, b in 1usize..5, c in 1usize..5, d0 in 0usize..3, d1 in 0usize..3,
                                    dim in 0usize..3, start in 0usize..4, dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::F16])) {
        let shape = [a, b, c];
        let t = iota(&shape).to_dtype(dt).unwrap();
        let tr = t.transpose(d0, d1).unwrap();
        let mut perm = [0usize, 1, 2];
        perm.swap(d0, d1);
        let ts: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let start = start.min(ts[dim] - 1);
        let len = ts[dim] - start;
        let n = tr.narrow(dim, start, len).unwrap();
        let got = n.to_vec_f32().unwrap();
        let strides = [b * c, c, 1];
        let mut want = Vec::new();
        let mut dims = ts.clone();
        dims[dim] = len;
        for i in 0..dims[0] { for j in 0..dims[1] { for k in 0..dims[2] {
            let mut idx = [i, j, k];
            idx[dim] += start;
            let off: usize = (0..3).map(|q| idx[q] * strides[perm[q]]).sum();
            want.push(off as f32);
        }}}
        prop_assert_eq!(got, want.clone());
        let cont = n.contiguous().unwrap();
        prop_assert!(cont.is_contiguous());
        prop_assert_eq!(cont.dtype(), dt);
        prop_assert_eq!(cont.to_vec_f32().unwrap(), want);
    }
}
