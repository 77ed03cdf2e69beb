//! The model behind the task subcommands: [`Kosmos2ForConditionalGeneration`] run through the
//! facade's [`ImageSession`] (the image encoded once, timed on its own; then greedy, sampling or
//! beam search with a KV cache, HF's generation rules).

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result};
use kosmos2::generation::{FinishReason, GenerationConfig, PromptBatch};
use kosmos2::{
    prompts_from_processor, Device, ImageSession, Kosmos2ForConditionalGeneration, Precision,
    Tensor,
};
use kosmos_processor::ProcessorOutput;

use crate::run::{Engine, EngineOutput};

/// The loaded model plus the generation settings of a run.
#[derive(Debug)]
pub struct ModelEngine {
    model: Kosmos2ForConditionalGeneration,
    device: Device,
    gen: GenerationConfig,
}

impl ModelEngine {
    /// Loads `dir` (config.json and the safetensors weights) on `device` at `precision`.
    pub fn load(
        dir: &Path,
        device: &Device,
        precision: Precision,
        gen: GenerationConfig,
    ) -> Result<Self> {
        let model = Kosmos2ForConditionalGeneration::load(dir, device, precision)
            .with_context(|| format!("cannot load the model from {}", dir.display()))?;
        Ok(Self {
            model,
            device: device.clone(),
            gen,
        })
    }

    /// The longest sequence the model's positions allow.
    pub fn max_positions(&self) -> usize {
        self.model
            .model
            .config()
            .text_config
            .max_position_embeddings
    }
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos => "eos",
        FinishReason::MaxNewTokens => "max_new_tokens",
        FinishReason::Stopped => "stopped",
    }
}

/// Stacks the one-row processor outputs' pixel values into `[n, 3, H, W]`.
fn stack_pixels(processed: &[&ProcessorOutput], device: &Device) -> Result<Tensor> {
    let mut data = Vec::new();
    let mut shape: Option<[usize; 4]> = None;
    for p in processed {
        let px = p
            .pixel_values
            .as_ref()
            .context("a processed prompt has no image")?;
        let s = px.shape();
        if s[0] != 1 || shape.is_some_and(|t| t[1..] != s[1..]) {
            anyhow::bail!("processed images of shape {s:?} cannot be stacked");
        }
        shape = Some(s);
        data.extend(px.array().iter().copied());
    }
    let [_, c, h, w] = shape.context("no prompt to generate")?;
    Ok(Tensor::from_vec(data, &[processed.len(), c, h, w], device)?)
}

impl Engine for ModelEngine {
    fn generate(
        &mut self,
        processed: &[&ProcessorOutput],
        on_token: &mut dyn FnMut(usize, u32),
    ) -> Result<Vec<EngineOutput>> {
        let limit = self.max_positions();
        let mut prompts = Vec::with_capacity(processed.len());
        for p in processed {
            let prompt_len = p.input_ids.first().map_or(0, Vec::len);
            if prompt_len + self.gen.max_new_tokens > limit {
                anyhow::bail!(
                    "the prompt is {prompt_len} tokens (image block included); with --max-new-tokens {} that exceeds the model's {limit} positions: shorten the prompt or lower --max-new-tokens",
                    self.gen.max_new_tokens
                );
            }
            prompts.extend(prompts_from_processor(p)?);
        }
        let n = prompts.len();
        let pixels = stack_pixels(processed, &self.device)?;
        // One prompt per image: a full prefill, exactly HF's path; every image in one vision pass.
        let mut session = ImageSession::new(&self.model, &pixels)?.with_prefix_reuse(false);
        let image_encode = session.encode_time();
        let pad = self.gen.resolved_pad_token_id().unwrap_or(1);
        let batch = PromptBatch::new(prompts, pad)?;
        let images: Vec<Option<usize>> = (0..n).map(Some).collect();
        let out = if self.gen.num_beams > 1 {
            session.generate_batch(&batch, &images, &self.gen)?
        } else {
            session.generate_batch_with(&batch, &images, &self.gen, |ev| {
                for t in ev.tokens {
                    on_token(t.row, t.token);
                }
                ControlFlow::Continue(())
            })?
        };
        let share = |d: std::time::Duration| d / n as u32;
        Ok((0..n)
            .map(|r| EngineOutput {
                sequence: out.tokens(r).to_vec(),
                finish_reason: out
                    .finish_reasons
                    .get(r)
                    .copied()
                    .map_or("eos", finish_name),
                image_encode: share(image_encode),
                prefill: share(out.stats.prefill),
                decode: share(out.stats.decode),
                new_tokens: out.generated_lens.get(r).copied().unwrap_or(0),
                batch_tokens_per_s: out.stats.decode_tokens_per_second(),
                batch_size: n,
            })
            .collect())
    }
}
