//! The KOSMOS-2 text decoder (HF `Kosmos2TextForCausalLM`) and its KV cache.
//!
//! - [`Kosmos2TextConfig`]: serde config with HF's names and aliases; defaults = the real model.
//! - [`TextTransformer`]: token embeddings with image insertion before the `sqrt(D)` scaling,
//!   sinusoidal positions with the pad rule, pre-LN blocks with sub-LN ([`TextBlock`]), final LayerNorm.
//! - [`TextForCausalLM`]: adds the tied (or stored) `lm_head` and the LM loss.
//! - [`KvCache`]: preallocated per-layer keys/values with a length per sequence.
//! - [`DecodeScratch`] + [`TextTransformer::decode_step`]: the allocation-free one-token step
//!   (keys/values appended in place, every intermediate in a reused workspace).
//! - [`DecoderBlock`]: the extension point for swapping one block ([`TextTransformer::replace_layer`]).
//!
//! Weight names live in [`weights`]; numerics follow `kosmos2-reference.md` §4.

mod attention;
mod block;
mod cache;
mod causal_lm;
mod config;
mod decode;
mod error;
mod ffn;
mod inputs;
mod loss;
mod mask;
mod positions;
mod transformer;
pub mod weights;

pub use attention::{AttentionOutput, TextAttention};
pub use block::{
    BlockInput, BlockOutput, DecoderAttention, DecoderBlock, DecoderFfn, Identity, TextBlock,
};
pub use cache::{KvCache, LayerCache, LayerKv};
pub use causal_lm::{
    lm_logits, lm_loss_from_hidden, load_lm_head, CausalLmOutput, LogitsMode, TextForCausalLM,
};
pub use config::{Kosmos2TextConfig, TextActivation, TokenIds};
pub use decode::{DecodeScratch, DecodeStep};
pub use error::{Error, Result};
pub use ffn::TextFfn;
pub use inputs::{ForwardOptions, TextInputs, TextOutput, TextTokens};
pub use loss::{lm_loss, LmLoss, IGNORE_INDEX};
pub use mask::{attention_mask, NEG};
pub use positions::{
    position_ids_from_input_ids, position_ids_from_inputs_embeds, PositionMode, SinusoidalPositions,
};
pub use transformer::TextTransformer;
pub use weights::{StoreWeights, TextNames, WeightSource};
