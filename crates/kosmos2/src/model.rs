//! `Kosmos2Model`, mirroring HF `Kosmos2Model`: vision tower → projection → text decoder.

use std::path::Path;

use kosmos_projection::ImageToTextProjection;
use kosmos_tensor::nn::Linear;
use kosmos_tensor::{Device, MappedPages, Tensor, WeightStore};
use kosmos_text::{
    load_lm_head, ForwardOptions, KvCache, PositionMode, StoreWeights, TextInputs, TextNames,
    TextTransformer,
};
use kosmos_vision::{VisionForwardOptions, VisionModel, VisionOutput};

use crate::config::Kosmos2Config;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::weights::check_keys;

/// The inputs of one forward pass: the text step plus, optionally, the images.
///
/// Images come as `pixel_values` (`[images, 3, S, S]`, run through the vision tower and the
/// projection) or as precomputed `image_embeds` in `text` (then `pixel_values` is ignored, as in
/// HF). Either way `text.image_embeds_position_mask` says where they go. With no image at all the
/// pass is text-only (HF's `text_model` path).
#[derive(Debug, Clone, Copy)]
pub struct Kosmos2Inputs<'a> {
    /// Ids (or embeddings), masks and positions of the text step.
    pub text: TextInputs<'a>,
    /// `pixel_values`, `[images, channels, height, width]`.
    pub pixel_values: Option<&'a Tensor>,
}

impl<'a> Kosmos2Inputs<'a> {
    /// Text-only inputs (add images with [`Kosmos2Inputs::with_pixel_values`]).
    pub fn new(text: TextInputs<'a>) -> Self {
        Self {
            text,
            pixel_values: None,
        }
    }

    /// Adds images and the `[batch, seq_len]` 0/1 mask of the positions their embeddings replace.
    pub fn with_pixel_values(
        mut self,
        pixel_values: &'a Tensor,
        image_embeds_position_mask: &'a [u32],
    ) -> Self {
        self.pixel_values = Some(pixel_values);
        self.text.image_embeds_position_mask = Some(image_embeds_position_mask);
        self
    }
}

/// Options of a forward pass (HF's keyword arguments).
#[derive(Debug, Clone, Default)]
pub struct Kosmos2ForwardOptions<'a> {
    /// Return per-layer hidden states (text, and vision when images are encoded).
    pub output_hidden_states: bool,
    /// Return attention probabilities (text, vision and projection).
    pub output_attentions: bool,
    /// `[text layers, heads]` factors on the text attention probabilities.
    pub head_mask: Option<&'a [f32]>,
    /// How text positions are counted with a cache.
    pub position_mode: PositionMode,
    /// Resize the vision position table for non-native image sizes.
    pub interpolate_pos_encoding: bool,
    /// Keep a KV cache when none is passed (returned in `past_key_values`).
    pub use_cache: bool,
}

impl Kosmos2ForwardOptions<'_> {
    fn text_options(&self) -> ForwardOptions<'_> {
        ForwardOptions {
            output_hidden_states: self.output_hidden_states,
            output_attentions: self.output_attentions,
            head_mask: self.head_mask,
            position_mode: self.position_mode,
        }
    }
}

/// What image encoding returns (HF `get_image_features`).
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `[images, latent_query_num, embed_dim]`.
    pub image_embeds: Tensor,
    /// The projection's attention probabilities, when asked for.
    pub projection_attentions: Option<Tensor>,
    /// The vision tower's output.
    pub vision_model_output: VisionOutput,
}

