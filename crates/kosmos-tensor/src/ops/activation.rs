//! Activations: exact (erf) GELU and CLIP's quick GELU.

use rayon::prelude::*;

use crate::error::Result;
use crate::simd::exp::exp_inplace;
use crate::simd::Isa;
use crate::tensor::{Tensor, PAR_THRESHOLD};

/// `0.5 x (1 + erf(x / √2))`, torch's exact `nn.GELU()` (erf from `libm`, correctly rounded to ~1 ulp).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    super::reject_empty("gelu_erf", x)?;
    x.map_f32("gelu_erf", |v| {
        v * 0.5 * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
    })
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
