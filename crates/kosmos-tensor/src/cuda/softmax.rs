//! Softmax, log-softmax and the attention-probabilities softmax on device rows.

use cudarc::driver::PushKernelArg;

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, to_i32, CudaResult};
use super::kernels::names;
use super::launch::{rows_config, NULL_PTR};
use super::norm::check_rows;

/// The additive mask of [`CudaBackend::scale_mask_softmax`]: f32 `[mask_batch, 1, q_len, k_len]`,
/// with `mask_batch` 1 (broadcast) or the batch size.
pub struct ScoreMask<'a> {
    /// The mask values.
    pub values: &'a dyn DeviceRead<f32>,
    /// 1 or the batch size.
    pub batch: usize,
}

impl std::fmt::Debug for ScoreMask<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreMask")
            .field("len", &self.values.view().len())
            .field("batch", &self.batch)
            .finish()
    }
}

impl CudaBackend {
    /// `y = softmax(x)` over rows of `cols` (a row of only -inf gives zeros).
    pub fn softmax<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()> {
        self.rowwise(names::SOFTMAX, "softmax", x, y, rows, cols)
    }

    /// `y = log_softmax(x)` over rows of `cols`.
    pub fn log_softmax<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()> {
        self.rowwise(names::LOG_SOFTMAX, "log_softmax", x, y, rows, cols)
    }

    fn rowwise<T: CudaElement>(
        &self,
        kernel: super::kernels::Kernel,
        op: &'static str,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()> {
        let cols_i = check_rows(op, rows, cols)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "y", yv.len(), rows * cols)?;
        let f = self.function(kernel, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&cols_i);
        // SAFETY: matches `<op>_<T>(const T*, T*, int)` in kernels/softmax.cu; lengths checked.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }

    /// Attention probabilities: `y = softmax(x * scale + mask)` for scores `x` of shape
    /// `[batch, heads, q_len, k_len]` (the output_attentions path; prefill uses the fused
    /// [`CudaBackend::flash_attention`]).
    #[allow(clippy::too_many_arguments)]
    pub fn scale_mask_softmax<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        mask: Option<ScoreMask<'_>>,
        batch: usize,
        heads: usize,
        q_len: usize,
        k_len: usize,
        scale: f32,
    ) -> CudaResult<()> {
        let op = "scale_mask_softmax";
        let rows = batch * heads * q_len;
        let cols_i = check_rows(op, rows, k_len)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), rows * k_len)?;
        check_len(op, "y", yv.len(), rows * k_len)?;
        let q_len_i = to_i32(op, "q_len", q_len)?;
        let rows_per_batch = to_i32(op, "heads * q_len", heads * q_len)?;
        let f = self.function(names::SCALE_MASK_SOFTMAX, T::SUFFIX, "")?;
        let mask_view = match &mask {
            Some(m) => {
                if m.batch != 1 && m.batch != batch {
                    return Err(invalid(
                        op,
                        format!("mask batch {} is neither 1 nor {batch}", m.batch),
                    ));
                }
                let v = m.values.view();
                check_len(op, "mask", v.len(), m.batch * q_len * k_len)?;
                Some(v)
            }
            None => None,
        };
        let mask_sb: i64 = match &mask {
            Some(m) if m.batch > 1 => (q_len * k_len) as i64,
            _ => 0,
        };
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv);
        match &mask_view {
            Some(v) => l.arg(v),
            None => l.arg(&NULL_PTR),
        };
        l.arg(&cols_i)
            .arg(&scale)
            .arg(&q_len_i)
            .arg(&rows_per_batch)
            .arg(&mask_sb);
        // SAFETY: matches `scale_mask_softmax_<T>`; lengths checked (mask rows indexed within
        // its [mask_batch, q_len, k_len] extent).
        unsafe { l.launch(rows_config(rows, k_len)) }.map_err(drv(op))?;
        Ok(())
    }
}
