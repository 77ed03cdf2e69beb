//! `linear`: `x · Wᵀ + b` with `W` stored `[out, in]` as in PyTorch.

use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::gemv::{gemv_into, gemv_rows_into, WeightRows, MAX_GEMV_ROWS};
use crate::ops::matmul::{f32_storage, gemm_f32, StridedMat};
use crate::ops::{apply_opt, Activation, Out};
#[cfg(target_arch = "x86_64")]
use crate::simd::panel_gemm::{GemmOut, Lhs};
use crate::simd::Isa;
use crate::storage::CpuSlice;
use crate::tensor::{check_cpu, Tensor};

/// `x [.., in] · W[out, in]ᵀ (+ b[out]) -> [.., out]`.
///
/// Leading dims are folded into one GEMM that reads `Wᵀ` through strides (no copy). A single row
/// (decode) takes the GEMV path, which reads f32/bf16/f16 weights in place. With bf16 weights and
/// more than `MAX_GEMV_ROWS` (16) rows the activations are rounded to bf16 and multiplied with
/// `vdpbf16ps` where the CPU has AVX512_BF16 (see `bf16_weight_gemm` for why every CPU rounds).
/// The result has `x`'s dtype.
///
/// ```
/// use kosmos_tensor::{ops, Device, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2], &Device::Cpu)?;
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![0.5, 0.5, 0.5], &[3], &Device::Cpu)?;
/// assert_eq!(ops::linear(&x, &w, Some(&b))?.to_vec_f32()?, vec![1.5, 2.5, 3.5]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    linear_impl(x, w, b, None)
}

/// `act(x · Wᵀ + b)`: [`linear`] with the activation applied to the output as it is produced.
///
/// The result is bitwise that of [`linear`] followed by the standalone op
/// ([`super::gelu_erf`] / [`super::quick_gelu`]). With f32 activations on AVX-512 the panel GEMMs
/// apply it to each output tile in registers (no second pass, no copy); elsewhere it runs in place
/// on the output. Activations in bf16/f16 are rounded to their dtype before the activation, as the
/// two separate ops do.
///
/// ```
/// use kosmos_tensor::{ops, ops::Activation, Device, Tensor};
/// let x = Tensor::from_vec(vec![1.0, -2.0], &[1, 2], &Device::Cpu)?;
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[2, 2], &Device::Cpu)?;
/// let fused = ops::linear_act(&x, &w, None, Activation::GeluErf)?;
/// let apart = ops::gelu_erf(&ops::linear(&x, &w, None)?)?;
/// assert_eq!(fused.to_vec_f32()?, apart.to_vec_f32()?);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_act(x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return act.apply(&linear(x, w, b)?);
    }
    linear_impl(x, w, b, Some(act))
}

/// [`linear`] (`act: None`) or [`linear_act`] with f32 activations.
fn linear_impl(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let isa = Isa::current();
    check_cpu("linear", x.device())?;
    check_cpu("linear", w.device())?;
    let (rows, k) = super::rows_cols("linear", x)?;
    if w.rank() != 2 || w.dims()[1] != k {
        return Err(Error::ShapeMismatch {
            op: "linear",
            lhs: x.dims().to_vec(),
            rhs: w.dims().to_vec(),
        });
    }
    let n = w.dims()[0];
    super::reject_empty("linear", w)?;
    let bias = match b {
        Some(b) => {
            super::expect_vector("linear", b, n, w)?;
            Some(b.f32_cow("linear")?)
        }
        None => None,
    };
    let xv = x.f32_cow("linear")?;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = n;

    if rows == 1 && w.strides()[1] == 1 {
        let mut out = vec![0f32; n];
        let rows_view = WeightRows {
            data: w.storage.slice(),
            offset: w.layout.offset,
            row_stride: w.strides()[0],
        };
        gemv_into(isa, &xv, rows_view, bias.as_deref(), &mut out);
        apply_opt(act, &mut out);
        return Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()));
    }

    let bias = bias.as_deref();
    let mut out = Vec::new();
    let dst = Out::New {
        out: &mut out,
        rows,
    };
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16
        && x.dtype() == DType::BF16
        && w.dtype() == DType::BF16
        && w.strides()[1] == 1
    {
        // bf16 activations and weights: vdpbf16ps, no conversion of either.
        let xb = x.contiguous()?;
        if let (Some(CpuSlice::BF16(a)), CpuSlice::BF16(wd)) =
            (xb.contiguous_slice(), w.storage.slice())
        {
            bf16_panel_gemm(Lhs::Bf16(a), rows, w, wd, bias, dst, act);
            return Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()));
        }
    }
    let lhs = StridedMat {
        data: &xv,
        offset: 0,
        rs: k,
        cs: 1,
    };
    if w.dtype() == DType::BF16 && rows > MAX_GEMV_ROWS {
        bf16_weight_gemm(isa, &xv, rows, w, bias, dst, act)?;
    } else if w.dtype() == DType::F32 {
        f32_weight_gemm(isa, lhs, rows, w, bias, dst, act);
    } else {
        let (o, add) = dst.bias_rows(n, bias);
        half_weight_gemm(o, rows, w, lhs, add)?;
        apply_opt(act, o);
    }
    Ok(Tensor::from_f32_with_dtype(out, &shape, x.dtype()))
}

