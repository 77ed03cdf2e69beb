//! The inputs and options of a text forward pass (the arguments of HF `Kosmos2TextModel.forward`).

use kosmos_tensor::Tensor;

use crate::error::{Error, Result};
use crate::positions::PositionMode;

/// The tokens of a forward pass: ids, or embeddings that bypass `embed_tokens`.
#[derive(Debug, Clone, Copy)]
pub enum TextTokens<'a> {
    /// `input_ids`, `[batch, seq_len]` row-major.
    Ids(&'a [u32]),
    /// `inputs_embeds`, `[batch, seq_len, embed_dim]`, NOT yet multiplied by the embedding scale
    /// (HF multiplies them, like token embeddings, after image insertion).
    Embeds(&'a Tensor),
}

/// Everything HF's text `forward` takes besides the cache, for a `[batch, seq_len]` step.
///
/// ```
/// use kosmos_text::TextInputs;
/// let ids = [0, 7, 8, 1, 0, 9, 9, 9];
/// let mask = [1, 1, 1, 0, 1, 1, 1, 1];
/// let inputs = TextInputs::from_ids(&ids, 2, 4)?.with_attention_mask(&mask);
/// assert_eq!((inputs.batch, inputs.seq_len), (2, 4));
/// assert!(TextInputs::from_ids(&ids, 3, 4).is_err());
/// # Ok::<(), kosmos_text::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TextInputs<'a> {
    /// Rows.
    pub batch: usize,
    /// New tokens per row.
    pub seq_len: usize,
    /// Ids or embeddings.
    pub tokens: TextTokens<'a>,
    /// `[batch, cached + seq_len]` of 0/1 (1 = attend), or `None` for "attend to everything".
    pub attention_mask: Option<&'a [u32]>,
    /// `image_embeds` `[images, tokens_per_image, embed_dim]` from the projection; used only when
    /// the cache is empty (prefill), as in HF.
    pub image_embeds: Option<&'a Tensor>,
    /// `[batch, seq_len]` of 0/1: where the image embeddings go (row-major order of the 1s).
    pub image_embeds_position_mask: Option<&'a [u32]>,
    /// Explicit position ids `[batch, seq_len]`, overriding the pad rule (HF `position_ids`).
    pub position_ids: Option<&'a [u32]>,
}

impl<'a> TextInputs<'a> {
    /// Inputs from `input_ids` (`[batch, seq_len]` row-major).
    pub fn from_ids(ids: &'a [u32], batch: usize, seq_len: usize) -> Result<Self> {
        if batch == 0 || seq_len == 0 || ids.len() != batch * seq_len {
            return Err(Error::InputShape {
                what: "input_ids",
                expected: format!("[{batch}, {seq_len}] with both sizes > 0"),
                found: format!("{} ids", ids.len()),
            });
        }
        Ok(Self::new(TextTokens::Ids(ids), batch, seq_len))
    }

    /// Inputs from `inputs_embeds` (`[batch, seq_len, embed_dim]`, unscaled).
    pub fn from_embeds(embeds: &'a Tensor) -> Result<Self> {
        match *embeds.dims() {
            [b, t, _] if b > 0 && t > 0 => Ok(Self::new(TextTokens::Embeds(embeds), b, t)),
            ref other => Err(Error::InputShape {
                what: "inputs_embeds",
                expected: "[batch, seq_len, embed_dim]".into(),
                found: format!("{other:?}"),
            }),
        }
    }

    fn new(tokens: TextTokens<'a>, batch: usize, seq_len: usize) -> Self {
        Self {
            batch,
            seq_len,
            tokens,
            attention_mask: None,
            image_embeds: None,
            image_embeds_position_mask: None,
            position_ids: None,
        }
    }

    /// Adds the attention mask (`[batch, cached + seq_len]`, 0/1).
    pub fn with_attention_mask(mut self, mask: &'a [u32]) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Adds image embeddings and the mask of the positions they replace.
    pub fn with_image_embeds(mut self, image_embeds: &'a Tensor, position_mask: &'a [u32]) -> Self {
        self.image_embeds = Some(image_embeds);
        self.image_embeds_position_mask = Some(position_mask);
        self
    }

    /// Adds explicit position ids (`[batch, seq_len]`).
    pub fn with_position_ids(mut self, position_ids: &'a [u32]) -> Self {
        self.position_ids = Some(position_ids);
        self
    }
}

/// What a forward pass returns besides the last hidden state, and how it counts positions.
#[derive(Debug, Clone, Default)]
pub struct ForwardOptions<'a> {
    /// Return the input of every block plus the final output (`layers + 1` tensors, HF's
    /// `hidden_states`: the last one is after the final LayerNorm).
    pub output_hidden_states: bool,
    /// Return every block's attention probabilities.
    pub output_attentions: bool,
    /// `[layers, heads]` row-major factors multiplying the attention probabilities (1 keeps a head,
    /// 0 silences it).
    pub head_mask: Option<&'a [f32]>,
    /// How positions are counted with a cache (HF's rule by default).
    pub position_mode: PositionMode,
}

/// What the decoder returns (HF `BaseModelOutputWithPastAndCrossAttentions`; the cache is updated in place).
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// `[batch, seq_len, embed_dim]` after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// `layers + 1` tensors when asked: the embeddings (the input of block 0), the outputs of
    /// blocks `0..layers-1`, and `last_hidden_state` (HF ties the last entry to it).
    pub hidden_states: Option<Vec<Tensor>>,
    /// One `[batch, heads, seq_len, keys]` tensor per block when asked.
    pub attentions: Option<Vec<Tensor>>,
}
