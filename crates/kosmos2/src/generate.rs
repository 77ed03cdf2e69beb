//! The real model as a [`CausalLm`] ([`Kosmos2Lm`]), and `generate` on
//! [`Kosmos2ForConditionalGeneration`] (HF `Kosmos2ForConditionalGeneration.generate`, transformers
//! 5.24): encode the images once, prefill the prompt with their embeddings, decode from the KV cache.
//!
//! Per cache row [`Kosmos2Lm`] keeps the KV cache (left pads included) and the attention mask over
//! its columns (0 on pads, so pads are masked out of every later step, as HF's growing
//! `attention_mask` does). Positions come from the decoder's [`PositionMode`]: HF's rule at prefill,
//! then `cache_len + 2` ([`PositionMode::HfCompat`], HF's left-padding quirk) or
//! `real tokens + 2` ([`PositionMode::RealTokens`], a row's output does not depend on its batch-mates).
//! `reorder_cache` is [`KvCache::select_rows`].

use std::ops::ControlFlow;

use kosmos_processor::ProcessorOutput;
use kosmos_tensor::Tensor;
use kosmos_text::{DecodeScratch, DecodeStep, KvCache, LogitsMode, PositionMode, TextInputs};

use crate::batch::Kosmos2Batch;
use crate::conditional::{Kosmos2ForConditionalGeneration, LmOptions};
use crate::error::{Error, Result};
use crate::generation::{
    self, CausalLm, Detokenize, GenerationConfig, GenerationError, GenerationOutput, Logits,
    Prompt, PromptBatch, StepEvent,
};
use crate::model::{Kosmos2ForwardOptions, Kosmos2Inputs};
use crate::prefix_cache::PrefixStore;
use crate::session::ImageSession;
use crate::text_stream::TextDelta;

/// [`Kosmos2ForConditionalGeneration`] driven by the generation loops: prefill, one-token steps,
/// cache reordering.
///
/// Row `r` of the prompt batch uses image `row_images[r]` of the image embeddings (inserted where its
/// `image_embeds_position_mask` is true, at prefill only). With a [`PrefixStore`], the KV cache of each
/// row's `<s><image>…</image>` prefix is copied from the store (computed once per image and prefix)
/// and only the rest of the prompt is run at prefill.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny");
/// use kosmos2::generation::{generate, GenerationConfig, Prompt, PromptBatch};
/// use kosmos2::{DType, Device, Kosmos2ForConditionalGeneration, Kosmos2Lm};
///
/// let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32)?;
/// let batch = PromptBatch::new(vec![Prompt::text(vec![0, 70, 71])], 1)?;
/// let cfg = GenerationConfig { max_new_tokens: 4, ..Default::default() };
/// let out = generate(&mut Kosmos2Lm::new(&model), &batch, &cfg)?;
/// assert_eq!(out.sequences[0][..3], [0, 70, 71]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Kosmos2Lm<'a> {
    model: &'a Kosmos2ForConditionalGeneration,
    images: Option<Tensor>,
    row_images: Vec<Option<usize>>,
    prefixes: Option<&'a mut PrefixStore>,
    extra_capacity: usize,
    cache: Option<KvCache>,
    /// Per cache row, the attention mask over its cached columns.
    masks: Vec<Vec<u32>>,
    /// `masks` flattened for a decode step (reused).
    flat_mask: Vec<u32>,
    /// The decode workspace (reused across steps: a step allocates nothing).
    scratch: DecodeScratch,
    mode: PositionMode,
    reused: usize,
}

impl<'a> Kosmos2Lm<'a> {
    /// A text-only adapter (add images with [`Kosmos2Lm::with_images`]).
    pub fn new(model: &'a Kosmos2ForConditionalGeneration) -> Self {
        Self {
            model,
            images: None,
            row_images: Vec::new(),
            prefixes: None,
            extra_capacity: 0,
            cache: None,
            masks: Vec::new(),
            flat_mask: Vec::new(),
            scratch: DecodeScratch::default(),
            mode: PositionMode::HfCompat,
            reused: 0,
        }
    }