/// [`linear`] into a caller's buffer: `x` is `[rows, in]` f32 row-major, `out` is `[rows, out]`.
///
/// Up to `MAX_GEMV_ROWS` (16) rows (decode) take the GEMV path: weights read once in their stored
/// dtype, bias added in f32, nothing allocated, and each row's result bitwise what one-row
/// [`linear`] gives (batch-invariant). More rows with f32 weights run one GEMM written straight
/// into `out`; with bf16 weights the rows are rounded to bf16 and take [`linear`]'s bf16 GEMM
/// (`vdpbf16ps` on AVX512_BF16, written straight into `out`); with f16 weights the panel GEMM,
/// whose converted panels are temporary buffers.
///
/// ```
/// use kosmos_tensor::{ops, Device, Tensor};
/// let w = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2], &Device::Cpu)?;
/// let mut out = [0f32; 3];
/// ops::linear_into(&[1.0, 2.0], &w, None, &mut out)?;
/// assert_eq!(out, [1.0, 2.0, 3.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn linear_into(x: &[f32], w: &Tensor, b: Option<&Tensor>, out: &mut [f32]) -> Result<()> {
    let op = "linear_into";
    let isa = Isa::current();
    check_cpu(op, w.device())?;
    super::reject_empty(op, w)?;
    if w.rank() != 2 {
        return Err(Error::Rank {
            op,
            expected: 2,
            shape: w.dims().to_vec(),
        });
    }
    let (n, k) = (w.dims()[0], w.dims()[1]);
    let rows = super::into_rows(op, x, out, [n, k])?;
    if let Some(b) = b {
        super::expect_vector(op, b, n, w)?;
        check_cpu(op, b.device())?;
    }
    // The bias as a typed slice when it is contiguous (always, for loaded weights).
    let bias = b.map(|b| b.contiguous_slice().ok_or(b));
    if rows <= MAX_GEMV_ROWS && w.strides()[1] == 1 {
        // GEMV (one row, or a small decode batch reading the weights once).
        let rows_view = WeightRows {
            data: w.storage.slice(),
            offset: w.layout.offset,
            row_stride: w.strides()[0],
        };
        match bias {
            None => gemv_rows_into(isa, x, rows, rows_view, None, out),
            Some(Ok(CpuSlice::F32(bv))) => gemv_rows_into(isa, x, rows, rows_view, Some(bv), out),
            Some(Ok(other)) => {
                // `dot + bias` in f32, as the f32 path does (the conversion is exact).
                gemv_rows_into(isa, x, rows, rows_view, None, out);
                for row in out.chunks_mut(n) {
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v += other.get_f32(i));
                }
            }
            Some(Err(bt)) => {
                let bv = bt.f32_cow(op)?;
                gemv_rows_into(isa, x, rows, rows_view, Some(&bv), out);
            }
        }
        return Ok(());
    }
    let bias = match bias {
        None => None,
        Some(Ok(bs)) => Some(super::bias_f32(bs)),
        Some(Err(bt)) => Some(bt.f32_cow(op)?),
    };
    let (bias, dst) = (bias.as_deref(), Out::Given(out));
    let lhs = StridedMat {
        data: x,
        offset: 0,
        rs: k,
        cs: 1,
    };
    if w.dtype() == DType::F32 {
        f32_weight_gemm(isa, lhs, rows, w, bias, dst, None);
        Ok(())
    } else if w.dtype() == DType::BF16 && rows > MAX_GEMV_ROWS {
        bf16_weight_gemm(isa, x, rows, w, bias, dst, None)
    } else {
        let (o, add) = dst.bias_rows(n, bias);
        half_weight_gemm(o, rows, w, lhs, add)
    }
}

