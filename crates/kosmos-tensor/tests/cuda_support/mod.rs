//! Helpers of the GPU tests (`tests/cuda_*.rs`): opening the device or skipping, random data,
//! upload/download in any dtype, CPU references and error measures.
#![allow(dead_code)]

use std::sync::Arc;

use kosmos_tensor::cuda::{CudaBackend, CudaElement, CudaError, CudaSlice, DeviceRead};
use kosmos_tensor::{DType, Device, Tensor};

/// The GPU, or `None` (with a line on stderr) when there is none. With
/// `KOSMOS2_REQUIRE_GPU=1` (the device check sets it) a missing GPU fails the test instead.
pub fn backend(test: &str) -> Option<Arc<CudaBackend>> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("KOSMOS2_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: KOSMOS2_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipping {test}: no CUDA device ({e})");
            None
        }
    }
}

/// Whether the error is the "nothing here" kind a CPU machine gives.
pub fn is_absent(e: &CudaError) -> bool {
    matches!(
        e,
        CudaError::NoDriver | CudaError::NoDevice { .. } | CudaError::LibraryMissing { .. }
    )
}

/// Deterministic values in [-scale, scale) (SplitMix64).
pub fn rand_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1);
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

/// `v` rounded to `T` and uploaded.
pub fn up<T: CudaElement>(be: &CudaBackend, v: &[f32]) -> CudaSlice<T> {
    let host: Vec<T> = v.iter().map(|&x| T::from_f32(x)).collect();
    be.htod(&host).expect("htod")
}

/// A device buffer read back as f32.
pub fn down<T: CudaElement>(be: &CudaBackend, s: &impl DeviceRead<T>) -> Vec<f32> {
    be.dtoh(s)
        .expect("dtoh")
        .into_iter()
        .map(|x| x.to_f32())
        .collect()
}

/// A buffer poisoned with NaN, so that an unwritten element fails the comparison.
pub fn poisoned<T: CudaElement>(be: &CudaBackend, n: usize) -> CudaSlice<T> {
    up::<T>(be, &vec![f32::NAN; n])
}

/// A CPU tensor holding `v` rounded to `dtype` (the same rounding as [`up`]).
pub fn cpu(v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("cpu tensor")
}

/// ‖a − b‖ / ‖b‖ (NaN anywhere gives +inf).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_nan() != y.is_nan() {
            return f64::INFINITY;
        }
        if x.is_nan() {
            continue;
        }
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    if den == 0.0 {
        return num.sqrt();
    }
    (num / den).sqrt()
}

/// The comparison tolerance of GPU vs CPU results stored in `T`.
pub fn tol<T: CudaElement>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2e-6,
        DType::BF16 => 1e-2,
        DType::F16 => 2e-3,
    }
}

/// Asserts `rel_err(got, want) <= tol::<T>() * factor`.
pub fn assert_close<T: CudaElement>(what: &str, got: &[f32], want: &[f32], factor: f64) {
    let e = rel_err(got, want);
    let t = tol::<T>() * factor;
    assert!(
        e <= t,
        "{what} [{}]: relative error {e:e} > {t:e}",
        T::SUFFIX
    );
}
