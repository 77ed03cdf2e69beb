//! GEMV for one-row inputs (decode): `y = W x + b` reading `W` straight from its stored dtype.
//!
//! Rows of `W` are split across rayon threads; each row is one SIMD dot product that converts
//! bf16/f16 weights to f32 in registers (see `simd::dot`). Nothing is allocated besides the output.

use rayon::prelude::*;

use crate::simd::dot::DotElem;
use crate::simd::Isa;
use crate::storage::CpuSlice;

/// Weight rows per rayon task: big enough to amortise scheduling, small enough to balance 2+ cores.
const ROWS_PER_TASK: usize = 64;

/// A row-major `[out, in]` weight matrix (inner stride 1, row stride `row_stride`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightRows<'a> {
    pub(crate) data: CpuSlice<'a>,
    pub(crate) offset: usize,
    pub(crate) row_stride: usize,
}

/// `y[o] = dot(x, W[o]) + b[o]` for every `o < y.len()`.
pub(crate) fn gemv_into(
    isa: Isa,
    x: &[f32],
    w: WeightRows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match w.data {
        CpuSlice::F32(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
        CpuSlice::BF16(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
        CpuSlice::F16(d) => gemv_typed(isa, x, d, w.offset, w.row_stride, bias, y),
    }
}

fn gemv_typed<T: DotElem>(
    isa: Isa,
    x: &[f32],
    w: &[T],
    offset: usize,
    row_stride: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let k = x.len();
    let row = |o: usize| &w[offset + o * row_stride..offset + o * row_stride + k];
    // Rows `first..first + ys.len()`, four at a time.
    let block = |first: usize, ys: &mut [f32]| {
        let mut quads = ys.chunks_exact_mut(4);
        let mut o = first;
        for q in &mut quads {
            let d = T::dot4(isa, x, [row(o), row(o + 1), row(o + 2), row(o + 3)]);
            q.copy_from_slice(&d);
            o += 4;
        }
        for v in quads.into_remainder() {
            *v = T::dot(isa, x, row(o));
            o += 1;
        }
        if let Some(b) = bias {
            let len = ys.len();
            for (v, &bb) in ys.iter_mut().zip(&b[first..first + len]) {
                *v += bb;
            }
        }
    };
    let parallel = y.len() * k >= 1 << 16 && y.len() >= 2 * ROWS_PER_TASK;
    if parallel {
        y.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, ys)| block(c * ROWS_PER_TASK, ys));
    } else {
        block(0, y);
    }
}
