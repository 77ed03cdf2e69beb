//! `VisionAttention`, mirroring HF `Kosmos2VisionAttention`: bidirectional multi-head self-attention.

use kosmos_tensor::mha::{AttentionKeys, MultiHeadAttention};
use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::block::EncoderAttention;
use crate::config::Kosmos2VisionConfig;
use crate::error::Result;
use crate::weights::EncoderLayerKeys;

/// q/k/v/out projections (all with bias), `num_heads` heads, scale `head_dim^-0.5`, no mask.
#[derive(Debug, Clone)]
pub struct VisionAttention {
    inner: MultiHeadAttention,
}

impl VisionAttention {
    /// Wraps a multi-head attention (built with [`MultiHeadAttention::new`] from its four
    /// projections).
    pub fn new(inner: MultiHeadAttention) -> Self {
        Self { inner }
    }

    /// Loads the attention of encoder layer `index`.
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        index: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let k = EncoderLayerKeys::new(index);
        let keys = AttentionKeys {
            q_proj: &k.q_proj,
            k_proj: &k.k_proj,
            v_proj: &k.v_proj,
            out_proj: &k.out_proj,
        };
        let inner = MultiHeadAttention::load(
            store,
            keys,
            cfg.num_attention_heads,
            cfg.head_dim(),
            dtype,
            device,
        )?;
        Ok(Self { inner })
    }
}

impl EncoderAttention for VisionAttention {
    fn forward(
        &self,
        hidden_states: &Tensor,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok(self
            .inner
            .forward(hidden_states, hidden_states, None, output_attentions)?)
    }
}
