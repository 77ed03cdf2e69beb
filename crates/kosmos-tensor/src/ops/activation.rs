//! Activations: exact (erf) GELU and CLIP's quick GELU.

use rayon::prelude::*;

use crate::error::Result;
use crate::simd::exp::exp_inplace;
use crate::simd::Isa;
use crate::tensor::{Tensor, PAR_THRESHOLD};

/// An element-wise activation that a linear layer can apply to its output as it writes it
/// ([`crate::nn::Linear::forward_act`], [`super::linear_act`]): bitwise the same as the standalone
/// op on the layer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// The exact (erf) GELU, [`gelu_erf`].
    GeluErf,
    /// CLIP's `x * sigmoid(1.702 x)`, [`quick_gelu`].
    QuickGelu,
}

impl Activation {
    /// Applies the activation in place ([`gelu_erf_inplace`] / [`quick_gelu_inplace`]).
    ///
    /// ```
    /// use kosmos_tensor::ops::Activation;
    /// let mut v = [0.0f32, 1.0, -1.0];
    /// Activation::GeluErf.apply_inplace(&mut v);
    /// assert_eq!(v[0], 0.0);
    /// assert!((v[1] - 0.841_344_7).abs() < 1e-6 && (v[2] + 0.158_655_3).abs() < 1e-6);
    /// ```
    pub fn apply_inplace(self, xs: &mut [f32]) {
        match self {
            Activation::GeluErf => gelu_erf_inplace(xs),
            Activation::QuickGelu => quick_gelu_inplace(xs),
        }
    }

    /// [`Activation::apply_inplace`] on this thread at SIMD level `isa` (for a caller that is
    /// already parallel and took `isa` from its own thread).
    pub(crate) fn apply_serial(self, isa: Isa, xs: &mut [f32]) {
        match self {
            Activation::GeluErf => crate::simd::erf::gelu_erf_inplace(isa, xs),
            Activation::QuickGelu => quick_gelu_serial(isa, xs),
        }
    }
}

impl Activation {
    /// The standalone op on a tensor ([`gelu_erf`] / [`quick_gelu`]).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => gelu_erf(x),
            Activation::QuickGelu => quick_gelu(x),
        }
    }
}

/// Applies `act` (if any) to `xs` in place.
pub(crate) fn apply_opt(act: Option<Activation>, xs: &mut [f32]) {
    if let Some(a) = act {
        a.apply_inplace(xs);
    }
}

/// `0.5 x (1 + erf(x / √2))`, torch's exact `nn.GELU()`. erf is `libm::erff` (≈ 1 ulp), vectorised
/// on AVX-512 with the same operations (see `simd/erf.rs`: bitwise `libm` below |x / √2| = 1.25, at
/// most one ulp of erf apart above).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    super::reject_empty("gelu_erf", x)?;
    let mut out = x.f32_cow("gelu_erf")?.into_owned();
    gelu_erf_inplace(&mut out);
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}

/// [`gelu_erf`] in place on an f32 buffer (same arithmetic, no allocation).
pub fn gelu_erf_inplace(x: &mut [f32]) {
    let isa = Isa::current();
    if x.len() >= PAR_THRESHOLD {
        x.par_chunks_mut(4096)
            .for_each(|c| crate::simd::erf::gelu_erf_inplace(isa, c));
    } else {
        crate::simd::erf::gelu_erf_inplace(isa, x);
    }
}

/// [`quick_gelu`] in place on an f32 buffer (same arithmetic, no allocation).
pub fn quick_gelu_inplace(x: &mut [f32]) {
    let isa = Isa::current();
    if x.len() >= PAR_THRESHOLD {
        x.par_chunks_mut(4096)
            .for_each(|c| quick_gelu_serial(isa, c));
    } else {
        quick_gelu_serial(isa, x);
    }
}

/// [`quick_gelu_inplace`] on this thread at level `isa`.
fn quick_gelu_serial(isa: Isa, x: &mut [f32]) {
    let mut tmp = [0f32; 256];
    for c in x.chunks_mut(256) {
        let t = &mut tmp[..c.len()];
        t.iter_mut()
            .zip(c.iter())
            .for_each(|(o, &v)| *o = -1.702 * v);
        exp_inplace(isa, t);
        c.iter_mut()
            .zip(t.iter())
            .for_each(|(v, &e)| *v *= 1.0 / (1.0 + e));
    }
}

/// `x * sigmoid(1.702 x)`, CLIP's `QuickGELUActivation` (vectorised `exp`).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    let op = "quick_gelu";
    super::reject_empty(op, x)?;
    let isa = Isa::current();
    let xv = x.f32_cow(op)?;
    let mut out = vec![0f32; xv.len()];
    let kernel = |(o, xs): (&mut [f32], &[f32])| {
        o.iter_mut().zip(xs).for_each(|(o, &v)| *o = -1.702 * v);
        exp_inplace(isa, o);
        o.iter_mut()
            .zip(xs)
            .for_each(|(o, &v)| *o = v * (1.0 / (1.0 + *o)));
    };
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(4096)
            .zip(xv.par_chunks(4096))
            .for_each(kernel);
    } else {
        kernel((&mut out, &xv));
    }
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}
