//! Ops the KOSMOS-2 model needs. All accept f32/bf16/f16 and strided inputs, compute in f32, and
//! return the dtype of their first (activation) input unless stated otherwise.

mod activation;
mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_bf16;
mod conv;
mod embedding;
mod gemv;
mod int8;
mod linear;
mod matmul;
mod norm;
mod packed;
mod reduce;
mod softmax;

pub(crate) use activation::apply_opt;
pub use activation::{gelu_erf, gelu_erf_inplace, quick_gelu, quick_gelu_inplace, Activation};
pub use attention::{
    attention, attention_decode_into, attention_products, attention_with_probs, AttentionProducts,
    DecodeAttention,
};
pub use conv::patchify_conv;
pub use embedding::{embedding, embedding_into};
pub use gemv::MAX_GEMV_ROWS;
pub use int8::{linear_int8, linear_int8_act, linear_int8_into};
pub use linear::{linear, linear_act, linear_into};
pub use matmul::matmul;
pub use norm::{
    add_layer_norm, add_layer_norm_into, l2_normalize_last_dim, layer_norm, layer_norm_into,
};
pub use packed::{linear_packed, linear_packed_act, linear_packed_into};
pub use reduce::{argmax_last_dim, argmax_slice, top_k_last_dim};
pub use softmax::{log_softmax_last_dim, softmax_last_dim};

use crate::error::{Error, Result};
use crate::storage::CpuSlice;
use crate::tensor::Tensor;

/// Runs `f` on a thread of the rayon pool the ops use (the global pool, or the one `f`'s caller is
/// already in), and returns its result.
///
/// Parallel ops called from outside the pool inject their work through rayon's global queue, which
/// allocates a queue block every 63 injections; called from inside the pool they use the thread's
/// own queue and allocate nothing. A decode loop that must not allocate per token runs in here.
///
/// ```
/// assert_eq!(kosmos_tensor::ops::in_pool(|| 6 * 7), 42);
/// ```
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// [`in_pool`] for work on `device`'s tensors: on the CPU, `f` runs on a pool thread; on a GPU it
/// runs on the calling thread, which holds the device context and whose host work is only
/// launching kernels.
///
/// A model's forward pass runs in here so that its parallel ops are forked from a pool thread: the
/// caller's thread then sleeps once per pass, instead of once per op (≈ 150 ops per decode step),
/// and the pool's threads are the only ones running.
///
/// ```
/// use kosmos_tensor::{ops, Device};
/// assert_eq!(rayon::current_thread_index(), None); // this thread is outside the pool
/// assert!(ops::in_pool_on(&Device::Cpu, rayon::current_thread_index).is_some());
/// ```
pub fn in_pool_on<R: Send>(device: &crate::Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() {
        in_pool(f)
    } else {
        f()
    }
}

/// Makes every thread of the current rayon pool start and run a no-op job, so that their start-up
/// (which allocates, and is asynchronous) is over before latency-sensitive work such as a decode
/// loop that must not allocate.
///
/// ```
/// kosmos_tensor::ops::warm_pool();
/// ```
pub fn warm_pool() {
    rayon::broadcast(|_| ());
}

/// The row count of an `_into` linear: `x` is `[rows, k]` and `out` `[rows, n]` (typed error otherwise).
pub(crate) fn into_rows(
    op: &'static str,
    x: &[f32],
    out: &[f32],
    [n, k]: [usize; 2],
) -> Result<usize> {
    if x.is_empty() || !x.len().is_multiple_of(k) || out.len() != x.len() / k * n {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![x.len(), out.len()],
            rhs: vec![n, k],
        });
    }
    Ok(x.len() / k)
}

/// The bias as f32 (borrowed when it is f32 already).
pub(crate) fn bias_f32(bias: CpuSlice<'_>) -> std::borrow::Cow<'_, [f32]> {
    match bias {
        CpuSlice::F32(b) => std::borrow::Cow::Borrowed(b),
        other => (0..other.len()).map(|i| other.get_f32(i)).collect(),
    }
}

/// A new `len`-element buffer written by `fill` without being zeroed first (a panel GEMM into
/// `GemmOut`, a LayerNorm's rows, attention heads).
///
/// # Safety
/// `fill` must write every element of the slice it is given, or panic.
pub(crate) unsafe fn new_output(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the first `len` elements were written by `fill` (the caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// Where a linear writes its `[rows, n]` result.
pub(crate) enum Out<'a> {
    /// A caller's buffer (its old contents are not used).
    Given(&'a mut [f32]),
    /// A new buffer for `rows` rows, created by the GEMM that fills it.
    New { out: &'a mut Vec<f32>, rows: usize },
}

impl<'a> Out<'a> {
    /// A panel GEMM into [`crate::simd::panel_gemm::GemmOut`]: every output starts from
    /// `bias` inside the GEMM, so a new buffer is not zeroed and no bias rows are written first.
    ///
    /// # Safety
    /// `gemm` must run a panel GEMM of `len` elements into the `GemmOut` it is given (which
    /// writes every one of them), or panic.
    #[cfg(target_arch = "x86_64")]
    pub(crate) unsafe fn set_by(
        self,
        len: usize,
        bias: Option<&[f32]>,
        gemm: impl FnOnce(crate::simd::panel_gemm::GemmOut<'_>),
    ) {
        use crate::simd::panel_gemm::GemmOut;
        match self {
            Out::Given(o) => gemm(GemmOut::set(&mut o[..len], bias)),
            // SAFETY: the GEMM writes all `len` elements (the caller's contract).
            Out::New { out, .. } => {
                *out = unsafe { new_output(len, |o| gemm(GemmOut(o, bias))) };
            }
        }
    }

    /// The start of a GEMM that adds to its output (the paths without [`Self::set_by`]): the
    /// buffer with `bias` in every `n`-wide row, and `true` (add to it); a caller's buffer without
    /// a bias is left as it is and `false` (overwrite it); a new one without a bias is zeros.
    pub(crate) fn bias_rows(self, n: usize, bias: Option<&[f32]>) -> (&'a mut [f32], bool) {
        match (self, bias) {
            (Out::Given(o), Some(b)) => {
                o.chunks_mut(n).for_each(|row| row.copy_from_slice(b));
                (o, true)
            }
            (Out::Given(o), None) => (o, false),
            (Out::New { out, rows }, b) => {
                *out = match b {
                    Some(b) => b.repeat(rows),
                    None => vec![0f32; rows * n],
                };
                (out, true)
            }
        }
    }
}

/// `(rows, cols)` of `x` seen as `[rows, last_dim]`; rejects rank 0 and empty tensors.
pub(crate) fn rows_cols(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    if x.rank() == 0 {
        return Err(Error::Rank {
            op,
            expected: 1,
            shape: x.dims().to_vec(),
        });
    }
    reject_empty(op, x)?;
    let cols = x.dims()[x.rank() - 1];
    Ok((x.elem_count() / cols, cols))
}

/// Error if `x` has a zero-sized dimension.
pub(crate) fn reject_empty(op: &'static str, x: &Tensor) -> Result<()> {
    if x.dims().contains(&0) {
        return Err(Error::Empty {
            op,
            shape: x.dims().to_vec(),
        });
    }
    Ok(())
}

/// Error unless `t` is `[n]`.
pub(crate) fn expect_vector(op: &'static str, t: &Tensor, n: usize, other: &Tensor) -> Result<()> {
    if t.dims() != [n] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: other.dims().to_vec(),
            rhs: t.dims().to_vec(),
        });
    }
    Ok(())
}
