//! LayerNorm, LayerNorm fused with the residual add, and L2 normalisation on device rows.

use cudarc::driver::PushKernelArg;

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, to_i32, CudaResult};
use super::kernels::names;
use super::launch::{rows_config, MAX_GRID_X};

/// Checks a `[rows, cols]` problem against the buffers' lengths.
pub(crate) fn check_rows(op: &'static str, rows: usize, cols: usize) -> CudaResult<i32> {
    if rows == 0 || cols == 0 {
        return Err(invalid(op, format!("empty input: {rows} rows of {cols}")));
    }
    if rows > MAX_GRID_X {
        return Err(invalid(op, format!("{rows} rows exceed one launch")));
    }
    to_i32(op, "cols", cols)
}

impl CudaBackend {
    /// `y = (x - mean) / sqrt(var + eps) * w + b` over rows of `cols` (torch.nn.LayerNorm: biased
    /// variance, f32 arithmetic). `x`, `y`: `[rows, cols]`; `w`, `b`: `[cols]`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        w: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let op = "layer_norm";
        let cols_i = check_rows(op, rows, cols)?;
        let (xv, wv, bv, mut yv) = (x.view(), w.view(), b.view(), y.view_mut());
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "w", wv.len(), cols)?;
        check_len(op, "b", bv.len(), cols)?;
        check_len(op, "y", yv.len(), rows * cols)?;
        let f = self.function(names::LAYER_NORM, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv)
            .arg(&wv)
            .arg(&bv)
            .arg(&mut yv)
            .arg(&cols_i)
            .arg(&eps);
        // SAFETY: argument types and order match `layer_norm_<T>` in kernels/layernorm.cu, and
        // every buffer holds at least the elements the kernel touches (checked above).
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `sum = x + residual` (written, rounded to `T`), `y = layer_norm(sum)`. Shapes as
    /// [`CudaBackend::layer_norm`]. For an in-place residual stream use
    /// [`CudaBackend::add_layer_norm_inplace`].
    #[allow(clippy::too_many_arguments)]
    pub fn add_layer_norm<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        residual: &impl DeviceRead<T>,
        w: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        sum: &mut impl DeviceWrite<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let op = "add_layer_norm";
        let cols_i = check_rows(op, rows, cols)?;
        let (xv, rv, wv, bv) = (x.view(), residual.view(), w.view(), b.view());
        let (mut sv, mut yv) = (sum.view_mut(), y.view_mut());
        for (name, len) in [("x", xv.len()), ("residual", rv.len()), ("sum", sv.len())] {
            check_len(op, name, len, rows * cols)?;
        }
        check_len(op, "y", yv.len(), rows * cols)?;
        check_len(op, "w", wv.len(), cols)?;
        check_len(op, "b", bv.len(), cols)?;
        let f = self.function(names::ADD_LAYER_NORM, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv)
            .arg(&rv)
            .arg(&wv)
            .arg(&bv)
            .arg(&mut sv)
            .arg(&mut yv);
        l.arg(&cols_i).arg(&eps);
        // SAFETY: matches `add_layer_norm_<T>`; lengths checked.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `residual += x; y = layer_norm(residual)`: the pre-LN block step, with the residual
    /// stream updated in place.
    #[allow(clippy::too_many_arguments)]
    pub fn add_layer_norm_inplace<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        residual: &mut impl DeviceWrite<T>,
        w: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let op = "add_layer_norm_inplace";
        let cols_i = check_rows(op, rows, cols)?;
        let (xv, wv, bv) = (x.view(), w.view(), b.view());
        let (mut rv, mut yv) = (residual.view_mut(), y.view_mut());
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "residual", rv.len(), rows * cols)?;
        check_len(op, "y", yv.len(), rows * cols)?;
        check_len(op, "w", wv.len(), cols)?;
        check_len(op, "b", bv.len(), cols)?;
        let f = self.function(names::ADD_LAYER_NORM, T::SUFFIX, "")?;
        // The kernel reads residual[i] before writing sum[i] in the same thread, so passing the
        // residual buffer as both is sound; the pointer is pushed twice.
        let (r_ptr, _guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut rv, self.stream());
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv)
            .arg(&r_ptr)
            .arg(&wv)
            .arg(&bv)
            .arg(&r_ptr)
            .arg(&mut yv);
        l.arg(&cols_i).arg(&eps);
        // SAFETY: matches `add_layer_norm_<T>` with residual == sum (allowed by the kernel).
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `y = x / max(||x||_2, eps)` over rows of `cols` (F.normalize(dim=-1)).
    pub fn l2_normalize<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> CudaResult<()> {
        let op = "l2_normalize";
        let cols_i = check_rows(op, rows, cols)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "y", yv.len(), rows * cols)?;
        let f = self.function(names::L2_NORMALIZE, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&cols_i).arg(&eps);
        // SAFETY: matches `l2_normalize_<T>`; lengths checked.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }
}
