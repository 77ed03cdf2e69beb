//! The decoder plus its LM head and loss; mirrors HF `Kosmos2TextForCausalLM`.

use kosmos_tensor::nn::Linear;
use kosmos_tensor::quant::Int8Weight;
use kosmos_tensor::Tensor;

use crate::cache::KvCache;
use crate::config::Kosmos2TextConfig;
use crate::error::{Error, Result};
use crate::inputs::{ForwardOptions, TextInputs};
use crate::loss::lm_loss;
use crate::transformer::TextTransformer;
use crate::weights::{TextNames, WeightSource};

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogitsMode {
    /// Every position, `[batch, seq_len, vocab]` (HF `logits_to_keep = 0`).
    #[default]
    All,
    /// Only the last position of each row, `[batch, 1, vocab]` (HF `logits_to_keep = 1`; decode).
    Last,
    /// No logits (hidden states or loss only).
    None,
}

/// What the causal LM returns (HF `CausalLMOutputWithCrossAttentions`; the cache is updated in place).
#[derive(Debug, Clone)]
pub struct CausalLmOutput {
    /// The logits selected by [`LogitsMode`].
    pub logits: Option<Tensor>,
    /// The mean LM loss when labels were given.
    pub loss: Option<f32>,
    /// `[batch, seq_len, embed_dim]` after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// See [`crate::TextOutput::hidden_states`].
    pub hidden_states: Option<Vec<Tensor>>,
    /// See [`crate::TextOutput::attentions`].
    pub attentions: Option<Vec<Tensor>>,
}

/// The text decoder with `lm_head` (no bias): stored in the checkpoint, or tied to `embed_tokens`.
#[derive(Debug)]
pub struct TextForCausalLM {
    /// The decoder.
    pub model: TextTransformer,
    /// `lm_head` (no bias), weight `[vocab_size, embed_dim]`: dense, or int8 when quantised.
    pub lm_head: Linear,
    tied: bool,
}

/// Loads `lm_head` (no bias): `<root>lm_head.weight` when the source has it (int8 when stored so),
/// otherwise `embed_tokens`, shared without a copy, or quantised to an int8 copy when the source
/// quantises ([`WeightSource::quantizes_int8`]; from the source's `embed_tokens` through
/// [`WeightSource::int8`] when it gives one, else from the loaded tensor). Returns the head and
/// whether it is `embed_tokens` itself.
pub fn load_lm_head(
    cfg: &Kosmos2TextConfig,
    src: &dyn WeightSource,
    names: &TextNames,
    embed_tokens: &Tensor,
) -> Result<(Linear, bool)> {
    let dims = [cfg.vocab_size, cfg.embed_dim];
    let key = names.lm_head();
    if src.contains(&key) {
        let head = match src.int8(&key, dims)? {
            Some(q) => Linear::from_int8(q, None)?,
            None => Linear::new(src.tensor(&key, &dims)?, None),
        };
        return Ok((head, false));
    }
    if src.quantizes_int8() {
        // From the source's own values, so that the head is the same whatever dtype
        // `embed_tokens` was converted to.
        let q = match src.int8(&names.embed_tokens(), dims)? {
            Some(q) => q,
            None => Int8Weight::quantize(embed_tokens)?,
        };
        return Ok((Linear::from_int8(q, None)?, false));
    }
    Ok((Linear::new(embed_tokens.clone(), None), true))
}

impl TextForCausalLM {
    /// Loads the decoder and `lm_head`; the head is `<root>lm_head.weight` when the source has it,
    /// otherwise `embed_tokens` (shared, no copy).
    pub fn load(
        cfg: &Kosmos2TextConfig,
        src: &dyn WeightSource,
        names: &TextNames,
    ) -> Result<Self> {
        let model = TextTransformer::load(cfg, src, names)?;
        let (lm_head, tied) = load_lm_head(cfg, src, names, &model.embed_tokens)?;
        Ok(Self {
            model,
            lm_head,
            tied,
        })
    }

    /// Wraps a decoder; `lm_head = None` ties the head to `embed_tokens`.
    pub fn from_parts(model: TextTransformer, lm_head: Option<Tensor>) -> Result<Self> {
        let want = [model.config().vocab_size, model.config().embed_dim];
        match lm_head {
            Some(w) if w.dims() != want => Err(Error::InvalidConfig(format!(
                "lm_head has shape {:?}, expected {want:?}",
                w.dims()
            ))),
            Some(w) => Ok(Self {
                model,
                lm_head: Linear::new(w, None),
                tied: false,
            }),
            None => Ok(Self {
                lm_head: Linear::new(model.embed_tokens.clone(), None),
                model,
                tied: true,
            }),
        }
    }

    /// Whether `lm_head` is `embed_tokens`.
    pub fn is_tied(&self) -> bool {
        self.tied
    }

    /// The configuration.
    pub fn config(&self) -> &Kosmos2TextConfig {
        self.model.config()
    }

    /// `hidden · lm_headᵀ` for the positions `mode` selects (`hidden` is `[batch, seq_len, embed_dim]`).
    pub fn logits(&self, hidden: &Tensor, mode: LogitsMode) -> Result<Option<Tensor>> {
        lm_logits(hidden, &self.lm_head, mode)
    }

    /// Runs the decoder, then `lm_head` on the positions `logits` selects, then the loss if
    /// `labels` (`[batch, seq_len]`, `-100` = ignore) are given.
    pub fn forward(
        &self,
        inputs: &TextInputs<'_>,
        cache: Option<&mut KvCache>,
        opts: &ForwardOptions<'_>,
        logits: LogitsMode,
        labels: Option<&[i64]>,
    ) -> Result<CausalLmOutput> {
        let out = self.model.forward(inputs, cache, opts)?;
        let logits = self.logits(&out.last_hidden_state, logits)?;
        let loss = labels
            .map(|labels| {
                lm_loss_from_hidden(
                    &out.last_hidden_state,
                    &self.lm_head,
                    logits.as_ref(),
                    labels,
                )
            })
            .transpose()?;
        Ok(CausalLmOutput {
            logits,
            loss,
            last_hidden_state: out.last_hidden_state,
            hidden_states: out.hidden_states,
            attentions: out.attentions,
        })
    }
}

/// `hidden · lm_headᵀ` (no bias) for the positions `mode` selects; `hidden` is `[batch, seq_len, embed_dim]`.
pub fn lm_logits(hidden: &Tensor, lm_head: &Linear, mode: LogitsMode) -> Result<Option<Tensor>> {
    let h = match mode {
        LogitsMode::None => return Ok(None),
        LogitsMode::All => hidden.clone(),
        LogitsMode::Last => {
            let t = hidden.dim(1)?;
            hidden.narrow(1, t - 1, 1)?
        }
    };
    Ok(Some(lm_head.forward(&h)?))
}

/// The mean LM loss of `labels` given the final hidden states; reuses `logits` when they cover
/// every position, computes them otherwise.
pub fn lm_loss_from_hidden(
    hidden: &Tensor,
    lm_head: &Linear,
    logits: Option<&Tensor>,
    labels: &[i64],
) -> Result<f32> {
    let all = match logits {
        Some(l) if l.dims()[..2] == hidden.dims()[..2] => l.clone(),
        _ => lm_head.forward(hidden)?,
    };
    Ok(lm_loss(&all, labels)?.mean)
}
