//! Elementwise ops: activations, GEMM epilogues (bias, bias + activation, bias + residual),
//! add / mul with a broadcast right operand, scale, dtype conversion and fill.

use cudarc::driver::PushKernelArg;

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, to_i32, CudaResult};
use super::kernels::names;
use super::launch::{elems_config, NULL_PTR};

/// The activation of a [`CudaBackend::bias_act`] epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity (bias only).
    None = 0,
    /// `0.5 x (1 + erf(x / sqrt 2))` (the text FFN).
    GeluErf = 1,
    /// `x * sigmoid(1.702 x)` (the CLIP MLP).
    QuickGelu = 2,
}

fn check_n(op: &'static str, n: usize) -> CudaResult<i64> {
    if n == 0 {
        return Err(invalid(op, "empty input"));
    }
    i64::try_from(n).map_err(|_| invalid(op, format!("{n} elements")))
}

impl CudaBackend {
    /// `y = gelu_erf(x)` over `n` elements.
    pub fn gelu_erf<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
    ) -> CudaResult<()> {
        self.unary(names::GELU_ERF, "gelu_erf", x, y, n)
    }

    /// `y = quick_gelu(x)` over `n` elements.
    pub fn quick_gelu<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
    ) -> CudaResult<()> {
        self.unary(names::QUICK_GELU, "quick_gelu", x, y, n)
    }

    fn unary<T: CudaElement>(
        &self,
        kernel: super::kernels::Kernel,
        op: &'static str,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
    ) -> CudaResult<()> {
        let n_i = check_n(op, n)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), n)?;
        check_len(op, "y", yv.len(), n)?;
        let f = self.function(kernel, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&n_i);
        // SAFETY: matches `<op>_<T>(const T*, T*, long long)`; lengths checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// In place on `[rows, cols]`: `x = act(x + bias)` with `bias` `[cols]` (the epilogue after
    /// a cuBLAS GEMM).
    pub fn bias_act<T: CudaElement>(
        &self,
        x: &mut impl DeviceWrite<T>,
        bias: &impl DeviceRead<T>,
        rows: usize,
        cols: usize,
        act: Activation,
    ) -> CudaResult<()> {
        let op = "bias_act";
        let n = rows * cols;
        let n_i = check_n(op, n)?;
        let cols_i = to_i32(op, "cols", cols)?;
        let (mut xv, bv) = (x.view_mut(), bias.view());
        check_len(op, "x", xv.len(), n)?;
        check_len(op, "bias", bv.len(), cols)?;
        let act_i = act as i32;
        let f = self.function(names::BIAS_ACT, T::SUFFIX, "")?;
        let (ptr, _guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut xv, self.stream());
        let mut l = self.stream().launch_builder(&f);
        l.arg(&ptr)
            .arg(&bv)
            .arg(&ptr)
            .arg(&n_i)
            .arg(&cols_i)
            .arg(&act_i);
        // SAFETY: matches `bias_act_<T>` with y == x (elementwise, allowed); lengths checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// In place on the residual stream `[rows, cols]`: `residual += x + bias` (bias optional;
    /// `x + bias` is rounded to `T` first, as an unfused linear would store it).
    pub fn bias_residual<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        bias: Option<&dyn DeviceRead<T>>,
        residual: &mut impl DeviceWrite<T>,
        rows: usize,
        cols: usize,
    ) -> CudaResult<()> {
        let op = "bias_residual";
        let n = rows * cols;
        let n_i = check_n(op, n)?;
        let cols_i = to_i32(op, "cols", cols)?;
        let (xv, mut rv) = (x.view(), residual.view_mut());
        check_len(op, "x", xv.len(), n)?;
        check_len(op, "residual", rv.len(), n)?;
        let bv = bias.map(|b| b.view());
        if let Some(b) = &bv {
            check_len(op, "bias", b.len(), cols)?;
        }
        let f = self.function(names::BIAS_RESIDUAL, T::SUFFIX, "")?;
        let (ptr, _guard) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut rv, self.stream());
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv);
        match &bv {
            Some(b) => l.arg(b),
            None => l.arg(&NULL_PTR),
        };
        l.arg(&ptr).arg(&ptr).arg(&n_i).arg(&cols_i);
        // SAFETY: matches `bias_residual_<T>` with y == residual (elementwise); lengths checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `y = a + b` with `b` broadcast over leading dims (`b.len()` divides `n`).
    pub fn add<T: CudaElement>(
        &self,
        a: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
        b_len: usize,
    ) -> CudaResult<()> {
        self.binary(names::ADD, "add", a, b, y, n, b_len)
    }

    /// `y = a * b` with `b` broadcast over leading dims (`b.len()` divides `n`).
    pub fn mul<T: CudaElement>(
        &self,
        a: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
        b_len: usize,
    ) -> CudaResult<()> {
        self.binary(names::MUL, "mul", a, b, y, n, b_len)
    }

    #[allow(clippy::too_many_arguments)]
    fn binary<T: CudaElement>(
        &self,
        kernel: super::kernels::Kernel,
        op: &'static str,
        a: &impl DeviceRead<T>,
        b: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
        b_len: usize,
    ) -> CudaResult<()> {
        let n_i = check_n(op, n)?;
        if b_len == 0 || !n.is_multiple_of(b_len) {
            return Err(invalid(
                op,
                format!("rhs length {b_len} does not divide {n}"),
            ));
        }
        let (av, bv, mut yv) = (a.view(), b.view(), y.view_mut());
        check_len(op, "a", av.len(), n)?;
        check_len(op, "b", bv.len(), b_len)?;
        check_len(op, "y", yv.len(), n)?;
        let b_len_i = b_len as i64;
        let f = self.function(kernel, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&av).arg(&bv).arg(&mut yv).arg(&n_i).arg(&b_len_i);
        // SAFETY: matches `<op>_<T>(const T*, const T*, T*, long long, long long)`.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `y = x * s` (one f32 multiply per element).
    pub fn scale<T: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<T>,
        n: usize,
        s: f32,
    ) -> CudaResult<()> {
        let op = "scale";
        let n_i = check_n(op, n)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), n)?;
        check_len(op, "y", yv.len(), n)?;
        let f = self.function(names::SCALE, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&n_i).arg(&s);
        // SAFETY: matches `scale_<T>`; lengths checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// `y = U(x)`: dtype conversion through f32 (round to nearest even).
    pub fn convert<T: CudaElement, U: CudaElement>(
        &self,
        x: &impl DeviceRead<T>,
        y: &mut impl DeviceWrite<U>,
        n: usize,
    ) -> CudaResult<()> {
        let op = "convert";
        let n_i = check_n(op, n)?;
        let (xv, mut yv) = (x.view(), y.view_mut());
        check_len(op, "x", xv.len(), n)?;
        check_len(op, "y", yv.len(), n)?;
        let f = self.function(names::CONVERT, T::SUFFIX, U::SUFFIX)?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&xv).arg(&mut yv).arg(&n_i);
        // SAFETY: matches `convert_<T>_<U>`; lengths checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }

    /// Fills `n` elements with `value` (rounded to `T`).
    pub fn fill<T: CudaElement>(
        &self,
        y: &mut impl DeviceWrite<T>,
        n: usize,
        value: f32,
    ) -> CudaResult<()> {
        let op = "fill";
        let n_i = check_n(op, n)?;
        let mut yv = y.view_mut();
        check_len(op, "y", yv.len(), n)?;
        let f = self.function(names::FILL, T::SUFFIX, "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(&mut yv).arg(&n_i).arg(&value);
        // SAFETY: matches `fill_<T>`; length checked.
        unsafe { l.launch(elems_config(n)) }.map_err(drv(op))?;
        Ok(())
    }
}
