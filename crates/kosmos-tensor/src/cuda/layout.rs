//! Strided views made contiguous on the device (`Tensor::contiguous` for CUDA storage).

use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, CudaResult};
use super::kernels::names;
use super::launch::elems_config;

/// The most dims a strided copy takes.
pub const MAX_RANK: usize = 6;

/// Mirror of `StridedLayout` in kernels/convert.cu (same field order and sizes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedLayout {
    dims: [i64; MAX_RANK],
    strides: [i64; MAX_RANK],
    offset: i64,
    rank: i32,
    pad: i32,
}

// SAFETY: plain `repr(C)` integers with the same layout as the CUDA struct.
unsafe impl DeviceRepr for StridedLayout {}

impl StridedLayout {
    fn new(op: &'static str, dims: &[usize], strides: &[usize], offset: usize) -> CudaResult<Self> {
        if dims.len() != strides.len() || dims.is_empty() || dims.len() > MAX_RANK {
            return Err(invalid(
                op,
                format!(
                    "dims {dims:?} / strides {strides:?}: rank must match and be 1..={MAX_RANK}"
                ),
            ));
        }
        let mut l = StridedLayout {
            dims: [1; MAX_RANK],
            strides: [0; MAX_RANK],
            offset: offset as i64,
            rank: dims.len() as i32,
            pad: 0,
        };
        for (i, (&d, &s)) in dims.iter().zip(strides).enumerate() {
            l.dims[i] = d as i64;
            l.strides[i] = s as i64;
        }
        Ok(l)
    }
}

impl CudaBackend {
    /// `y` = the view of `x` with `dims`, element `strides` (0 broadcasts) and `offset`, in
    /// row-major order. `x` must hold every element the view addresses.
    pub fn copy_strided<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        dims: &[usize],
        strides: &[usize],
        offset: usize,
    ) -> CudaResult<()> {
        let op = "copy_strided";
        let layout = StridedLayout::new(op, dims, strides, offset)?;
        let n: usize = dims.iter().product();
        if n == 0 {
            return Err(invalid(op, format!("empty view {dims:?}")));
        }
        let last = offset
            + dims
                .iter()
                .zip(strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>();
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), last + 1)?;
        check_len(op, "y", yv.len(), n)?;
        let n_i = n as i64;
        let f = self.function(names::COPY_STRIDED, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&n_i).arg(&layout);
        // SAFETY: matches `copy_strided_<T>(const T*, T*, long long, StridedLayout)`; the largest
        // source index (offset + sum (d-1) s) is inside `x`.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_cuda_struct_size() {
        // 6 + 6 + 1 long long, 2 int: 13 * 8 + 8 bytes.
        assert_eq!(std::mem::size_of::<StridedLayout>(), 112);
        assert!(StridedLayout::new("t", &[2, 3], &[1], 0).is_err());
        assert!(StridedLayout::new("t", &[1; 7], &[1; 7], 0).is_err());
    }
}