    /// `image_embeds` `[images, latent_query_num, embed_dim]` and, per prompt row, the image it uses
    /// (`None` for a text-only row).
    pub fn with_images(mut self, image_embeds: Tensor, row_images: Vec<Option<usize>>) -> Self {
        self.images = Some(image_embeds);
        self.row_images = row_images;
        self
    }

    /// Reuse (and fill) the KV caches of image prefixes kept in `store`. The store is tied to the
    /// image embeddings: give it the same images (same indices) on every use.
    pub fn with_prefix_store(mut self, store: &'a mut PrefixStore) -> Self {
        self.prefixes = Some(store);
        self
    }

    /// Reserves cache room for this many generated tokens at prefill (no growth copies later).
    pub fn with_max_new_tokens(mut self, n: usize) -> Self {
        self.extra_capacity = n;
        self
    }

    /// Prompt tokens per row taken from the prefix store at the last prefill (0: none reused).
    pub fn reused_prefix_len(&self) -> usize {
        self.reused
    }

    /// The KV cache of the current rows.
    pub fn cache(&self) -> Option<&KvCache> {
        self.cache.as_ref()
    }

    /// The text model's pad id (the id whose position is the zero row).
    pub(crate) fn pad_id(model: &Kosmos2ForConditionalGeneration) -> Result<u32> {
        Ok(model.model.config().text_config.padding_idx()?)
    }

