//! Encode an image once, then run many prompts on it ([`ImageSession`]).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use kosmos_tensor::Tensor;

use crate::conditional::Kosmos2ForConditionalGeneration;
use crate::error::{Error, Result};
use crate::generate::{run_generation, Kosmos2Lm, OnStep};
use crate::generation::{
    Detokenize, GenerationConfig, GenerationOutput, Prompt, PromptBatch, StepEvent,
};
use crate::model::Kosmos2ForwardOptions;
use crate::prefix_cache::PrefixStore;
use crate::text_stream::{stream_text, TextDelta};

/// One or more images encoded once (vision tower + projection), for any number of prompts.
///
/// With prefix reuse (the default), the KV cache of each prompt's `<s><image>…</image>` block is
/// computed once per image and copied into later prompts' caches, so a prompt's prefill only runs the
/// tokens after `</image>`. The outputs are those of a full prefill (same ids; logits equal up to
/// float rounding, the keys of the prefix being computed in a shorter pass).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny");
/// use kosmos2::generation::{GenerationConfig, Prompt};
/// use kosmos2::{DType, Device, ImageSession, Kosmos2ForConditionalGeneration, Tensor};
///
/// let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32)?;
/// let pixels = Tensor::zeros(&[1, 3, 28, 28], DType::F32, &Device::Cpu)?; // one (black) image
/// let mut session = ImageSession::new(&model, &pixels)?; // encoded here, once
///
/// // tiny's image block: <s> 298 (<image>), 4 placeholders 4..=7, 299 (</image>), then text
/// let prompt = |text: &[u32]| {
///     let mut ids = vec![0, 298, 4, 5, 6, 7, 299];
///     ids.extend_from_slice(text);
///     let mask = (0..ids.len()).map(|i| (2..6).contains(&i)).collect();
///     Prompt { input_ids: ids, image_embeds_position_mask: Some(mask) }
/// };
/// let cfg = GenerationConfig { max_new_tokens: 5, ..Default::default() };
/// let first = session.generate(&[prompt(&[20, 21])], &cfg)?;
/// let second = session.generate(&[prompt(&[30]), prompt(&[40, 41, 42])], &cfg)?; // prefix reused
/// assert_eq!(session.cached_prefixes(), 1);
/// assert_eq!(first.sequences[0][..9], [0, 298, 4, 5, 6, 7, 299, 20, 21]);
/// assert_eq!(second.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ImageSession<'m> {
    model: &'m Kosmos2ForConditionalGeneration,
    image_embeds: Option<Tensor>,
    encode_time: Duration,
    prefixes: PrefixStore,
    reuse: bool,
    last_reused: usize,
}

impl<'m> ImageSession<'m> {
    /// Encodes `pixel_values` (`[images, 3, S, S]`, the processor's output) once.
    pub fn new(model: &'m Kosmos2ForConditionalGeneration, pixel_values: &Tensor) -> Result<Self> {
        let t = Instant::now();
        let features = model
            .model
            .get_image_features(pixel_values, &Kosmos2ForwardOptions::default())?;
        let mut s = Self::from_image_embeds(model, features.image_embeds)?;
        s.encode_time = t.elapsed();
        Ok(s)
    }

    /// A session on precomputed `image_embeds` (`[images, latent_query_num, embed_dim]`, HF
    /// `get_image_features(...).pooler_output`).
    pub fn from_image_embeds(
        model: &'m Kosmos2ForConditionalGeneration,
        image_embeds: Tensor,
    ) -> Result<Self> {
        let cfg = model.model.config();
        let want = [cfg.latent_query_num, cfg.text_config.embed_dim];
        match image_embeds.dims() {
            [n, q, d] if *n > 0 && [*q, *d] == want => {}
            other => {
                return Err(Error::InvalidInput(format!(
                    "image_embeds have shape {other:?}, expected [images, {}, {}]",
                    want[0], want[1]
                )))
            }
        }
        Ok(Self {
            model,
            image_embeds: Some(image_embeds),
            encode_time: Duration::ZERO,
            prefixes: PrefixStore::new(),
            reuse: true,
            last_reused: 0,
        })
    }

    /// The session of one `generate` call: the batch's images (if any), no prefix reuse (HF's path).
    pub(crate) fn for_batch(
        model: &'m Kosmos2ForConditionalGeneration,
        pixel_values: Option<&Tensor>,
    ) -> Result<Self> {
        let mut s = match pixel_values {
            Some(p) => Self::new(model, p)?,
            None => Self {
                model,
                image_embeds: None,
                encode_time: Duration::ZERO,
                prefixes: PrefixStore::new(),
                reuse: false,
                last_reused: 0,
            },
        };
        s.reuse = false;
        Ok(s)
    }

