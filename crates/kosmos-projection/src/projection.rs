//! `ImageToTextProjection`, mirroring HF `Kosmos2ImageToTextProjection`.

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::attention::CrossAttention;
use crate::config::ProjectionConfig;
use crate::error::{Error, Result};
use crate::weights::ProjectionKeys;

/// What the projection returns.
#[derive(Debug, Clone)]
pub struct ProjectionOutput {
    /// `[B, latent_query_num, embed_dim]`: the embeddings that replace the image placeholder tokens.
    pub image_embeds: Tensor,
    /// The cross-attention probabilities `[B, heads, latent_query_num, tokens + latent_query_num]`,
    /// when asked for (HF `projection_attentions`).
    pub attentions: Option<Tensor>,
}

/// `dense`, `latent_query` and `x_attn`:
/// `image_embeds = x_attn(q = latent_query, kv = [dense(features); latent_query])`.
#[derive(Debug, Clone)]
pub struct ImageToTextProjection {
    config: ProjectionConfig,
    dense: Linear,
    /// `[latent_query_num, embed_dim]`.
    latent_query: Tensor,
    x_attn: CrossAttention,
}

impl ImageToTextProjection {
    /// Loads `image_to_text_projection.*`, converting the weights to `dtype`.
    pub fn load(
        store: &WeightStore,
        config: &ProjectionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let k = ProjectionKeys::new();
        let (d, dv) = (config.embed_dim, config.vision_hidden_size);
        let dense = k.dense.load(store, d, dv, dtype, device)?;
        let latent_query = store.get(
            &k.latent_query,
            &[config.latent_query_num, d],
            dtype,
            device,
        )?;
        Ok(Self {
            config: config.clone(),
            dense,
            latent_query,
            x_attn: CrossAttention::load(store, config, dtype, device)?,
        })
    }

    /// The configuration the projection was loaded with.
    pub fn config(&self) -> &ProjectionConfig {
        &self.config
    }

    /// `features [B, T, vision_hidden_size]` (post-LN, L2-normalised vision tokens, CLS included)
    /// → `image_embeds [B, latent_query_num, embed_dim]`.
    pub fn forward(&self, features: &Tensor, output_attentions: bool) -> Result<ProjectionOutput> {
        // One pool entry per pass, not one per op.
        kosmos_tensor::ops::in_pool_on(features.device(), || {
            self.forward_pooled(features, output_attentions)
        })
    }

    /// [`forward`](Self::forward) on a pool thread (on the CPU).
    fn forward_pooled(
        &self,
        features: &Tensor,
        output_attentions: bool,
    ) -> Result<ProjectionOutput> {
        let dims = features.dims();
        if dims.len() != 3 || dims[0] == 0 || dims[2] != self.config.vision_hidden_size {
            return Err(Error::FeatureShape {
                hidden: self.config.vision_hidden_size,
                shape: dims.to_vec(),
            });
        }
        let batch = dims[0];
        let hidden = self.dense.forward(features)?;
        let latent_query = self
            .latent_query
            .to_dtype(hidden.dtype())?
            .broadcast_left(batch)?;
        // Image tokens first, then the latent queries.
        let key_value = Tensor::cat(&[&hidden, &latent_query], 1)?;
        let (image_embeds, attentions) =
            self.x_attn
                .forward(&latent_query, &key_value, output_attentions)?;
        Ok(ProjectionOutput {
            image_embeds,
            attentions,
        })
    }
}