    /// The image embeddings of the rows that have image positions, in row order (HF fills the
    /// positions of all rows, row-major, from `image_embeds.view(-1, D)`).
    fn prefill_images(&self, batch: &PromptBatch) -> Result<Option<Tensor>> {
        let Some(masks) = batch.image_embeds_position_mask() else {
            if self.row_images.iter().any(Option::is_some) {
                return Err(Error::InvalidInput(
                    "rows were given images but the prompts have no image_embeds_position_mask"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let Some(images) = &self.images else {
            if masks.iter().flatten().any(|&m| m) {
                return Err(Error::InvalidInput(
                    "the prompts have image positions but no image embeddings were given".into(),
                ));
            }
            return Ok(None);
        };
        if self.row_images.len() != batch.len() {
            return Err(Error::InvalidInput(format!(
                "{} row image indices for {} prompts",
                self.row_images.len(),
                batch.len()
            )));
        }
        let n = images.dim(0)?;
        let mut picks = Vec::new();
        for (r, (mask, img)) in masks.iter().zip(&self.row_images).enumerate() {
            match (mask.iter().any(|&m| m), *img) {
                (true, Some(i)) if i < n => picks.push(i),
                (true, Some(i)) => {
                    return Err(Error::InvalidInput(format!(
                        "row {r} uses image {i}, but there are {n} images"
                    )))
                }
                (true, None) => {
                    return Err(Error::InvalidInput(format!(
                        "row {r} has image positions but no image"
                    )))
                }
                (false, Some(i)) => {
                    return Err(Error::InvalidInput(format!(
                        "row {r} is given image {i} but has no image positions"
                    )))
                }
                (false, None) => {}
            }
        }
        if picks.is_empty() {
            return Ok(None);
        }
        if picks.len() == n && picks.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(Some(images.clone()));
        }
        select_images(images, &picks).map(Some)
    }

    /// HF's prefill: the whole left-padded batch in one forward, images inserted.
    fn prefill_full(&mut self, batch: &PromptBatch, images: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = (batch.len(), batch.prompt_len());
        let ids = batch.flat_input_ids();
        let mask = batch.flat_attention_mask();
        let pos_mask = batch.flat_image_embeds_position_mask();
        let mut text = TextInputs::from_ids(&ids, b, t)?;
        if batch.pad_lens().iter().any(|&p| p > 0) {
            text = text.with_attention_mask(&mask);
        }
        if let (Some(img), Some(pm)) = (images, &pos_mask) {
            text = text.with_image_embeds(img, pm);
        }
        let cache = self.model.model.new_cache(b, t + self.extra_capacity)?;
        self.masks = batch.attention_mask();
        self.reused = 0;
        self.run(&text, cache)
    }

    /// Prefill from the prefix store: each row's cache starts as a copy of its stored
    /// `<s><image>…</image>` prefix (the first `k` tokens, the same `k` for every row), then the rest of
    /// each prompt runs with its pads placed between the prefix and the rest. Positions and masked
    /// columns are the same as in HF's left-padded layout, so both position modes are unchanged.
    fn prefill_reused(
        &mut self,
        batch: &PromptBatch,
        mut cache: KvCache,
        k: usize,
    ) -> Result<Tensor> {
        let b = batch.len();
        let pad = batch.pad_token_id();
        let s = batch.prompt_len() - k;
        cache.reserve(batch.prompt_len() + self.extra_capacity)?;
        let mut ids = Vec::with_capacity(b * s);
        let mut masks = Vec::with_capacity(b);
        for r in 0..b {
            let rest = &batch.real_ids(r)[k..];
            let pads = s - rest.len();
            ids.extend(std::iter::repeat_n(pad, pads));
            ids.extend_from_slice(rest);
            let mut m = vec![1u32; k];
            m.extend(std::iter::repeat_n(0, pads));
            m.extend(std::iter::repeat_n(1, rest.len()));
            masks.push(m);
        }
        let flat_mask: Vec<u32> = masks.concat();
        let mut text = TextInputs::from_ids(&ids, b, s)?;
        if flat_mask.contains(&0) {
            text = text.with_attention_mask(&flat_mask);
        }
        self.masks = masks;
        self.reused = k;
        self.run(&text, cache)
    }

    /// One forward of `text` on `cache` (kept), returning the last-position logits `[rows, 1, V]`.
    fn run(&mut self, text: &TextInputs<'_>, cache: KvCache) -> Result<Tensor> {
        let opts = Kosmos2ForwardOptions {
            position_mode: self.mode,
            ..Default::default()
        };
        let lm = LmOptions {
            logits: LogitsMode::Last,
            labels: None,
        };
        let out = self
            .model
            .forward(&Kosmos2Inputs::new(*text), Some(cache), &opts, &lm)?;
        self.cache = out.past_key_values;
        out.logits
            .ok_or_else(|| Error::InvalidInput("the forward pass returned no logits".into()))
    }

    /// The start of a decode step: one token per cache row (and a cache to step), then each row's
    /// attention mask grows by one real token. Returns whether any row has padding.
    fn begin_step(&mut self, tokens: &[u32]) -> Result<bool> {
        if tokens.len() != self.masks.len() {
            return Err(Error::InvalidInput(format!(
                "{} tokens for {} cache rows",
                tokens.len(),
                self.masks.len()
            )));
        }
        if self.cache.is_none() {
            return Err(Error::InvalidInput("step before prefill".into()));
        }
        for m in &mut self.masks {
            m.push(1);
        }
        Ok(self.masks.iter().any(|m| m.contains(&0)))
    }

    fn logits(&self, t: &Tensor) -> Result<Logits> {
        Ok(Logits::new(t.to_vec_f32()?, self.vocab_size())?)
    }
}

fn select_images(images: &Tensor, picks: &[usize]) -> Result<Tensor> {
    let parts = picks
        .iter()
        .map(|&i| images.narrow(0, i, 1))
        .collect::<kosmos_tensor::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)?)
}

impl CausalLm for Kosmos2Lm<'_> {
    type Error = Error;

    fn vocab_size(&self) -> usize {
        self.model.lm_head.dims().first().copied().unwrap_or(0)
    }