/// The fields of HF `Kosmos2ModelOutput`.
#[derive(Debug, Clone)]
pub struct Kosmos2ModelOutput {
    /// `[batch, seq_len, embed_dim]`, after the final LayerNorm.
    pub last_hidden_state: Tensor,
    /// The KV cache after this step (when one was passed or `use_cache` was set).
    pub past_key_values: Option<KvCache>,
    /// Text hidden states (`layers + 1`), when asked for.
    pub hidden_states: Option<Vec<Tensor>>,
    /// Text attention probabilities (one per layer), when asked for.
    pub attentions: Option<Vec<Tensor>>,
    /// The image embeddings computed from `pixel_values` in this pass.
    pub image_embeds: Option<Tensor>,
    /// The projection's attention probabilities, when asked for.
    pub projection_attentions: Option<Tensor>,
    /// The vision tower's output, when images were encoded in this pass.
    pub vision_model_output: Option<VisionOutput>,
}

/// KOSMOS-2 without the LM head: vision tower, image-to-text projection, text decoder.
#[derive(Debug)]
pub struct Kosmos2Model {
    config: Kosmos2Config,
    /// The CLIP vision tower (`vision_model.model.*`).
    pub vision_model: VisionModel,
    /// The latent-query projection (`image_to_text_projection.*`).
    pub image_to_text_projection: ImageToTextProjection,
    /// The text decoder (`text_model.model.*`).
    pub text_model: TextTransformer,
    /// The file pages of the vision tower's weights (for [`Kosmos2Model::release_vision_pages`]).
    vision_pages: MappedPages,
    /// The file pages of the text decoder's weights (for [`Kosmos2Model::release_text_pages`]).
    text_pages: MappedPages,
}

/// The parts read from a model directory.
pub(crate) struct Loaded {
    pub model: Kosmos2Model,
    pub lm_head: Linear,
    /// Whether `lm_head` is `embed_tokens` itself.
    pub tied: bool,
}

impl Kosmos2Model {
    /// Loads `dir/config.json` and the weights (`model.safetensors` or a sharded index) at
    /// `precision` (a [`DType`](kosmos_tensor::DType), [`Precision::Int8`] or
    /// [`Precision::Int8Bf16`]). An `lm_head` in the file is accepted and unused.
    pub fn load(
        dir: impl AsRef<Path>,
        device: &Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        Ok(load_dir(dir.as_ref(), device, precision.into())?.model)
    }

    /// Builds the model from a config and an opened store, checking the complete key set.
    pub(crate) fn from_store(
        config: Kosmos2Config,
        store: &WeightStore,
        device: &Device,
        precision: Precision,
    ) -> Result<Loaded> {
        config.validate()?;
        check_keys(&config, &store.keys())?;
        let dtype = precision.dtype();
        let vision_model = VisionModel::load(store, &config.vision_config, dtype, device)?;
        let image_to_text_projection =
            ImageToTextProjection::load(store, &config.projection_config(), dtype, device)?;
        let names = TextNames::kosmos2();
        let mut src = StoreWeights::new(store, dtype, device);
        src.quantize_int8 = precision.quantizes_int8();
        let text_model = TextTransformer::load(&config.text_config, &src, &names)?;
        let (lm_head, tied) =
            load_lm_head(&config.text_config, &src, &names, &text_model.embed_tokens)?;
        if src.quantize_int8 && !tied {
            // The tied head was quantised from `embed_tokens`: its f32 pages are only read row
            // by row (the embedding gather) from now on.
            store.mapped_pages(&names.embed_tokens()).release();
        }
        Ok(Loaded {
            model: Self {
                config,
                vision_model,
                image_to_text_projection,
                text_model,
                vision_pages: store.mapped_pages("vision_model."),
                text_pages: store.mapped_pages("text_model."),
            },
            lm_head,
            tied,
        })
    }

    /// Drops the vision tower's memory-mapped weight pages from this process's resident set, e.g.
    /// after encoding the images and before a long decode. Only zero-copy weights (loaded in the
    /// file's own dtype) are mapped; converted ones are unaffected. The weights stay valid: the next
    /// image encode faults them back in from the page cache (or the file). With the full-size f32
    /// model this lowers peak RSS during decoding by the tower's 1.16 GiB.
    pub fn release_vision_pages(&self) {
        self.vision_pages.release();
    }

