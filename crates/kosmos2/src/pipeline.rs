//! The high-level facade: [`Kosmos2`] loads a model directory (weights, config and processor
//! files) and runs the grounded tasks of the official demo on an image in one call, returning a
//! [`GroundedOutput`] (the cleaned text, its grounded entities with normalised and pixel boxes, and
//! timings). [`Kosmos2::encode`] encodes an image once for several tasks ([`EncodedImage`]).
//!
//! The prompts (built by [`Task::prompt`], see [`crate::task`]):
//!
//! | call | prompt given to the processor |
//! |------|-------------------------------|
//! | [`caption(img, Brief)`](Kosmos2::caption) | `<grounding>An image of` |
//! | [`caption(img, Detailed)`](Kosmos2::caption) | `<grounding> Describe this image in detail:` |
//! | [`ground(img, phrase)`](Kosmos2::ground) | `<grounding><phrase> {phrase}</phrase>` |
//! | [`refer(img, box)`](Kosmos2::refer) | `<grounding><phrase> It</phrase> is` with the box after the phrase |
//! | [`vqa(img, question)`](Kosmos2::vqa) | `<grounding> Question: {question} Answer:` |
//!
//! Generation defaults to [`Kosmos2::default_generation`]: greedy, `no_repeat_ngram_size = 3`,
//! 128 new tokens, eos `</s>` (2), pad 1 — the settings of Microsoft's demo and the paper's
//! evaluation. Without the n-gram block greedy decoding of KOSMOS-2 tends to loop on a phrase
//! ("a snowman and a snowman and …"); 128 tokens hold a detailed caption with its location tokens.
//! Change them with [`Kosmos2::with_generation`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kosmos_processor::boxes::to_pixel_box;
use kosmos_processor::image::{load_rgb, ImageError};
use kosmos_processor::{
    post_process_generation, ImageInput, Kosmos2Processor, PostProcessError, ProcessOptions,
    ProcessorError, ProcessorInput, ProcessorOutput,
};
use kosmos_tensor::{Device, Tensor};
use serde::Serialize;

use crate::conditional::Kosmos2ForConditionalGeneration;
use crate::generate::prompts_from_processor;
use crate::generation::{FinishReason, GenerationConfig};
use crate::precision::Precision;
use crate::session::ImageSession;
use crate::task::{CaptionStyle, RegionBox, Task, TaskError, TaskPrompt};

/// What can go wrong in a [`Kosmos2`] call.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// The processor files are missing or invalid, or the prompt cannot be processed.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
    /// The image cannot be read or decoded (a missing file, an unknown format, too large).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The task cannot be turned into a prompt (an empty phrase, an invalid box, ...).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// The generated text cannot be post-processed.
    #[error(transparent)]
    PostProcess(#[from] PostProcessError),
    /// The prompt plus `max_new_tokens` exceeds the model's positions.
    #[error("the prompt is {prompt_len} tokens (image block included); with max_new_tokens {max_new_tokens} that exceeds the model's {limit} positions")]
    TooLong {
        /// Prompt tokens.
        prompt_len: usize,
        /// The generation budget.
        max_new_tokens: usize,
        /// `max_position_embeddings`.
        limit: usize,
    },
}

/// Result alias of the facade.
pub type PipelineResult<T> = std::result::Result<T, PipelineError>;

/// A grounded phrase of the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundedEntity {
    /// The phrase, stripped.
    pub phrase: String,
    /// `(start, end)` in Unicode code points of [`GroundedOutput::text`] (HF's span).
    pub span: (i64, i64),
    /// The same range in UTF-8 bytes of the text, when it is a valid range.
    pub byte_span: Option<(usize, usize)>,
    /// Normalised `[x1, y1, x2, y2]` boxes (relative to the original image).
    pub boxes: Vec<[f64; 4]>,
    /// The same boxes in pixels of the original image (`int(x · W)`, `int(y · H)`, as the demo).
    pub pixel_boxes: Vec<[u32; 4]>,
}