    fn prefill(&mut self, batch: &PromptBatch, positions: PositionMode) -> Result<Logits> {
        self.cache = None;
        self.masks.clear();
        self.mode = positions;
        let images = self.prefill_images(batch)?;
        let plan = match (self.prefixes.as_deref_mut(), &images) {
            (Some(store), Some(_)) => {
                let all = self.images.as_ref().ok_or_else(|| {
                    Error::InvalidInput("prefix reuse needs image embeddings".into())
                })?;
                store.prepare(self.model, all, &self.row_images, batch)?
            }
            _ => None,
        };
        let logits = match plan {
            Some((cache, k)) => self.prefill_reused(batch, cache, k)?,
            None => self.prefill_full(batch, images.as_ref())?,
        };
        // Room for the generated tokens' mask columns (decode steps then allocate nothing).
        let extra = self.extra_capacity;
        for m in &mut self.masks {
            m.reserve(extra);
        }
        self.flat_mask
            .reserve((batch.prompt_len() + extra) * batch.len());
        self.logits(&logits)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Logits> {
        let text = &self.model.model.text_model;
        if text.supports_decode_step() {
            let mut out = Logits::new(Vec::new(), self.vocab_size().max(1))?;
            self.step_into(tokens, &mut out)?;
            return Ok(out);
        }
        let any_pad = self.begin_step(tokens)?;
        let cache = self
            .cache
            .take()
            .ok_or_else(|| Error::InvalidInput("step before prefill".into()))?;
        let flat_mask: Vec<u32> = if any_pad {
            self.masks.concat()
        } else {
            Vec::new()
        };
        let mut text = TextInputs::from_ids(tokens, tokens.len(), 1)?;
        if any_pad {
            text = text.with_attention_mask(&flat_mask);
        }
        let logits = self.run(&text, cache)?;
        self.logits(&logits)
    }

    /// The allocation-free step ([`kosmos_text::TextTransformer::decode_step`]) when the decoder
    /// has its stock blocks; [`step`](CausalLm::step) otherwise.
    fn step_into(&mut self, tokens: &[u32], out: &mut Logits) -> Result<()> {
        let text = &self.model.model.text_model;
        if !text.supports_decode_step() {
            *out = self.step(tokens)?;
            return Ok(());
        }
        let any_pad = self.begin_step(tokens)?;
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("step before prefill".into()))?;
        self.flat_mask.clear();
        if any_pad {
            for m in &self.masks {
                self.flat_mask.extend_from_slice(m);
            }
        }
        let mut step = DecodeStep::new(tokens).with_position_mode(self.mode);
        if any_pad {
            step = step.with_attention_mask(&self.flat_mask);
        }
        let done = text.decode_step(&step, cache, Some(&self.model.lm_head), &mut self.scratch);
        if let Err(e) = done {
            // The cache did not advance: neither do the masks.
            for m in &mut self.masks {
                m.pop();
            }
            return Err(e.into());
        }
        out.overwrite(self.scratch.logits(), self.vocab_size())?;
        Ok(())
    }

    fn reorder_cache(&mut self, rows: &[usize]) -> Result<()> {
        let cache = self
            .cache
            .as_ref()
            .ok_or_else(|| Error::InvalidInput("reorder_cache before prefill".into()))?;
        let identity = rows.len() == cache.batch() && rows.iter().enumerate().all(|(i, &r)| i == r);
        if identity {
            return Ok(());
        }
        self.cache = Some(cache.select_rows(rows)?);
        self.masks = rows.iter().map(|&r| self.masks[r].clone()).collect();
        Ok(())
    }
}

