//! `VisionAttention`, mirroring HF `Kosmos2VisionAttention`: bidirectional multi-head self-attention.

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

use crate::block::EncoderAttention;
use crate::config::Kosmos2VisionConfig;
use crate::error::Result;
use crate::load::linear;
use crate::weights::EncoderLayerKeys;

/// q/k/v/out projections (all with bias), `num_heads` heads, scale `head_dim^-0.5`, no mask.
#[derive(Debug, Clone)]
pub struct VisionAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl VisionAttention {
    /// Builds the attention from its four projections.
    pub fn new(
        q_proj: Linear,
        k_proj: Linear,
        v_proj: Linear,
        out_proj: Linear,
        num_heads: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            q_proj,
            k_proj,
            v_proj,
            out_proj,
            num_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5) as f32,
        }
    }

    /// Loads the attention of encoder layer `index`.
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        index: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let keys = EncoderLayerKeys::new(index);
        let d = cfg.hidden_size;
        Ok(Self::new(
            linear(store, &keys.q_proj, d, d, dtype, device)?,
            linear(store, &keys.k_proj, d, d, dtype, device)?,
            linear(store, &keys.v_proj, d, d, dtype, device)?,
            linear(store, &keys.out_proj, d, d, dtype, device)?,
            cfg.num_attention_heads,
            cfg.head_dim(),
        ))
    }

    /// `[B, T, D]` → `[B, H, T, hd]` (a strided view).
    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(x.reshape(&[b, t, self.num_heads, self.head_dim])?
            .transpose(1, 2)?)
    }
}

impl EncoderAttention for VisionAttention {
    fn forward(
        &self,
        hidden_states: &Tensor,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t) = (hidden_states.dim(0)?, hidden_states.dim(1)?);
        let q = self.split_heads(&self.q_proj.forward(hidden_states)?, b, t)?;
        let k = self.split_heads(&self.k_proj.forward(hidden_states)?, b, t)?;
        let v = self.split_heads(&self.v_proj.forward(hidden_states)?, b, t)?;
        let (ctx, probs) = if output_attentions {
            let (ctx, probs) = ops::attention_with_probs(&q, &k, &v, None, self.scale)?;
            (ctx, Some(probs))
        } else {
            (ops::attention(&q, &k, &v, None, self.scale)?, None)
        };
        // [B, H, T, hd] → [B, T, H·hd]
        let ctx =
            ctx.transpose(1, 2)?
                .contiguous()?
                .reshape(&[b, t, self.num_heads * self.head_dim])?;
        Ok((self.out_proj.forward(&ctx)?, probs))
    }
}
