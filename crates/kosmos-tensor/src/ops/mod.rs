//! Ops the KOSMOS-2 model needs. All accept f32/bf16/f16 and strided inputs, compute in f32, and
//! return the dtype of their first (activation) input unless stated otherwise.

mod activation;
mod attention;
mod conv;
mod embedding;
mod gemv;
mod int8;
mod linear;
mod matmul;
mod norm;
mod reduce;
mod softmax;

pub use activation::{gelu_erf, quick_gelu};
pub use attention::{attention, attention_with_probs};
pub use conv::patchify_conv;
pub use embedding::embedding;
pub use int8::{linear_int8, linear_int8_into};
pub use linear::linear;
pub use matmul::matmul;
pub use norm::{add_layer_norm, l2_normalize_last_dim, layer_norm};
pub use reduce::{argmax_last_dim, top_k_last_dim};
pub use softmax::{log_softmax_last_dim, softmax_last_dim};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

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