/// Timings of one call, in milliseconds (decode speed in tokens per second).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timing {
    /// Reading, decoding and preprocessing the image and tokenizing the prompt.
    pub preprocess_ms: f64,
    /// The vision tower and projection on the image (for an [`EncodedImage`], the one encoding
    /// shared by all its calls).
    pub image_encode_ms: f64,
    /// The prompt's forward pass (first new token included).
    pub prefill_ms: f64,
    /// The one-token steps after prefill.
    pub decode_ms: f64,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Decode speed (tokens per second of the one-token steps).
    pub decode_tokens_per_s: f64,
    /// The whole call.
    pub total_ms: f64,
}

/// The result of a task: the cleaned text and its grounded entities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundedOutput {
    /// The task name (`caption`, `ground`, `refer`, `vqa`, `generate`).
    pub task: &'static str,
    /// The prompt text given to the processor.
    pub prompt: String,
    /// The generated text with every tag removed (HF `post_process_generation`); it starts with
    /// the prompt's words (e.g. `An image of a snowman …`).
    pub text: String,
    /// The grounded phrases in order of appearance.
    pub entities: Vec<GroundedEntity>,
    /// The decoded text with its grounding tags (special tokens skipped).
    pub raw_text: String,
    /// The whole sequence: prompt ids then generated ids.
    pub token_ids: Vec<u32>,
    /// Prompt tokens at the start of [`Self::token_ids`].
    pub prompt_len: usize,
    /// `eos`, `max_new_tokens` or `stopped`.
    pub finish_reason: &'static str,
    /// `[width, height]` of the original image.
    pub image_size: [u32; 2],
    /// Timings.
    pub timing: Timing,
}

impl GroundedOutput {
    /// The entity that answers a grounding query for `phrase`: the first entity with that phrase
    /// (trimmed) and a box, else the first entity with a box (the rule of
    /// [`crate::task::grounded_entity`], as the paper's REC evaluation scores it).
    pub fn find(&self, phrase: &str) -> Option<&GroundedEntity> {
        let phrase = phrase.trim();
        self.entities
            .iter()
            .find(|e| e.phrase == phrase && !e.boxes.is_empty())
            .or_else(|| self.entities.iter().find(|e| !e.boxes.is_empty()))
    }
}

/// KOSMOS-2 with its processor and generation settings: grounded tasks in one call.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets");
/// # let assets = std::env::var_os("KOSMOS2_ASSETS").map_or(assets, std::path::PathBuf::from);
/// # let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
/// # if !ci && !assets.join("images").is_dir() { return Ok(()); } // no assets: skip (never in CI)
/// use kosmos2::{pipeline::Kosmos2, task::RegionBox};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-realvocab");
/// let k = Kosmos2::builder(dir)
///     .processor_dir(assets.join("kosmos-2-patch14-224")) // the tiny model has no tokenizer
///     .max_new_tokens(8)
///     .load()?;
/// let mut img = k.encode(assets.join("images/snowman.jpg"))?; // encoded once
/// let where_ = img.ground("a snowman")?;
/// let what = img.refer(RegionBox::Normalized([0.39, 0.05, 0.98, 0.83]))?;
/// assert_eq!(where_.timing.image_encode_ms, what.timing.image_encode_ms);
/// assert!(what.prompt.ends_with(" is"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Kosmos2 {
    model: Kosmos2ForConditionalGeneration,
    processor: Kosmos2Processor,
    device: Device,
    generation: GenerationConfig,
}

/// Options of [`Kosmos2::builder`].
#[derive(Debug, Clone)]
pub struct Kosmos2Builder {
    model_dir: PathBuf,
    processor_dir: Option<PathBuf>,
    device: Device,
    dtype: Precision,
    generation: GenerationConfig,
}