/// GEMM with bf16 weights above `MAX_GEMV_ROWS` (16) rows (prefill, image encode): `out[rows, n] =
/// (accumulate ? out : 0) + bf16(x) · Wᵀ`, the activations rounded to bf16 (nearest even, bit-exact
/// with `half::bf16::from_f32`) as a bf16 PyTorch model's are at every linear input.
///
/// With AVX512_BF16 and unit-stride weight rows this is the `vdpbf16ps` GEMM (x rounded while it is
/// packed; the weights are never converted). On every other CPU (and for strided weights) x is rounded
/// the same way and multiplied by the weights converted to f32 ([`half_weight_gemm`]): the products
/// of two bf16 values are exact in f32 either way, so **every CPU computes the same products and the
/// results differ by f32 summation order only** (a few f32 ulps of `Σ|x·w|`), instead of prefill
/// numerics that change with the machine by up to a bf16 rounding of every activation. The rounding
/// costs one pass over x (`rows x k`), noise next to the `rows x k x n` GEMM, and keeps a model's
/// bf16 mode equal in kind to HF's bf16 everywhere. Decode (≤ `MAX_GEMV_ROWS` (16) rows in
/// [`linear_into`], one row in [`linear`]) keeps f32 activations, bitwise unchanged and batch-invariant.
/// The `vdpbf16ps` panel GEMM of `lhs` (`[rows, k]`) with the row-major bf16 weight `w`
/// (`[n, k]`, storage `wd`) into `out`, started from `bias`, `act` in its epilogue.
#[cfg(target_arch = "x86_64")]
fn bf16_panel_gemm(
    lhs: Lhs<'_>,
    rows: usize,
    w: &Tensor,
    wd: &[half::bf16],
    bias: Option<&[f32]>,
    out: Out<'_>,
    act: Option<Activation>,
) {
    let (n, k) = (w.dims()[0], w.dims()[1]);
    let (off, rs) = (w.layout.offset, w.strides()[0]);
    let gemm = |o: GemmOut<'_>| {
        crate::simd::panel_gemm::gemm_bf16_avx512(lhs, (rows, n, k), wd, off, rs, o, act)
    };
    // SAFETY: a `GemmOut` GEMM of `rows x n`.
    unsafe { out.set_by(rows * n, bias, gemm) };
}

/// `act` is applied to the result (in the GEMM's epilogue on AVX512_BF16).
fn bf16_weight_gemm(
    isa: Isa,
    x: &[f32],
    rows: usize,
    w: &Tensor,
    bias: Option<&[f32]>,
    out: Out<'_>,
    act: Option<Activation>,
) -> Result<()> {
    let (n, k) = (w.dims()[0], w.dims()[1]);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Bf16 && w.strides()[1] == 1 {
        if let CpuSlice::BF16(wd) = w.storage.slice() {
            bf16_panel_gemm(Lhs::F32(x), rows, w, wd, bias, out, act);
            return Ok(());
        }
    }
    // `convert` runs on this thread's level (`isa`), bit-exact on every level.
    let _ = isa;
    let xr = crate::convert::bf16_rounded(x);
    let lhs = StridedMat {
        data: &xr,
        offset: 0,
        rs: k,
        cs: 1,
    };
    let (out, add) = out.bias_rows(n, bias);
    half_weight_gemm(out, rows, w, lhs, add)?;
    apply_opt(act, &mut out[..rows * n]);
    Ok(())
}

