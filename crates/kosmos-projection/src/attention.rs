//! `CrossAttention`, mirroring HF `KosmosTextAttention` as used for `x_attn`
//! (cross-attention path, no `inner_attn_ln`, no mask, no cache).

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

use crate::config::ProjectionConfig;
use crate::error::Result;
use crate::weights::{LinearKeys, ProjectionKeys};

/// Multi-head attention of `query` tokens over `key_value` tokens; q/k/v/out with bias.
#[derive(Debug, Clone)]
pub struct CrossAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f32,
}

fn linear(
    store: &WeightStore,
    keys: &LinearKeys,
    out_dim: usize,
    in_dim: usize,
    dtype: DType,
    device: &Device,
) -> Result<Linear> {
    let weight = store.get(&keys.weight, &[out_dim, in_dim], dtype, device)?;
    let bias = store.get(&keys.bias, &[out_dim], dtype, device)?;
    Ok(Linear::new(weight, Some(bias)))
}

impl CrossAttention {
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

    /// Loads `image_to_text_projection.x_attn.*`.
    pub fn load(
        store: &WeightStore,
        cfg: &ProjectionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let k = ProjectionKeys::new();
        let d = cfg.embed_dim;
        Ok(Self::new(
            linear(store, &k.q_proj, d, d, dtype, device)?,
            linear(store, &k.k_proj, d, d, dtype, device)?,
            linear(store, &k.v_proj, d, d, dtype, device)?,
            linear(store, &k.out_proj, d, d, dtype, device)?,
            cfg.attention_heads,
            cfg.head_dim(),
        ))
    }

    /// `[B, T, D]` → `[B, H, T, hd]` (a strided view).
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = (x.dim(0)?, x.dim(1)?);
        Ok(x.reshape(&[b, t, self.num_heads, self.head_dim])?
            .transpose(1, 2)?)
    }

    /// `query [B, Tq, D]`, `key_value [B, Tk, D]` → (`[B, Tq, D]`, probabilities `[B, H, Tq, Tk]` if asked).
    pub fn forward(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, tq) = (query.dim(0)?, query.dim(1)?);
        let q = self.split_heads(&self.q_proj.forward(query)?)?;
        let k = self.split_heads(&self.k_proj.forward(key_value)?)?;
        let v = self.split_heads(&self.v_proj.forward(key_value)?)?;
        let (ctx, probs) = if output_attentions {
            let (ctx, probs) = ops::attention_with_probs(&q, &k, &v, None, self.scale)?;
            (ctx, Some(probs))
        } else {
            (ops::attention(&q, &k, &v, None, self.scale)?, None)
        };
        let ctx =
            ctx.transpose(1, 2)?
                .contiguous()?
                .reshape(&[b, tq, self.num_heads * self.head_dim])?;
        Ok((self.out_proj.forward(&ctx)?, probs))
    }
}