    /// Turns prefix reuse on (default) or off (every prompt is prefilled in full, as HF does).
    pub fn with_prefix_reuse(mut self, on: bool) -> Self {
        self.reuse = on;
        self
    }

    /// Number of images.
    pub fn num_images(&self) -> usize {
        self.image_embeds
            .as_ref()
            .and_then(|t| t.dims().first().copied())
            .unwrap_or(0)
    }

    /// The image embeddings, `[images, latent_query_num, embed_dim]`.
    pub fn image_embeds(&self) -> Option<&Tensor> {
        self.image_embeds.as_ref()
    }

    /// Time spent encoding the images (zero for [`ImageSession::from_image_embeds`]).
    pub fn encode_time(&self) -> Duration {
        self.encode_time
    }

    /// Number of stored prefix caches.
    pub fn cached_prefixes(&self) -> usize {
        self.prefixes.len()
    }

    /// The prefix store (hit counts, memory).
    pub fn prefix_store(&self) -> &PrefixStore {
        &self.prefixes
    }

    /// Forgets the stored prefix caches.
    pub fn clear_prefixes(&mut self) {
        self.prefixes.clear();
    }

    /// Prompt tokens per row copied from the prefix store in the last call (0: full prefill).
    pub fn last_reused_prefix_len(&self) -> usize {
        self.last_reused
    }

    /// Generates for `prompts` (left-padded into one batch); a prompt with an image mask uses image 0.
    pub fn generate(
        &mut self,
        prompts: &[Prompt],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        let rows: Vec<Option<usize>> = prompts
            .iter()
            .map(|p| p.image_embeds_position_mask.as_ref().map(|_| 0))
            .collect();
        let batch = PromptBatch::new(prompts.to_vec(), Kosmos2Lm::pad_id(self.model)?)?;
        self.generate_batch(&batch, &rows, cfg)
    }

    /// Generates for a prompt batch whose row `r` uses image `images[r]` (`None`: text only).
    pub fn generate_batch(
        &mut self,
        batch: &PromptBatch,
        images: &[Option<usize>],
        cfg: &GenerationConfig,
    ) -> Result<GenerationOutput> {
        self.run(batch, images, cfg, None)
    }

    /// [`generate_batch`](Self::generate_batch) with a callback after every step (greedy/sampling).
    pub fn generate_batch_with<F>(
        &mut self,
        batch: &PromptBatch,
        images: &[Option<usize>],
        cfg: &GenerationConfig,
        mut on_step: F,
    ) -> Result<GenerationOutput>
    where
        F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
    {
        self.run(batch, images, cfg, Some(&mut on_step))
    }

    /// [`generate_batch`](Self::generate_batch), streaming each row's text increments to `on_text`
    /// (see [`TextDelta`]).
    pub fn generate_text_stream<D, F>(
        &mut self,
        batch: &PromptBatch,
        images: &[Option<usize>],
        cfg: &GenerationConfig,
        decoder: D,
        on_text: F,
    ) -> Result<GenerationOutput>
    where
        D: Detokenize + Clone,
        F: FnMut(&TextDelta<'_>) -> ControlFlow<()>,
    {
        let mut lm = self.lm(images, cfg);
        let out = stream_text(&mut lm, batch, cfg, decoder, on_text);
        let reused = lm.reused_prefix_len();
        self.last_reused = reused;
        out
    }

    fn lm(&mut self, images: &[Option<usize>], cfg: &GenerationConfig) -> Kosmos2Lm<'_> {
        let mut lm = Kosmos2Lm::new(self.model).with_max_new_tokens(cfg.max_new_tokens);
        if let Some(img) = &self.image_embeds {
            lm = lm.with_images(img.clone(), images.to_vec());
        }
        if self.reuse {
            lm = lm.with_prefix_store(&mut self.prefixes);
        }
        lm
    }

    fn run(
        &mut self,
        batch: &PromptBatch,
        images: &[Option<usize>],
        cfg: &GenerationConfig,
        on_step: Option<OnStep<'_>>,
    ) -> Result<GenerationOutput> {
        if self.image_embeds.is_none() && images.iter().any(Option::is_some) {
            return Err(Error::InvalidInput(
                "rows were given images but this session has none".into(),
            ));
        }
        let mut lm = self.lm(images, cfg);
        let out = run_generation(&mut lm, batch, cfg, on_step);
        let reused = lm.reused_prefix_len();
        self.last_reused = reused;
        out
    }
}