impl Kosmos2Builder {
    /// Reads the processor files (`tokenizer.json` or `sentencepiece.bpe.model`,
    /// `preprocessor_config.json`, …) from `dir` instead of the model directory.
    pub fn processor_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.processor_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The device of the weights (default CPU).
    pub fn device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The weights' precision (default f32): a [`DType`](kosmos_tensor::DType), or
    /// [`Precision::Int8`] / [`Precision::Int8Bf16`] for the int8 text decoder.
    pub fn dtype(mut self, dtype: impl Into<Precision>) -> Self {
        self.dtype = dtype.into();
        self
    }

    /// The generation settings (default [`Kosmos2::default_generation`]).
    pub fn generation(mut self, cfg: GenerationConfig) -> Self {
        self.generation = cfg;
        self
    }

    /// Sets only the new-token budget.
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.generation.max_new_tokens = n;
        self
    }

    /// Loads the model and the processor.
    pub fn load(self) -> PipelineResult<Kosmos2> {
        let processor =
            Kosmos2Processor::from_dir(self.processor_dir.as_ref().unwrap_or(&self.model_dir))?;
        let model =
            Kosmos2ForConditionalGeneration::load(&self.model_dir, &self.device, self.dtype)?;
        Ok(Kosmos2::from_parts(model, processor).with_generation(self.generation))
    }
}

/// An image, decoded and preprocessed, ready for the processor.
#[derive(Debug, Clone)]
struct LoadedImage {
    input: ImageInput,
    width: u32,
    height: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos => "eos",
        FinishReason::MaxNewTokens => "max_new_tokens",
        FinishReason::Stopped => "stopped",
    }
}

