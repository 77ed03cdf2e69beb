//! `Kosmos2ForConditionalGeneration`, mirroring the HF class: [`Kosmos2Model`] plus `lm_head` and the loss.

use std::path::Path;

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{Device, Tensor};
use kosmos_text::{lm_logits, lm_loss_from_hidden, KvCache, LogitsMode};
use kosmos_vision::VisionOutput;

use crate::error::{Error, Result};
use crate::model::{load_dir, Kosmos2ForwardOptions, Kosmos2Inputs, Kosmos2Model};
use crate::precision::Precision;

/// The fields of HF `Kosmos2ForConditionalGenerationModelOutput`.
#[derive(Debug, Clone)]
pub struct Kosmos2Output {
    /// The mean LM loss, when labels were given.
    pub loss: Option<f32>,
    /// `[batch, seq_len, vocab]` ([`LogitsMode::All`]) or `[batch, 1, vocab]` ([`LogitsMode::Last`]).
    pub logits: Option<Tensor>,
    /// `[batch, seq_len, embed_dim]`, after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// The KV cache after this step.
    pub past_key_values: Option<KvCache>,
    /// Text hidden states (`layers + 1`), when asked for.
    pub hidden_states: Option<Vec<Tensor>>,
    /// Text attention probabilities, when asked for.
    pub attentions: Option<Vec<Tensor>>,
    /// The image embeddings computed in this pass.
    pub image_embeds: Option<Tensor>,
    /// The projection's attention probabilities, when asked for.
    pub projection_attentions: Option<Tensor>,
    /// The vision tower's output, when images were encoded in this pass.
    pub vision_model_output: Option<VisionOutput>,
}

/// Logits and labels of a [`Kosmos2ForConditionalGeneration::forward`] call.
#[derive(Debug, Clone, Copy, Default)]
pub struct LmOptions<'a> {
    /// Which positions get logits.
    pub logits: LogitsMode,
    /// `[batch, seq_len]` labels (`-100` = ignore); HF shifts them inside the loss.
    pub labels: Option<&'a [i64]>,
}

/// KOSMOS-2 for generation and scoring: [`Kosmos2Model`] plus `lm_head` (stored, or tied to
/// `embed_tokens`).
#[derive(Debug)]
pub struct Kosmos2ForConditionalGeneration {
    /// Vision tower, projection and text decoder.
    pub model: Kosmos2Model,
    /// `text_model.lm_head` (no bias), weight `[vocab_size, embed_dim]`: dense, or int8 at
    /// [`Precision::Int8`] and [`Precision::Int8Bf16`].
    pub lm_head: Linear,
    tied: bool,
}

impl Kosmos2ForConditionalGeneration {
    /// Loads a model directory: `config.json`, then `model.safetensors` or the shards of
    /// `model.safetensors.index.json`, at `precision`: a [`DType`](kosmos_tensor::DType) that
    /// every weight is converted to, or [`Precision::Int8`] / [`Precision::Int8Bf16`] (int8 text
    /// linears and head, the rest in f32 / bf16).
    ///
    /// `lm_head` is `text_model.lm_head.weight` when the file has it and `embed_tokens`
    /// otherwise (an int8 copy of it at the int8 precisions). Any difference between the file's
    /// keys and the config's is reported at once as [`Error::Weights`] with the missing and
    /// unexpected keys.
    pub fn load(
        dir: impl AsRef<Path>,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let loaded = load_dir(dir.as_ref(), device, precision.into())?;
        Ok(Self {
            model: loaded.model,
            lm_head: loaded.lm_head,
            tied: loaded.tied,
        })
    }

    /// Wraps a model; `lm_head = None` ties the head to `embed_tokens`.
    pub fn from_model(model: Kosmos2Model, lm_head: Option<Tensor>) -> Self {
        match lm_head {
            Some(w) => Self {
                model,
                lm_head: Linear::new(w, None),
                tied: false,
            },
            None => Self {
                lm_head: Linear::new(model.text_model.embed_tokens.clone(), None),
                model,
                tied: true,
            },
        }
    }

    /// Whether `lm_head` is `embed_tokens`.
    pub fn is_tied(&self) -> bool {
        self.tied
    }

    /// One forward pass (HF `Kosmos2ForConditionalGeneration.forward`): the model's outputs, the
    /// logits `lm.logits` selects and the loss when `lm.labels` are given.
    pub fn forward(
        &self,
        inputs: &Kosmos2Inputs<'_>,
        cache: Option<KvCache>,
        opts: &Kosmos2ForwardOptions<'_>,
        lm: &LmOptions<'_>,
    ) -> Result<Kosmos2Output> {
        if let Some(labels) = lm.labels {
            if labels.len() != inputs.text.batch * inputs.text.seq_len {
                return Err(Error::InvalidInput(format!(
                    "labels: {} values for a [{}, {}] batch",
                    labels.len(),
                    inputs.text.batch,
                    inputs.text.seq_len
                )));
            }
        }
        let out = self.model.forward(inputs, cache, opts)?;
        let logits = lm_logits(&out.last_hidden_state, &self.lm_head, lm.logits)?;
        let loss = lm
            .labels
            .map(|labels| {
                lm_loss_from_hidden(
                    &out.last_hidden_state,
                    &self.lm_head,
                    logits.as_ref(),
                    labels,
                )
            })
            .transpose()?;
        Ok(Kosmos2Output {
            loss,
            logits,
            last_hidden_state: out.last_hidden_state,
            past_key_values: out.past_key_values,
            hidden_states: out.hidden_states,
            attentions: out.attentions,
            image_embeds: out.image_embeds,
            projection_attentions: out.projection_attentions,
            vision_model_output: out.vision_model_output,
        })
    }
}