/// Strips the padding of one processor/batch row: the ids where `attention_mask` is 1, which must be
/// one contiguous run (left or right padding).
pub(crate) fn unpad_row(
    r: usize,
    ids: &[u32],
    attention: &[u32],
    image_mask: Option<&[u32]>,
) -> Result<Prompt> {
    let start = attention.iter().position(|&m| m == 1).ok_or_else(|| {
        Error::InvalidInput(format!(
            "row {r}: the attention mask has no 1 (an empty prompt)"
        ))
    })?;
    let len = attention[start..].iter().take_while(|&&m| m == 1).count();
    if attention[start + len..].iter().any(|&m| m != 0)
        || attention[..start].iter().any(|&m| m != 0)
    {
        return Err(Error::InvalidInput(format!(
            "row {r}: the attention mask is not padding on one side (0…0 1…1 or 1…1 0…0)"
        )));
    }
    if let Some(m) = image_mask {
        if m[..start].iter().chain(&m[start + len..]).any(|&x| x != 0) {
            return Err(Error::InvalidInput(format!(
                "row {r}: image_embeds_position_mask is 1 on a pad"
            )));
        }
    }
    Ok(Prompt {
        input_ids: ids[start..start + len].to_vec(),
        image_embeds_position_mask: image_mask
            .map(|m| m[start..start + len].iter().map(|&x| x == 1).collect()),
    })
}

impl Kosmos2Batch {
    /// The left-padded [`PromptBatch`] of this batch (right-padded rows are re-padded on the left:
    /// HF would generate after the pads, reference §6.5) and, per row, the index of its image in
    /// `pixel_values` (rows with image positions take the images in order, as HF fills them).
    pub fn prompt_batch(&self, pad_token_id: u32) -> Result<(PromptBatch, Vec<Option<usize>>)> {
        let (b, t) = (self.batch, self.seq_len);
        if self.input_ids.len() != b * t || self.attention_mask.len() != b * t {
            return Err(Error::InvalidInput(format!(
                "input_ids/attention_mask are not [{b}, {t}]"
            )));
        }
        if let Some(m) = &self.image_embeds_position_mask {
            if m.len() != b * t {
                return Err(Error::InvalidInput(format!(
                    "image_embeds_position_mask is not [{b}, {t}]"
                )));
            }
        }
        let mut prompts = Vec::with_capacity(b);
        let mut row_images = Vec::with_capacity(b);
        let mut next_image = 0;
        for r in 0..b {
            let span = r * t..(r + 1) * t;
            let im = self
                .image_embeds_position_mask
                .as_ref()
                .map(|m| &m[span.clone()]);
            let p = unpad_row(
                r,
                &self.input_ids[span.clone()],
                &self.attention_mask[span],
                im,
            )?;
            let has_image = p
                .image_embeds_position_mask
                .as_ref()
                .is_some_and(|m| m.iter().any(|&x| x));
            row_images.push(has_image.then(|| {
                next_image += 1;
                next_image - 1
            }));
            prompts.push(p);
        }
        let images = match &self.pixel_values {
            Some(p) => p.dim(0)?,
            None => 0,
        };
        if next_image != images {
            return Err(Error::InvalidInput(format!(
                "{next_image} rows have image positions but {images} images were given"
            )));
        }
        Ok((PromptBatch::new(prompts, pad_token_id)?, row_images))
    }
}

/// The prompts of a processor output, pads stripped (each row's real tokens and image mask).
pub fn prompts_from_processor(processed: &ProcessorOutput) -> Result<Vec<Prompt>> {
    let widen = |r: &[u8]| r.iter().map(|&x| u32::from(x)).collect::<Vec<u32>>();
    if processed.attention_mask.len() != processed.input_ids.len() {
        return Err(Error::InvalidInput(
            "processor output: attention_mask and input_ids have different row counts".into(),
        ));
    }
    processed
        .input_ids
        .iter()
        .enumerate()
        .map(|(r, ids)| {
            let att = widen(&processed.attention_mask[r]);
            let im = match &processed.image_embeds_position_mask {
                Some(m) => Some(widen(m.get(r).ok_or_else(|| {
                    Error::InvalidInput(format!("processor output: no image mask for row {r}"))
                })?)),
                None => None,
            };
            if att.len() != ids.len() || im.as_ref().is_some_and(|m| m.len() != ids.len()) {
                return Err(Error::InvalidInput(format!(
                    "processor output: row {r} has masks of a different length than its ids"
                )));
            }
            unpad_row(r, ids, &att, im.as_deref())
        })
        .collect()
}