impl Kosmos2 {
    /// The facade's generation settings: greedy, `no_repeat_ngram_size = 3`, 128 new tokens,
    /// eos 2, pad 1 (the official demo and the paper; see the module docs for why).
    pub fn default_generation() -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: 128,
            no_repeat_ngram_size: 3,
            eos_token_id: vec![2],
            pad_token_id: Some(1),
            ..GenerationConfig::default()
        }
    }

    /// Loads `dir` (config, weights and processor files) on the CPU in f32.
    pub fn load(dir: impl AsRef<Path>) -> PipelineResult<Self> {
        Self::builder(dir).load()
    }

    /// A builder for another processor directory, device, dtype or generation settings.
    pub fn builder(dir: impl AsRef<Path>) -> Kosmos2Builder {
        Kosmos2Builder {
            model_dir: dir.as_ref().to_path_buf(),
            processor_dir: None,
            device: Device::Cpu,
            dtype: Precision::F32,
            generation: Self::default_generation(),
        }
    }

    /// A facade over a loaded model and processor, with the default generation.
    pub fn from_parts(model: Kosmos2ForConditionalGeneration, processor: Kosmos2Processor) -> Self {
        let device = model.model.text_model.device().clone();
        Self {
            model,
            processor,
            device,
            generation: Self::default_generation(),
        }
    }

    /// Replaces the generation settings.
    pub fn with_generation(mut self, cfg: GenerationConfig) -> Self {
        self.generation = cfg;
        self
    }

    /// The generation settings.
    pub fn generation(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The model.
    pub fn model(&self) -> &Kosmos2ForConditionalGeneration {
        &self.model
    }

    /// The processor.
    pub fn processor(&self) -> &Kosmos2Processor {
        &self.processor
    }

    /// A grounded caption (`<grounding>An image of` or `<grounding> Describe this image in detail:`).
    pub fn caption(
        &self,
        image: impl Into<ImageInput>,
        style: CaptionStyle,
    ) -> PipelineResult<GroundedOutput> {
        self.run(image, &Task::Caption(style))
    }

    /// Phrase grounding (`<grounding><phrase> {phrase}</phrase>`): the phrase's boxes are those of
    /// [`GroundedOutput::find`]`(phrase)`.
    pub fn ground(
        &self,
        image: impl Into<ImageInput>,
        phrase: &str,
    ) -> PipelineResult<GroundedOutput> {
        self.run(
            image,
            &Task::Ground {
                phrase: phrase.into(),
            },
        )
    }

    /// Referring-expression generation (`<grounding><phrase> It</phrase><object>box</object> is`).
    pub fn refer(
        &self,
        image: impl Into<ImageInput>,
        bbox: RegionBox,
    ) -> PipelineResult<GroundedOutput> {
        self.run(image, &Task::Refer { bbox })
    }

    /// Grounded VQA (`<grounding> Question: {question} Answer:`).
    pub fn vqa(
        &self,
        image: impl Into<ImageInput>,
        question: &str,
    ) -> PipelineResult<GroundedOutput> {
        self.run(
            image,
            &Task::Vqa {
                question: question.into(),
            },
        )
    }

    /// Any task on one image (the image is encoded for this call only).
    pub fn run(&self, image: impl Into<ImageInput>, task: &Task) -> PipelineResult<GroundedOutput> {
        let start = Instant::now();
        let prompt = task.prompt()?;
        let image = self.load_image(image.into())?;
        let processed = self.process(&prompt, &image)?;
        let pixels = self.pixels(&processed)?;
        let preprocess = start.elapsed();
        // A one-off prompt: a full prefill, exactly HF's path.
        let mut session = ImageSession::new(&self.model, &pixels)?.with_prefix_reuse(false);
        self.generate(
            &mut session,
            task,
            prompt,
            &image,
            &processed,
            preprocess,
            start,
        )
    }

    /// Decodes and encodes an image once, for several tasks ([`EncodedImage`]).
    pub fn encode(&self, image: impl Into<ImageInput>) -> PipelineResult<EncodedImage<'_>> {
        let image = self.load_image(image.into())?;
        let pixel_values = self
            .processor
            .preprocess_images(std::slice::from_ref(&image.input))?;
        let pixels = to_tensor(
            pixel_values.array().iter().copied(),
            pixel_values.shape(),
            &self.device,
        )?;
        let session = ImageSession::new(&self.model, &pixels)?;
        Ok(EncodedImage {
            owner: self,
            image,
            session,
        })
    }

    fn load_image(&self, input: ImageInput) -> PipelineResult<LoadedImage> {
        let rgb = load_rgb(&input, self.processor.image_processor().limits())?;
        let (width, height) = rgb.dimensions();
        Ok(LoadedImage {
            input: ImageInput::Decoded(rgb.into()),
            width,
            height,
        })
    }

    /// HF `processor(text=prompt, images=image, bboxes=boxes)` for one prompt.
    fn process(&self, prompt: &TaskPrompt, image: &LoadedImage) -> PipelineResult<ProcessorOutput> {
        let mut input = ProcessorInput::text(prompt.text.clone()).with_image(image.input.clone());
        if let Some(b) = &prompt.boxes {
            input = input.with_boxes(b.clone());
        }
        Ok(self
            .processor
            .process_single(&input, &ProcessOptions::default())?)
    }

    fn pixels(&self, processed: &ProcessorOutput) -> PipelineResult<Tensor> {
        let px = processed.pixel_values.as_ref().ok_or_else(|| {
            crate::Error::InvalidInput("the processed prompt has no image".into())
        })?;
        to_tensor(px.array().iter().copied(), px.shape(), &self.device)
    }

    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        session: &mut ImageSession<'_>,
        task: &Task,
        prompt: TaskPrompt,
        image: &LoadedImage,
        processed: &ProcessorOutput,
        preprocess: Duration,
        start: Instant,
    ) -> PipelineResult<GroundedOutput> {
        let prompts = prompts_from_processor(processed)?;
        let prompt_len = prompts.first().map_or(0, |p| p.input_ids.len());
        let limit = self
            .model
            .model
            .config()
            .text_config
            .max_position_embeddings;
        if prompt_len + self.generation.max_new_tokens > limit {
            return Err(PipelineError::TooLong {
                prompt_len,
                max_new_tokens: self.generation.max_new_tokens,
                limit,
            });
        }
        let out = session.generate(&prompts, &self.generation)?;
        let token_ids = out.tokens(0).to_vec();
        let raw_text = self.processor.decode(&token_ids, true);
        let grounded = post_process_generation(&raw_text, true)?;
        let (width, height) = (image.width, image.height);
        let entities = grounded
            .entities
            .into_iter()
            .map(|e| GroundedEntity {
                pixel_boxes: e
                    .boxes
                    .iter()
                    .map(|b| {
                        let p = to_pixel_box(*b, width, height);
                        [p.x1, p.y1, p.x2, p.y2]
                    })
                    .collect(),
                phrase: e.phrase,
                span: e.span,
                byte_span: e.byte_span,
                boxes: e.boxes,
            })
            .collect();
        let stats = &out.stats;
        Ok(GroundedOutput {
            task: task.name(),
            prompt: prompt.text,
            text: grounded.caption,
            entities,
            raw_text,
            token_ids,
            prompt_len,
            finish_reason: out
                .finish_reasons
                .first()
                .copied()
                .map_or("eos", finish_name),
            image_size: [width, height],
            timing: Timing {
                preprocess_ms: ms(preprocess),
                image_encode_ms: ms(session.encode_time()),
                prefill_ms: ms(stats.prefill),
                decode_ms: ms(stats.decode),
                new_tokens: out.generated_lens.first().copied().unwrap_or(0),
                decode_tokens_per_s: stats.decode_tokens_per_second(),
                total_ms: ms(start.elapsed()),
            },
        })
    }
}

