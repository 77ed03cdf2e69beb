//! Token selection on the device: argmax, top-k and top-k/top-p sampling over logits rows.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead};
use super::error::{check_len, drv, invalid, CudaResult};
use super::kernels::names;
use super::launch::rows_config;
use super::norm::check_rows;

/// The most candidates [`CudaBackend::sample_top_k`] keeps (kernels/sampling.cu `SAMPLE_MAX_K`).
pub const SAMPLE_MAX_K: usize = 1024;

impl CudaBackend {
    /// Index of the largest value of each row into `out` (device; first index wins ties, NaN
    /// ranks above +inf, as the CPU `argmax_last_dim`).
    pub fn argmax<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        rows: usize,
        cols: usize,
        out: &mut CudaSlice<u32>,
    ) -> CudaResult<()> {
        let op = "argmax";
        let cols_i = check_rows(op, rows, cols)?;
        let xv = x.view();
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "out", out.len(), rows)?;
        let f = self.function(names::ARGMAX, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(out).arg(&cols_i);
        // SAFETY: matches `argmax_<T>(const T*, unsigned*, int)`; lengths checked.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }

    /// [`CudaBackend::argmax`] copied to the host.
    pub fn argmax_to_host<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<Vec<u32>> {
        let mut out = self.alloc::<u32>(rows)?;
        self.argmax(x, rows, cols, &mut out)?;
        self.dtoh(&out)
    }

    /// The `k` largest `(index, value)` of each row, largest first (ties: lower index first),
    /// as the CPU `top_k_last_dim`.
    pub fn top_k<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        rows: usize,
        cols: usize,
        k: usize,
    ) -> CudaResult<Vec<Vec<(u32, f32)>>> {
        let op = "top_k";
        let cols_i = check_rows(op, rows, cols)?;
        if k == 0 || k > cols {
            return Err(invalid(op, format!("k = {k} must be in 1..={cols}")));
        }
        let xv = x.view();
        check_len(op, "x", xv.len(), rows * cols)?;
        let mut idx = self.alloc::<u32>(rows * k)?;
        let mut val = self.alloc::<f32>(rows * k)?;
        let k_i = k as i32;
        let f = self.function(names::TOP_K, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv)
            .arg(&mut idx)
            .arg(&mut val)
            .arg(&cols_i)
            .arg(&k_i);
        // SAFETY: matches `top_k_<T>`; outputs hold rows * k elements.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        let (idx, val) = (self.dtoh(&idx)?, self.dtoh(&val)?);
        Ok(idx
            .chunks(k)
            .zip(val.chunks(k))
            .map(|(i, v)| i.iter().copied().zip(v.iter().copied()).collect())
            .collect())
    }

    /// Samples one id per row into `out` (device) from softmax(x / temperature) restricted to
    /// the top `k` and then to the smallest prefix reaching probability `top_p`; `uniform[row]`
    /// in [0, 1) is the draw (from the host's RNG).
    #[allow(clippy::too_many_arguments)]
    pub fn sample_top_k<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        rows: usize,
        cols: usize,
        k: usize,
        temperature: f32,
        top_p: f32,
        uniform: &CudaSlice<f32>,
        out: &mut CudaSlice<u32>,
    ) -> CudaResult<()> {
        let op = "sample_top_k";
        let cols_i = check_rows(op, rows, cols)?;
        if k == 0 || k > cols || k > SAMPLE_MAX_K {
            return Err(invalid(
                op,
                format!("k = {k} must be in 1..={}", cols.min(SAMPLE_MAX_K)),
            ));
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(invalid(
                op,
                format!("temperature {temperature} must be > 0"),
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(invalid(op, format!("top_p {top_p} must be in (0, 1]")));
        }
        let xv = x.view();
        check_len(op, "x", xv.len(), rows * cols)?;
        check_len(op, "uniform", uniform.len(), rows)?;
        check_len(op, "out", out.len(), rows)?;
        let k_i = k as i32;
        let f = self.function(names::SAMPLE_TOP_K, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(uniform).arg(out).arg(&cols_i).arg(&k_i);
        l.arg(&temperature).arg(&top_p);
        // SAFETY: matches `sample_top_k_<T>`; lengths checked, k <= SAMPLE_MAX_K.
        unsafe { l.launch(rows_config(rows, cols)) }.map_err(drv(op))?;
        Ok(())
    }
}
