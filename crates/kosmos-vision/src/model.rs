//! `VisionModel`, mirroring HF `Kosmos2VisionModel` / `Kosmos2VisionTransformer`.

use kosmos_tensor::nn::LayerNorm;
use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

use crate::config::Kosmos2VisionConfig;
use crate::embeddings::VisionEmbeddings;
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::weights::{post_layernorm, pre_layrnorm};

/// The epsilon of `F.normalize` in HF `Kosmos2Model.get_image_features`.
pub const IMAGE_FEATURES_NORM_EPS: f32 = 1e-12;

/// Options of [`VisionModel::forward`], named as HF's keyword arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisionForwardOptions {
    /// Return the encoder input and every layer's output.
    pub output_hidden_states: bool,
    /// Return every layer's attention probabilities.
    pub output_attentions: bool,
    /// Accept inputs other than `image_size` square by resizing the position table (torch bicubic).
    pub interpolate_pos_encoding: bool,
}

/// The vision tower's output (HF `BaseModelOutputWithPooling`).
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// The encoder output `[B, 1 + patches, hidden]`, before `post_layernorm`.
    pub last_hidden_state: Tensor,
    /// `post_layernorm` of the CLS token, `[B, hidden]` (CLIP's pooler; KOSMOS-2 does not use it).
    pub pooler_output: Tensor,
    /// `num_hidden_layers + 1` tensors `[B, T, hidden]`: index 0 is the embeddings after
    /// `pre_layrnorm` (the encoder's input), index `i + 1` the output of layer `i`.
    pub hidden_states: Option<Vec<Tensor>>,
    /// `num_hidden_layers` tensors `[B, heads, T, T]`.
    pub attentions: Option<Vec<Tensor>>,
}

/// CLIP ViT: embeddings → `pre_layrnorm` → encoder; `post_layernorm` for the pooler and image features.
#[derive(Debug)]
pub struct VisionModel {
    config: Kosmos2VisionConfig,
    embeddings: VisionEmbeddings,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
}

impl VisionModel {
    /// Loads the vision tower (`vision_model.model.*`) of a KOSMOS-2 checkpoint.
    ///
    /// Weights are converted to `dtype` (zero-copy when the file already stores `dtype`).
    pub fn load(
        store: &WeightStore,
        config: &Kosmos2VisionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let (d, eps) = (config.hidden_size, config.layer_norm_eps);
        Ok(Self {
            config: config.clone(),
            embeddings: VisionEmbeddings::load(store, config, dtype, device)?,
            pre_layrnorm: pre_layrnorm().load(store, d, eps, dtype, device)?,
            encoder: Encoder::load(store, config, dtype, device)?,
            post_layernorm: post_layernorm().load(store, d, eps, dtype, device)?,
        })
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &Kosmos2VisionConfig {
        &self.config
    }

    /// The embeddings block.
    pub fn embeddings(&self) -> &VisionEmbeddings {
        &self.embeddings
    }

    /// The encoder blocks.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The encoder blocks, mutably: swap a layer with [`Encoder::replace_layer`].
    pub fn encoder_mut(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// `post_layernorm`.
    pub fn post_layernorm(&self) -> &LayerNorm {
        &self.post_layernorm
    }

    /// Runs the tower on `pixel_values [B, channels, H, W]`.
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        opts: &VisionForwardOptions,
    ) -> Result<VisionOutput> {
        // One pool entry per pass, not one per op.
        ops::in_pool_on(pixel_values.device(), || {
            self.forward_pooled(pixel_values, opts)
        })
    }

    /// [`forward`](Self::forward) on a pool thread (on the CPU).
    fn forward_pooled(
        &self,
        pixel_values: &Tensor,
        opts: &VisionForwardOptions,
    ) -> Result<VisionOutput> {
        let embeds = self
            .embeddings
            .forward(pixel_values, opts.interpolate_pos_encoding)?;
        let hidden = self.pre_layrnorm.forward(&embeds)?;
        let enc =
            self.encoder
                .forward(&hidden, opts.output_hidden_states, opts.output_attentions)?;
        let (b, d) = (enc.last_hidden_state.dim(0)?, self.config.hidden_size);
        let cls = enc.last_hidden_state.narrow(1, 0, 1)?.reshape(&[b, d])?;
        let pooler_output = self.post_layernorm.forward(&cls)?;
        Ok(VisionOutput {
            last_hidden_state: enc.last_hidden_state,
            pooler_output,
            hidden_states: enc.hidden_states,
            attentions: enc.attentions,
        })
    }

    /// The projection's input (HF `Kosmos2Model.get_image_features` before the projection):
    /// `post_layernorm` on every token of `last_hidden_state`, then each token L2-normalised
    /// (`x / max(‖x‖, 1e-12)`). `[B, T, hidden]` → `[B, T, hidden]`, CLS included.
    pub fn image_features(&self, last_hidden_state: &Tensor) -> Result<Tensor> {
        let dims = last_hidden_state.dims();
        if dims.len() != 3 || dims[2] != self.config.hidden_size {
            return Err(Error::HiddenShape {
                what: "image_features",
                hidden: self.config.hidden_size,
                shape: dims.to_vec(),
            });
        }
        let normed = self.post_layernorm.forward(last_hidden_state)?;
        Ok(ops::l2_normalize_last_dim(
            &normed,
            IMAGE_FEATURES_NORM_EPS,
        )?)
    }
}
