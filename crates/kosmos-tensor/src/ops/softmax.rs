//! Softmax and log-softmax over the last dim (max-subtracted, f32, vectorised `exp`).

use rayon::prelude::*;

use crate::error::Result;
use crate::ops::norm::lane_sum;
use crate::simd::exp::exp_inplace;
use crate::simd::Isa;
use crate::tensor::{check_cpu, Tensor, PAR_THRESHOLD};

/// In-place softmax of one row. A row that is entirely `-inf` becomes all zeros (not NaN).
#[inline]
pub(crate) fn softmax_row(isa: Isa, row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    row.iter_mut().for_each(|v| *v -= max);
    exp_inplace(isa, row);
    let inv = 1.0 / lane_sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// In-place log-softmax of one row: `x - max - ln(sum(exp(x - max)))`.
fn log_softmax_row(isa: Isa, row: &mut [f32], scratch: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return;
    }
    scratch.clear();
    scratch.extend(row.iter().map(|v| v - max));
    exp_inplace(isa, scratch);
    let lse = lane_sum(scratch, |v| v).ln();
    row.iter_mut().for_each(|v| *v = *v - max - lse);
}

fn rowwise(
    op: &'static str,
    x: &Tensor,
    f: impl Fn(&mut [f32], &mut Vec<f32>) + Sync,
) -> Result<Tensor> {
    check_cpu(op, x.device())?;
    let (_, d) = super::rows_cols(op, x)?;
    let mut out = x.f32_cow(op)?.into_owned();
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(d)
            .for_each_init(Vec::new, |s, r| f(r, s));
    } else {
        let mut s = Vec::new();
        out.chunks_mut(d).for_each(|r| f(r, &mut s));
    }
    Ok(Tensor::from_f32_with_dtype(out, x.dims(), x.dtype()))
}

/// `softmax(x)` over the last dim.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let isa = Isa::current();
    rowwise("softmax_last_dim", x, |r, _| softmax_row(isa, r))
}

/// `log_softmax(x) = x - max - ln(sum(exp(x - max)))` over the last dim.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let isa = Isa::current();
    rowwise("log_softmax_last_dim", x, |r, s| log_softmax_row(isa, r, s))
}