impl Kosmos2ForConditionalGeneration {
    /// HF `Kosmos2ForConditionalGeneration.generate(pixel_values, input_ids, attention_mask,
    /// image_embeds_position_mask, **cfg)`: the images are encoded once, then greedy, sampling or beam
    /// search as `cfg` says. `sequences` include the (left-padded) prompt, as in HF.
    ///
    /// Pass [`GenerationConfig::hf_compat_positions`] to reproduce HF's batched outputs exactly (its
    /// decode positions count the left pads); by default each row's output equals its unbatched one.
    /// To run several prompts on one image, use an [`ImageSession`], which also reuses the prompts'
    /// common `<s><image>…</image>` prefix.
    pub fn generate(
        &self,
        batch: &Kosmos2Batch,
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        let (prompts, rows) = batch.prompt_batch(Kosmos2Lm::pad_id(self)?)?;
        let mut session = ImageSession::for_batch(self, batch.pixel_values.as_ref())?;
        session.generate_batch(&prompts, &rows, cfg)
    }

    /// [`generate`](Self::generate) on the processor's output.
    pub fn generate_processed(
        &self,
        processed: &ProcessorOutput,
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        let device = self.model.text_model.device().clone();
        self.generate(&Kosmos2Batch::from_processor(processed, &device)?, cfg)
    }

    /// [`generate`](Self::generate) with a callback after every step (greedy and sampling); returning
    /// [`ControlFlow::Break`] stops every row.
    pub fn generate_with<F>(
        &self,
        batch: &Kosmos2Batch,
        cfg: &GenerationConfig,
        on_step: F,
    ) -> Result<GenerationOutput>
    where
        F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    {
        let (prompts, rows) = batch.prompt_batch(Kosmos2Lm::pad_id(self)?)?;
        let mut session = ImageSession::for_batch(self, batch.pixel_values.as_ref())?;
        session.generate_batch_with(&prompts, &rows, cfg, on_step)
    }

    /// [`generate`](Self::generate), streaming text: `on_text` receives each row's text increments as
    /// tokens are decoded by `decoder` (e.g. a [`ProcessorDetokenizer`](crate::ProcessorDetokenizer));
    /// a row's increments concatenate to the decode of its prompt and generated tokens minus the
    /// decode of its prompt.
    pub fn generate_text_stream<D, F>(
        &self,
        batch: &Kosmos2Batch,
        cfg: &GenerationConfig,
        decoder: D,
        on_text: F,
    ) -> Result<GenerationOutput>
    where
        D: Detokenize + Clone,
        F: FnMut(&TextDelta<'_>) -> ControlFlow<()>,
    {
        let (prompts, rows) = batch.prompt_batch(Kosmos2Lm::pad_id(self)?)?;
        let mut session = ImageSession::for_batch(self, batch.pixel_values.as_ref())?;
        session.generate_text_stream(&prompts, &rows, cfg, decoder, on_text)
    }
}

/// A per-step callback.
pub(crate) type OnStep<'a> = &'a mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>;

/// Runs `generation::generate`/`generate_with` with the crate's error type.
pub(crate) fn run_generation(
    lm: &mut Kosmos2Lm<'_>,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    on_step: Option<OnStep<'_>>,
) -> Result<GenerationOutput> {
    match on_step {
        Some(cb) => generation::generate_with(lm, batch, cfg, cb),
        None => generation::generate(lm, batch, cfg),
    }
    .map_err(lift_model_error)
}

/// A model error raised inside the generation loop comes back as itself, not boxed in
/// [`GenerationError::Model`].
pub(crate) fn lift_model_error(e: GenerationError) -> Error {
    match e {
        GenerationError::Model(b) => match b.downcast::<Error>() {
            Ok(e) => *e,
            Err(b) => Error::Generation(GenerationError::Model(b)),
        },
        other => Error::Generation(other),
    }
}
