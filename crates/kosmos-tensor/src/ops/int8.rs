//! `linear_int8`: `x · deq(W)ᵀ + b` with an int8 per-output-channel weight ([`Int8Weight`]).
//!
//! - One row (decode): GEMV reading the int8 rows in place, widened to f32 in registers
//!   (`simd::int8`, AVX-512 / AVX2 / scalar by [`Isa::current`]), rows split across rayon, then
//!   `y[o] = scale[o] * dot(x, q[o]) + b[o]`.
//! - Several rows (prefill): panels of `q` are converted to f32 (exactly: small integers) in a
//!   reused, cache-sized buffer, multiplied with the f32 GEMM, and each output column is scaled.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ops::matmul::{gemm_f32, StridedMat};
use crate::quant::Int8Weight;
use crate::simd::int8::{dot4_i8, dot_i8};
use crate::simd::Isa;
use crate::tensor::{check_cpu, Tensor};

/// Weight rows per rayon task in the GEMV.
const ROWS_PER_TASK: usize = 64;

/// `x [.., in] · deq(W)[out, in]ᵀ (+ bias[out]) -> [.., out]`, in `x`'s dtype (computed in f32).
///
/// ```
/// use kosmos_tensor::{ops, quant::Int8Weight, Device, Tensor};
/// let w = Int8Weight::from_parts(vec![127, 0, -127, 127], vec![0.5, 1.0], 2, 2)?;
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], &Device::Cpu)?;
/// assert_eq!(ops::linear_int8(&x, &w, Some(&[1.0, 0.0]))?.to_vec_f32()?, vec![64.5, 127.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_int8(x: &Tensor, w: &Int8Weight, bias: Option<&[f32]>) -> Result<Tensor> {
    const OP: &str = "linear_int8";
    let isa = Isa::current();
    check_cpu(OP, x.device())?;
    let (rows, k) = super::rows_cols(OP, x)?;
    let [n, wk] = w.dims();
    if wk != k {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.dims().to_vec(),
            rhs: w.dims().to_vec(),
        });
    }
    if let Some(b) = bias {
        if b.len() != n {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: w.dims().to_vec(),
                rhs: vec![b.len()],
            });
        }
    }
    let xv = x.f32_cow(OP)?;
    let mut out = vec![0f32; rows * n];
    let mut shape = x.dims().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = n;
    if rows == 1 {
        gemv_int8_into(isa, &xv, w, bias, &mut out);
    } else {
        gemm_int8_into(&xv, rows, w, bias, &mut out);
    }
    Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()))
}

/// [`linear_int8`] on raw f32 rows into a caller-owned buffer (for a decode loop that allocates
/// nothing per token when `rows == 1`): `x` is `[rows, in]` row-major, `out` is `[rows, out]`.
///
/// ```
/// use kosmos_tensor::{ops, quant::Int8Weight};
/// let w = Int8Weight::from_parts(vec![127, 0, -127, 127], vec![0.5, 1.0], 2, 2)?;
/// let mut y = [0f32; 2];
/// ops::linear_int8_into(&[1.0, 2.0], 1, &w, None, &mut y)?;
/// assert_eq!(y, [63.5, 127.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_int8_into(
    x: &[f32],
    rows: usize,
    w: &Int8Weight,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "linear_int8_into";
    let [n, k] = w.dims();
    if rows == 0 {
        return Err(Error::Empty {
            op: OP,
            shape: vec![rows, k],
        });
    }
    if Some(x.len()) != rows.checked_mul(k)
        || Some(out.len()) != rows.checked_mul(n)
        || bias.is_some_and(|b| b.len() != n)
    {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: vec![x.len(), out.len(), bias.map_or(n, <[f32]>::len)],
            rhs: w.dims().to_vec(),
        });
    }
    if rows == 1 {
        gemv_int8_into(Isa::current(), x, w, bias, out);
    } else {
        gemm_int8_into(x, rows, w, bias, out);
    }
    Ok(())
}

