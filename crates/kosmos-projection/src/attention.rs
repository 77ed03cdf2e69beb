//! `CrossAttention`, mirroring HF `KosmosTextAttention` as used for `x_attn`
//! (cross-attention path, no `inner_attn_ln`, no mask, no cache).

use kosmos_tensor::mha::{AttentionKeys, MultiHeadAttention};
use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::config::ProjectionConfig;
use crate::error::Result;
use crate::weights::ProjectionKeys;

/// Multi-head attention of `query` tokens over `key_value` tokens; q/k/v/out with bias.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    inner: MultiHeadAttention,
}

impl CrossAttention {
    /// Wraps a multi-head attention (built with [`MultiHeadAttention::new`] from its four
    /// projections).
    pub fn new(inner: MultiHeadAttention) -> Self {
        Self { inner }
    }

    /// Loads `image_to_text_projection.x_attn.*`.
    pub fn load(
        store: &WeightStore,
        cfg: &ProjectionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let k = ProjectionKeys::new();
        let keys = AttentionKeys {
            q_proj: &k.q_proj,
            k_proj: &k.k_proj,
            v_proj: &k.v_proj,
            out_proj: &k.out_proj,
        };
        let inner = MultiHeadAttention::load(
            store,
            keys,
            cfg.attention_heads,
            cfg.head_dim(),
            dtype,
            device,
        )?;
        Ok(Self { inner })
    }

    /// `query [B, Tq, D]`, `key_value [B, Tk, D]` → (`[B, Tq, D]`, probabilities `[B, H, Tq, Tk]` if asked).
    pub fn forward(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        Ok(self
            .inner
            .forward(query, key_value, None, output_attentions)?)
    }
}