    /// Drops the text decoder's memory-mapped weight pages (and a tied or mapped `lm_head`'s) from
    /// this process's resident set, e.g. while a process waits between requests. As with
    /// [`Kosmos2Model::release_vision_pages`] only zero-copy weights are mapped and the weights stay
    /// valid, but the next forward faults every page it reads back in: with the full-size f32 model
    /// that is 5 GiB of minor faults, which costs more than a decode step's own time (measured in
    /// `docs/performance.md`, "Load time and memory"), so this is not something to do per token.
    pub fn release_text_pages(&self) {
        self.text_pages.release();
    }

    /// The configuration.
    pub fn config(&self) -> &Kosmos2Config {
        &self.config
    }

    /// An empty KV cache for `batch` rows and `capacity` tokens per row.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        Ok(self.text_model.new_cache(batch, capacity)?)
    }

    /// HF `get_image_features`: vision tower, `post_layernorm` on every token, L2 normalisation,
    /// projection. Returns `image_embeds` `[images, latent_query_num, embed_dim]`.
    pub fn get_image_features(
        &self,
        pixel_values: &Tensor,
        opts: &Kosmos2ForwardOptions<'_>,
    ) -> Result<ImageFeatures> {
        let vision_opts = VisionForwardOptions {
            output_hidden_states: opts.output_hidden_states,
            output_attentions: opts.output_attentions,
            interpolate_pos_encoding: opts.interpolate_pos_encoding,
        };
        let vision_model_output = self.vision_model.forward(pixel_values, &vision_opts)?;
        let features = self
            .vision_model
            .image_features(&vision_model_output.last_hidden_state)?;
        let proj = self
            .image_to_text_projection
            .forward(&features, opts.output_attentions)?;
        Ok(ImageFeatures {
            image_embeds: proj.image_embeds,
            projection_attentions: proj.attentions,
            vision_model_output,
        })
    }

    /// One forward pass (HF `Kosmos2Model.forward`).
    ///
    /// `cache` continues a previous pass; with none and `opts.use_cache`, a new cache sized for
    /// this step is created. The cache comes back in `past_key_values`.
    pub fn forward(
        &self,
        inputs: &Kosmos2Inputs<'_>,
        cache: Option<KvCache>,
        opts: &Kosmos2ForwardOptions<'_>,
    ) -> Result<Kosmos2ModelOutput> {
        let mut text = inputs.text;
        let mut image = None;
        if text.image_embeds.is_none() {
            if let Some(pixels) = inputs.pixel_values {
                if text.image_embeds_position_mask.is_none() {
                    return Err(Error::InvalidInput(
                        "pixel_values need image_embeds_position_mask (where the image tokens go)"
                            .into(),
                    ));
                }
                image = Some(self.get_image_features(pixels, opts)?);
            }
        }
        if let Some(f) = &image {
            text.image_embeds = Some(&f.image_embeds);
        }
        let mut cache = match cache {
            Some(c) => Some(c),
            None if opts.use_cache => Some(self.new_cache(text.batch, text.seq_len)?),
            None => None,
        };
        let out = self
            .text_model
            .forward(&text, cache.as_mut(), &opts.text_options())?;
        let (image_embeds, projection_attentions, vision_model_output) = match image {
            Some(f) => (
                Some(f.image_embeds),
                f.projection_attentions,
                Some(f.vision_model_output),
            ),
            None => (None, None, None),
        };
        Ok(Kosmos2ModelOutput {
            last_hidden_state: out.last_hidden_state,
            past_key_values: cache,
            hidden_states: out.hidden_states,
            attentions: out.attentions,
            image_embeds,
            projection_attentions,
            vision_model_output,
        })
    }
}

/// Reads `dir/config.json` and opens the weights in `dir`.
pub(crate) fn load_dir(dir: &Path, device: &Device, precision: Precision) -> Result<Loaded> {
    let config = Kosmos2Config::from_file(&dir.join("config.json"))?;
    let store = WeightStore::open(dir)?;
    Kosmos2Model::from_store(config, &store, device, precision)
}
