//! One decoder block and the [`DecoderBlock`] extension point; mirrors HF `Kosmos2TextBlock`.

use kosmos_tensor::nn::LayerNorm;
use kosmos_tensor::{ops, Tensor};

use crate::attention::{AttentionOutput, TextAttention};
use crate::cache::LayerCache;
use crate::config::Kosmos2TextConfig;
use crate::error::Result;
use crate::ffn::TextFfn;
use crate::weights::{load_layer_norm, BlockNames, WeightSource};

/// What a decoder block receives for one forward pass.
#[derive(Debug)]
pub struct BlockInput<'a> {
    /// The residual stream, `[batch, t, embed_dim]` f32.
    pub hidden_states: &'a Tensor,
    /// The additive mask `[batch, 1, t, keys]` (causal + padding), or `None` when nothing is masked.
    pub attention_mask: Option<&'a Tensor>,
    /// This layer's KV cache, when the pass keeps one: append this step's keys and values with
    /// [`LayerCache::append`] and attend to what it returns.
    pub cache: Option<LayerCache<'a>>,
    /// One factor per head multiplying the attention probabilities (HF 4.x `layer_head_mask`).
    pub head_mask: Option<&'a [f32]>,
    /// Whether to return the attention probabilities.
    pub output_attentions: bool,
}

/// What a decoder block returns.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// The new residual stream, same shape as the input.
    pub hidden_states: Tensor,
    /// The attention probabilities `[batch, heads, t, keys]`, when asked for and available.
    pub attentions: Option<Tensor>,
}

/// A decoder block of the text model: the extension point for swapping layers.
///
/// [`crate::TextTransformer::replace_layer`] installs any implementation in place of block `i`
/// (and returns the old one, so a replacement can wrap it). A replacement must keep the
/// residual-stream shape, and when it gets a cache it must append exactly this step's tokens
/// (the decoder advances every layer's length together). The stock block is [`TextBlock`]; to
/// replace only its attention or its FFN, implement [`DecoderAttention`] or [`DecoderFfn`] and use
/// [`TextBlock::with_attention`] / [`TextBlock::with_ffn`].
///
/// ```
/// use kosmos_text::{BlockInput, BlockOutput, DecoderBlock, Result};
///
/// /// Doubles what the wrapped block adds to the residual stream.
/// #[derive(Debug)]
/// struct Amplify(Box<dyn DecoderBlock>);
///
/// impl DecoderBlock for Amplify {
///     fn forward(&self, input: BlockInput<'_>) -> Result<BlockOutput> {
///         let x = input.hidden_states.clone();
///         let out = self.0.forward(input)?;
///         let delta = out.hidden_states.sub(&x)?;
///         Ok(BlockOutput { hidden_states: out.hidden_states.add(&delta)?, attentions: out.attentions })
///     }
/// }
/// # use kosmos_tensor::{Device, Tensor};
/// # use kosmos_text::{Kosmos2TextConfig, TextInputs, TextTransformer, TextNames, ForwardOptions};
/// # let cfg = Kosmos2TextConfig { vocab_size: 12, embed_dim: 8, layers: 2, ffn_dim: 16,
/// #     attention_heads: 2, ..Default::default() };
/// # let weights: std::collections::HashMap<String, Tensor> = TextNames::new("")
/// #     .all_keys(&cfg, false).into_iter().map(|(k, s)| {
/// #         let n: usize = s.iter().product();
/// #         let v = (0..n).map(|i| ((i * 7 + k.len()) % 13) as f32 / 13.0 - 0.5).collect();
/// #         (k, Tensor::from_vec(v, &s, &Device::Cpu).unwrap())
/// #     }).collect();
/// let mut model = TextTransformer::load(&cfg, &weights, &TextNames::new(""))?;
/// let inputs = TextInputs::from_ids(&[0, 5, 6, 7], 1, 4)?;
/// let before = model.forward(&inputs, None, &ForwardOptions::default())?.last_hidden_state;
/// let old = model.replace_layer(1, Box::new(Amplify(Box::new(kosmos_text::Identity))))?;
/// model.replace_layer(1, Box::new(Amplify(old)))?;
/// let after = model.forward(&inputs, None, &ForwardOptions::default())?.last_hidden_state;
/// assert_ne!(before.to_vec_f32()?, after.to_vec_f32()?);
/// # Ok::<(), kosmos_text::Error>(())
/// ```
pub trait DecoderBlock: Send + Sync + std::fmt::Debug {
    /// Runs the block on `input.hidden_states`.
    fn forward(&self, input: BlockInput<'_>) -> Result<BlockOutput>;

    /// The stock block behind this one, if it is one: the allocation-free decode step
    /// ([`crate::TextTransformer::decode_step`]) runs only when every block is a [`TextBlock`] with
    /// the stock attention and FFN. Replacement blocks keep the default (`None`).
    fn as_text_block(&self) -> Option<&TextBlock> {
        None
    }
}

/// A block that returns its input unchanged (and appends nothing to the cache; use it only
/// without a cache, or as a stand-in while swapping).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl DecoderBlock for Identity {
    fn forward(&self, input: BlockInput<'_>) -> Result<BlockOutput> {
        Ok(BlockOutput {
            hidden_states: input.hidden_states.clone(),
            attentions: None,
        })
    }
}