/// `y[o] = scale[o] * dot(x, q[o]) (+ b[o])` for every output row; `y.len() == out`.
fn gemv_int8_into(isa: Isa, x: &[f32], w: &Int8Weight, bias: Option<&[f32]>, y: &mut [f32]) {
    let [n, k] = w.dims();
    assert!(x.len() == k && y.len() == n, "gemv_int8 bounds");
    let (q, scales) = (w.q(), w.scales());
    let row = |o: usize| &q[o * k..(o + 1) * k];
    let block = |first: usize, ys: &mut [f32]| {
        let mut quads = ys.chunks_exact_mut(4);
        let mut o = first;
        for quad in &mut quads {
            let d = dot4_i8(isa, x, [row(o), row(o + 1), row(o + 2), row(o + 3)]);
            quad.copy_from_slice(&d);
            o += 4;
        }
        for v in quads.into_remainder() {
            *v = dot_i8(isa, x, row(o));
            o += 1;
        }
        let len = ys.len();
        let s = &scales[first..first + len];
        match bias {
            Some(b) => {
                let b = &b[first..first + len];
                for ((v, &s), &b) in ys.iter_mut().zip(s).zip(b) {
                    *v = *v * s + b;
                }
            }
            None => ys.iter_mut().zip(s).for_each(|(v, &s)| *v *= s),
        }
    };
    if n * k >= 1 << 18 && n >= 2 * ROWS_PER_TASK {
        y.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(c, ys)| block(c * ROWS_PER_TASK, ys));
    } else {
        block(0, y);
    }
}

/// Multi-row path: per panel of output rows, `q` → f32 (exact) in a reused buffer, a
/// single-threaded f32 GEMM into the panel's own block, then scale (and bias) while scattering.
fn gemm_int8_into(x: &[f32], rows: usize, w: &Int8Weight, bias: Option<&[f32]>, out: &mut [f32]) {
    let [n, k] = w.dims();
    let (q, scales) = (w.q(), w.scales());
    let lhs = StridedMat {
        data: x,
        offset: 0,
        rs: k,
        cs: 1,
    };
    // Panels of at most ~4 MB of f32 (a converted panel stays in cache) and at least four panels
    // per thread; whole multiples of 16 rows.
    let by_cache = ((1usize << 20) / k).max(16);
    let by_balance = n.div_ceil(4 * rayon::current_num_threads()).max(16);
    let panel = by_cache.min(by_balance).next_multiple_of(16);
    let mut blocks = vec![0f32; rows * n];
    blocks
        .par_chunks_mut(rows * panel)
        .enumerate()
        .for_each_init(Vec::new, |wbuf: &mut Vec<f32>, (pi, block)| {
            let n0 = pi * panel;
            let nb = panel.min(n - n0);
            wbuf.resize(nb * k, 0.0);
            wbuf.iter_mut()
                .zip(&q[n0 * k..(n0 + nb) * k])
                .for_each(|(d, &v)| *d = f32::from(v));
            let rhs = StridedMat {
                data: wbuf,
                offset: 0,
                rs: 1,
                cs: k,
            };
            gemm_f32(block, nb, (rows, nb, k), lhs, rhs, false, false);
        });
    for n0 in (0..n).step_by(panel) {
        let nb = panel.min(n - n0);
        let block = &blocks[rows * n0..rows * (n0 + nb)];
        let s = &scales[n0..n0 + nb];
        for (i, src) in block.chunks(nb).enumerate() {
            let dst = &mut out[i * n + n0..i * n + n0 + nb];
            match bias {
                Some(b) => {
                    let b = &b[n0..n0 + nb];
                    for (((d, &v), &s), &b) in dst.iter_mut().zip(src).zip(s).zip(b) {
                        *d = v * s + b;
                    }
                }
                None => {
                    for ((d, &v), &s) in dst.iter_mut().zip(src).zip(s) {
                        *d = v * s;
                    }
                }
            }
        }
    }
}