/// GEMM with f32 weights: `out[rows, n] (+)= x · Wᵀ`, `x` row-major `[rows, k]` (`lhs`).
///
/// On AVX-512 with unit-stride weight rows this is the panel GEMM (`simd/panel_gemm.rs`): it packs
/// each 32-row panel of `W` in K blocks right before use, so the weights are read once and nothing
/// of the size of `Wᵀ` is written, which is what makes it faster than the `gemm` crate at the
/// model's 71-row prefill (issue 4). Elsewhere (and for strided weights, e.g. a transposed view) the
/// `gemm` crate reads `Wᵀ` through swapped strides. `act` is applied to the result (in the panel
/// GEMM's epilogue on AVX-512).
fn f32_weight_gemm(
    isa: Isa,
    lhs: StridedMat<'_>,
    rows: usize,
    w: &Tensor,
    bias: Option<&[f32]>,
    out: Out<'_>,
    act: Option<Activation>,
) {
    let (n, k) = (w.dims()[0], w.dims()[1]);
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 && w.strides()[1] == 1 && lhs.rs == k && lhs.cs == 1 {
        let a = &lhs.data[lhs.offset..lhs.offset + rows * k];
        let (off, rs) = (w.layout.offset, w.strides()[0]);
        let gemm = |o: GemmOut<'_>| {
            crate::simd::panel_gemm::gemm_f32_avx512(
                a,
                (rows, n, k),
                f32_storage(w),
                off,
                rs,
                o,
                act,
            )
        };
        // SAFETY: a `GemmOut` GEMM of `rows x n`.
        unsafe { out.set_by(rows * n, bias, gemm) };
        return;
    }
    let _ = isa;
    let (out, accumulate) = out.bias_rows(n, bias);
    // Wᵀ[k, n] = W[n, k]: read W through swapped strides.
    let rhs = StridedMat {
        data: f32_storage(w),
        offset: w.layout.offset,
        rs: w.strides()[1],
        cs: w.strides()[0],
    };
    gemm_f32(out, n, (rows, n, k), lhs, rhs, accumulate, true);
    apply_opt(act, &mut out[..rows * n]);
}

/// GEMM with bf16/f16 weights: convert panels of `W` rows to f32 (in parallel, into one reused buffer
/// that stays in cache) and run the f32 GEMM on each panel's output columns.
fn half_weight_gemm(
    out: &mut [f32],
    rows: usize,
    w: &Tensor,
    lhs: StridedMat<'_>,
    accumulate: bool,
) -> Result<()> {
    let (n, k) = (w.dims()[0], w.dims()[1]);
    let w = w.contiguous()?;
    let Some(data) = w.contiguous_slice() else {
        return Err(Error::InvalidArgument {
            op: "linear",
            msg: "weight is not contiguous".into(),
        });
    };
    // Panels of at most ~4 MB of f32 (so a converted panel stays in cache), and at least four
    // panels per thread so the work balances; whole multiples of 16 rows.
    let by_cache = ((1usize << 20) / k).max(16);
    let by_balance = n.div_ceil(4 * rayon::current_num_threads()).max(16);
    let panel = by_cache.min(by_balance).next_multiple_of(16);
    let panels = n.div_ceil(panel);
    // Each task converts one panel and runs a single-threaded GEMM into its own [rows, nb] block.
    let mut blocks = vec![0f32; rows * n];
    blocks
        .par_chunks_mut(rows * panel)
        .enumerate()
        .for_each_init(Vec::new, |wbuf: &mut Vec<f32>, (pi, block)| {
            let n0 = pi * panel;
            let nb = panel.min(n - n0);
            wbuf.resize(nb * k, 0.0);
            let range = n0 * k..(n0 + nb) * k;
            match data {
                CpuSlice::BF16(v) => v[range].convert_to_f32_slice(wbuf),
                CpuSlice::F16(v) => v[range].convert_to_f32_slice(wbuf),
                CpuSlice::F32(v) => wbuf.copy_from_slice(&v[range]),
            }
            let rhs = StridedMat {
                data: wbuf,
                offset: 0,
                rs: 1,
                cs: k,
            };
            gemm_f32(block, nb, (rows, nb, k), lhs, rhs, false, false);
        });
    for pi in 0..panels {
        let n0 = pi * panel;
        let nb = panel.min(n - n0);
        let block = &blocks[rows * n0..rows * (n0 + nb)];
        for (i, src) in block.chunks(nb).enumerate() {
            let dst = &mut out[i * n + n0..i * n + n0 + nb];
            if accumulate {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
    Ok(())
}