/// The self-attention inside a [`TextBlock`] (HF `KosmosTextAttention`), without its residual or
/// pre-LN: implement it to replace only the attention of one block ([`TextBlock::with_attention`]).
pub trait DecoderAttention: Send + Sync + std::fmt::Debug {
    /// `x` is `[batch, t, embed_dim]`, already layer-normed; see [`TextAttention::forward`].
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache<'_>>,
        head_mask: Option<&[f32]>,
        output_attentions: bool,
    ) -> Result<AttentionOutput>;

    /// The stock attention behind this one, if it is one (see [`DecoderBlock::as_text_block`]).
    fn as_text_attention(&self) -> Option<&TextAttention> {
        None
    }
}

impl DecoderAttention for TextAttention {
    fn as_text_attention(&self) -> Option<&TextAttention> {
        Some(self)
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache<'_>>,
        head_mask: Option<&[f32]>,
        output_attentions: bool,
    ) -> Result<AttentionOutput> {
        TextAttention::forward(self, x, mask, cache, head_mask, output_attentions)
    }
}

/// The feed-forward part of a [`TextBlock`] (HF `Kosmos2TextFFN`), without its residual or pre-LN:
/// implement it to replace only the MLP of one block ([`TextBlock::with_ffn`]).
pub trait DecoderFfn: Send + Sync + std::fmt::Debug {
    /// `[.., embed_dim]` (already layer-normed) -> `[.., embed_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// The stock FFN behind this one, if it is one (see [`DecoderBlock::as_text_block`]).
    fn as_text_ffn(&self) -> Option<&TextFfn> {
        None
    }
}

impl DecoderFfn for TextFfn {
    fn as_text_ffn(&self) -> Option<&TextFfn> {
        Some(self)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        TextFfn::forward(self, x)
    }
}

/// The stock pre-LN block with sub-LN ("Magneto") in the attention and the FFN:
/// `h += self_attn(self_attn_layer_norm(h))`, then `h += ffn(final_layer_norm(h))`.
///
/// The attention and the FFN are trait objects, so either can be swapped in one block while the
/// LayerNorms and residuals stay HF's: `TextBlock::load(..)?.with_ffn(Box::new(MyFfn))`, then
/// [`crate::TextTransformer::replace_layer`].
#[derive(Debug)]
pub struct TextBlock {
    /// Pre-LN of the attention.
    pub self_attn_layer_norm: LayerNorm,
    /// The self-attention ([`TextAttention`], with `inner_attn_ln`, when loaded).
    pub self_attn: Box<dyn DecoderAttention>,
    /// Pre-LN of the FFN.
    pub final_layer_norm: LayerNorm,
    /// The FFN ([`TextFfn`], with `ffn_layernorm`, when loaded).
    pub ffn: Box<dyn DecoderFfn>,
}

impl TextBlock {
    /// Loads one block's 20 tensors.
    pub fn load(
        cfg: &Kosmos2TextConfig,
        src: &dyn WeightSource,
        names: &BlockNames,
    ) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            self_attn_layer_norm: load_layer_norm(
                src,
                &names.self_attn_layer_norm,
                d,
                cfg.layer_norm_eps,
            )?,
            self_attn: Box::new(TextAttention::load(cfg, src, &names.self_attn)?),
            final_layer_norm: load_layer_norm(src, &names.final_layer_norm, d, cfg.layer_norm_eps)?,
            ffn: Box::new(TextFfn::load(cfg, src, &names.ffn)?),
        })
    }

    /// Replaces the self-attention, keeping the norms, the residuals and the FFN.
    pub fn with_attention(mut self, self_attn: Box<dyn DecoderAttention>) -> Self {
        self.self_attn = self_attn;
        self
    }

    /// Replaces the FFN, keeping the norms, the residuals and the attention.
    pub fn with_ffn(mut self, ffn: Box<dyn DecoderFfn>) -> Self {
        self.ffn = ffn;
        self
    }
}

impl DecoderBlock for TextBlock {
    fn as_text_block(&self) -> Option<&TextBlock> {
        Some(self)
    }
    fn forward(&self, input: BlockInput<'_>) -> Result<BlockOutput> {
        let BlockInput {
            hidden_states: residual,
            attention_mask,
            mut cache,
            head_mask,
            output_attentions,
        } = input;
        let x = self.self_attn_layer_norm.forward(residual)?;
        let attn = self.self_attn.forward(
            &x,
            attention_mask,
            cache.as_mut(),
            head_mask,
            output_attentions,
        )?;
        // h = residual + attn; x = final_layer_norm(h), fused.
        let ln = &self.final_layer_norm;
        let (h, x) =
            ops::add_layer_norm(&attn.hidden_states, residual, &ln.weight, &ln.bias, ln.eps)?;
        let y = self.ffn.forward(&x)?;
        Ok(BlockOutput {
            hidden_states: h.add(&y)?,
            attentions: attn.attentions,
        })
    }
}
