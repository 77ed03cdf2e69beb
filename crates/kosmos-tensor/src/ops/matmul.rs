//! Batched matrix multiplication on the `gemm` crate.

use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::storage::CpuSlice;
use crate::tensor::{check_cpu, Tensor};

/// A strided f32 matrix inside a slice: element `(r, c)` is at `offset + r * rs + c * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedMat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) offset: usize,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl StridedMat<'_> {
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m, n] = (accumulate ? dst : 0) + lhs[m, k] · rhs[k, n]`, `dst` row-major with row stride `dst_rs`.
pub(crate) fn gemm_f32(
    dst: &mut [f32],
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: StridedMat<'_>,
    rhs: StridedMat<'_>,
    accumulate: bool,
    parallel: bool,
) {
    assert!(
        dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n),
        "gemm_f32 bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let par = if parallel && m * n * k >= 48 * 48 * 48 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above keeps every index the strides can reach inside the three slices, and
    // `dst` does not alias the inputs (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

/// Storage offsets of every matrix in the leading (batch) dims of `t`, row-major.
pub(crate) fn batch_offsets(t: &Tensor, lead: usize) -> Vec<usize> {
    let shape = &t.dims()[..lead];
    let strides = &t.strides()[..lead];
    let count: usize = shape.iter().product();
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0usize; lead];
    let mut off = t.layout.offset;
    for _ in 0..count {
        out.push(off);
        for d in (0..lead).rev() {
            idx[d] += 1;
            off += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
    out
}

/// An f32 version of `t` (a cheap clone when it already is f32).
pub(crate) fn as_f32(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// The f32 storage slice of an f32 tensor.
pub(crate) fn f32_storage(t: &Tensor) -> &[f32] {
    match t.storage.slice() {
        CpuSlice::F32(s) => s,
        _ => &[],
    }
}

/// Batched matmul: `[.., m, k] x [.., k, n] -> [.., m, n]`.
///
/// The leading dims must be identical, or `rhs` may be 2-D (shared by every batch). Strided views
/// (e.g. a transposed key) are read in place. The result has `lhs`'s dtype.
pub fn matmul(lhs: &Tensor, rhs: &Tensor) -> Result<Tensor> {
    check_cpu("matmul", lhs.device())?;
    check_cpu("matmul", rhs.device())?;
    let mismatch = || Error::ShapeMismatch {
        op: "matmul",
        lhs: lhs.dims().to_vec(),
        rhs: rhs.dims().to_vec(),
    };
    if lhs.rank() < 2 || rhs.rank() < 2 {
        return Err(mismatch());
    }
    let (lr, rr) = (lhs.rank(), rhs.rank());
    let (m, k) = (lhs.dims()[lr - 2], lhs.dims()[lr - 1]);
    let (k2, n) = (rhs.dims()[rr - 2], rhs.dims()[rr - 1]);
    let rhs_shared = rr == 2 && lr > 2;
    if k != k2 || (!rhs_shared && lhs.dims()[..lr - 2] != rhs.dims()[..rr - 2]) {
        return Err(mismatch());
    }
    super::reject_empty("matmul", lhs)?;
    super::reject_empty("matmul", rhs)?;
    let a = as_f32(lhs)?;
    let b = as_f32(rhs)?;
    let a_offs = batch_offsets(&a, lr - 2);
    let b_offs = if rhs_shared {
        vec![b.layout.offset; a_offs.len()]
    } else {
        batch_offsets(&b, rr - 2)
    };
    let (ad, bd) = (f32_storage(&a), f32_storage(&b));
    let (ars, acs) = (a.strides()[lr - 2], a.strides()[lr - 1]);
    let (brs, bcs) = (b.strides()[rr - 2], b.strides()[rr - 1]);
    let mut out = vec![0f32; a_offs.len() * m * n];
    let run = |(i, dst): (usize, &mut [f32]), parallel: bool| {
        let l = StridedMat {
            data: ad,
            offset: a_offs[i],
            rs: ars,
            cs: acs,
        };
        let r = StridedMat {
            data: bd,
            offset: b_offs[i],
            rs: brs,
            cs: bcs,
        };
        gemm_f32(dst, n, (m, n, k), l, r, false, parallel);
    };
    if a_offs.len() > 1 && m * n * k < 128 * 128 * 128 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|c| run(c, false));
    } else {
        out.chunks_mut(m * n).enumerate().for_each(|c| run(c, true));
    }
    let mut shape = lhs.dims()[..lr - 2].to_vec();
    shape.extend_from_slice(&[m, n]);
    Ok(Tensor::from_f32_with_dtype(out, &shape, lhs.dtype()))
}