fn to_tensor(
    data: impl Iterator<Item = f32>,
    shape: [usize; 4],
    device: &Device,
) -> PipelineResult<Tensor> {
    Tensor::from_vec(data.collect(), &shape, device)
        .map_err(|e| PipelineError::Model(crate::Error::from(e)))
}

/// An image encoded once (vision tower + projection) for any number of tasks; each task's
/// `<s><image>…</image>` prefix KV cache is reused too (see [`ImageSession`]).
#[derive(Debug)]
pub struct EncodedImage<'k> {
    owner: &'k Kosmos2,
    image: LoadedImage,
    session: ImageSession<'k>,
}

impl EncodedImage<'_> {
    /// `[width, height]` of the original image.
    pub fn size(&self) -> [u32; 2] {
        [self.image.width, self.image.height]
    }

    /// The time the image's encoding took.
    pub fn encode_time(&self) -> Duration {
        self.session.encode_time()
    }

    /// See [`Kosmos2::caption`].
    pub fn caption(&mut self, style: CaptionStyle) -> PipelineResult<GroundedOutput> {
        self.run(&Task::Caption(style))
    }

    /// See [`Kosmos2::ground`].
    pub fn ground(&mut self, phrase: &str) -> PipelineResult<GroundedOutput> {
        self.run(&Task::Ground {
            phrase: phrase.into(),
        })
    }

    /// See [`Kosmos2::refer`].
    pub fn refer(&mut self, bbox: RegionBox) -> PipelineResult<GroundedOutput> {
        self.run(&Task::Refer { bbox })
    }

    /// See [`Kosmos2::vqa`].
    pub fn vqa(&mut self, question: &str) -> PipelineResult<GroundedOutput> {
        self.run(&Task::Vqa {
            question: question.into(),
        })
    }

    /// Any task on this image (the processor re-tokenizes the prompt; the image is not re-encoded).
    pub fn run(&mut self, task: &Task) -> PipelineResult<GroundedOutput> {
        let start = Instant::now();
        let prompt = task.prompt()?;
        let processed = self.owner.process(&prompt, &self.image)?;
        let preprocess = start.elapsed();
        self.owner.generate(
            &mut self.session,
            task,
            prompt,
            &self.image,
            &processed,
            preprocess,
            start,
        )
    }
}
