//! `EncoderLayer`, mirroring HF `Kosmos2VisionEncoderLayer`: a pre-LN CLIP block.

use kosmos_tensor::nn::LayerNorm;
use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

use crate::attention::VisionAttention;
use crate::block::{BlockOutput, EncoderAttention, EncoderBlock, EncoderMlp};
use crate::config::Kosmos2VisionConfig;
use crate::error::Result;
use crate::mlp::VisionMlp;
use crate::weights::EncoderLayerKeys;

/// `h = h + self_attn(layer_norm1(h)); h = h + mlp(layer_norm2(h))`.
///
/// The attention and the MLP are trait objects, so either can be replaced in one layer with
/// [`EncoderLayer::with_attention`] / [`EncoderLayer::with_mlp`].
#[derive(Debug)]
pub struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: Box<dyn EncoderAttention>,
    layer_norm2: LayerNorm,
    mlp: Box<dyn EncoderMlp>,
}

impl EncoderLayer {
    /// Builds a layer from its parts.
    pub fn new(
        layer_norm1: LayerNorm,
        self_attn: Box<dyn EncoderAttention>,
        layer_norm2: LayerNorm,
        mlp: Box<dyn EncoderMlp>,
    ) -> Self {
        Self {
            layer_norm1,
            self_attn,
            layer_norm2,
            mlp,
        }
    }

    /// Loads encoder layer `index` (`vision_model.model.encoder.layers.{index}.*`).
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        index: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let keys = EncoderLayerKeys::new(index);
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(Self::new(
            keys.layer_norm1.load(store, d, eps, dtype, device)?,
            Box::new(VisionAttention::load(store, cfg, index, dtype, device)?),
            keys.layer_norm2.load(store, d, eps, dtype, device)?,
            Box::new(VisionMlp::load(store, cfg, index, dtype, device)?),
        ))
    }

    /// Replaces the self-attention, keeping the norms, the residuals and the MLP.
    pub fn with_attention(mut self, self_attn: Box<dyn EncoderAttention>) -> Self {
        self.self_attn = self_attn;
        self
    }

    /// Replaces the MLP, keeping the norms, the residuals and the attention.
    pub fn with_mlp(mut self, mlp: Box<dyn EncoderMlp>) -> Self {
        self.mlp = mlp;
        self
    }
}

impl EncoderBlock for EncoderLayer {
    fn forward(&self, hidden_states: &Tensor, output_attentions: bool) -> Result<BlockOutput> {
        let normed = self.layer_norm1.forward(hidden_states)?;
        let (attn, attentions) = self.self_attn.forward(&normed, output_attentions)?;
        // residual + attn, then layer_norm2 of the sum, in one pass.
        let ln2 = &self.layer_norm2;
        let (hidden, normed) =
            ops::add_layer_norm(&attn, hidden_states, &ln2.weight, &ln2.bias, ln2.eps)?;
        let mlp = self.mlp.forward(&normed)?;
        Ok(BlockOutput {
            hidden_states: hidden.add(&mlp)?,
            attentions,
        })
    }
}
