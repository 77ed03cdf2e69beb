//! The extension points for swapping layers: [`EncoderBlock`], [`EncoderAttention`] and [`EncoderMlp`].
//!
//! The encoder runs a list of `Box<dyn EncoderBlock>`; [`crate::Encoder::replace_layer`] swaps one of
//! them. The stock block, [`crate::EncoderLayer`], is itself built from a `Box<dyn EncoderAttention>`
//! and a `Box<dyn EncoderMlp>`, so a custom attention or MLP can be dropped into one layer while
//! the layer norms and residuals stay HF's. (The text decoder's counterpart is `DecoderBlock`.)

use std::fmt;

use kosmos_tensor::Tensor;

use crate::error::Result;

/// What one block returns.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// The block's output, `[batch, tokens, hidden]`.
    pub hidden_states: Tensor,
    /// The attention probabilities `[batch, heads, tokens, tokens]`, when they were asked for.
    pub attentions: Option<Tensor>,
}

/// One encoder block (HF `Kosmos2VisionEncoderLayer`): `[B, T, D]` → `[B, T, D]`.
///
/// Implement it to replace a whole layer; see [`crate::Encoder::replace_layer`].
pub trait EncoderBlock: fmt::Debug + Send + Sync {
    /// Runs the block. When `output_attentions` is true the block must return its attention
    /// probabilities (`[B, heads, T, T]`); a `None` then makes the encoder fail with
    /// [`crate::Error::MissingAttentions`]. When it is false, return `None`.
    fn forward(&self, hidden_states: &Tensor, output_attentions: bool) -> Result<BlockOutput>;
}

/// The self-attention of a block (HF `Kosmos2VisionAttention`), without its residual or norm.
pub trait EncoderAttention: fmt::Debug + Send + Sync {
    /// `[B, T, D]` (already layer-normed) → (`[B, T, D]`, optional probabilities `[B, H, T, T]`).
    fn forward(
        &self,
        hidden_states: &Tensor,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)>;
}

/// The feed-forward part of a block (HF `Kosmos2VisionMLP`), without its residual or norm.
pub trait EncoderMlp: fmt::Debug + Send + Sync {
    /// `[B, T, D]` (already layer-normed) → `[B, T, D]`.
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor>;
}
