//! Self-attention with the sub-LN before `out_proj`; mirrors HF `KosmosTextAttention`
//! (`add_inner_attn_layernorm=True`, `is_causal=True`).

use kosmos_tensor::nn::{LayerNorm, Linear};
use kosmos_tensor::{ops, Tensor};

use crate::cache::LayerCache;
use crate::config::Kosmos2TextConfig;
use crate::error::{Error, Result};
use crate::weights::{load_layer_norm, load_linear, AttentionNames, WeightSource};

/// Multi-head self-attention: `out_proj(inner_attn_ln(softmax(q kᵀ · hd^-½ + mask) v))`.
#[derive(Debug, Clone)]
pub struct TextAttention {
    /// `q_proj` (with bias).
    pub q_proj: Linear,
    /// `k_proj` (with bias).
    pub k_proj: Linear,
    /// `v_proj` (with bias).
    pub v_proj: Linear,
    /// `out_proj` (with bias).
    pub out_proj: Linear,
    /// `inner_attn_ln`: LayerNorm over the merged heads, applied BEFORE `out_proj`.
    pub inner_attn_ln: Option<LayerNorm>,
    /// Number of heads.
    pub num_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// `head_dim^-0.5`, applied to `q kᵀ`.
    pub scaling: f32,
}

/// The result of one attention call.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `[batch, t, embed_dim]`, after `out_proj`.
    pub hidden_states: Tensor,
    /// The softmax probabilities `[batch, heads, t, keys]` (after the head mask), when asked for.
    pub attentions: Option<Tensor>,
}

impl TextAttention {
    /// Loads the projections and `inner_attn_ln` of one block.
    pub fn load(
        cfg: &Kosmos2TextConfig,
        src: &dyn WeightSource,
        names: &AttentionNames,
    ) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            q_proj: load_linear(src, &names.q_proj, d, d)?,
            k_proj: load_linear(src, &names.k_proj, d, d)?,
            v_proj: load_linear(src, &names.v_proj, d, d)?,
            out_proj: load_linear(src, &names.out_proj, d, d)?,
            inner_attn_ln: Some(load_layer_norm(
                src,
                &names.inner_attn_ln,
                d,
                cfg.layer_norm_eps,
            )?),
            num_heads: cfg.attention_heads,
            head_dim: cfg.head_dim(),
            scaling: (cfg.head_dim() as f64).powf(-0.5) as f32,
        })
    }

    /// `[b, t, d]` -> `[b, heads, t, head_dim]` (a strided view).
    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(x.reshape(&[b, t, self.num_heads, self.head_dim])?
            .transpose(1, 2)?)
    }

    /// Attends `x` (`[batch, t, embed_dim]`, already layer-normed) to itself and to the cache.
    ///
    /// `mask` is the additive `[batch, 1, t, keys]` mask; `head_mask` (one factor per head)
    /// multiplies each head's probabilities, as HF 4.x's `layer_head_mask`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache<'_>>,
        head_mask: Option<&[f32]>,
        output_attentions: bool,
    ) -> Result<AttentionOutput> {
        let dims = x.dims();
        if dims.len() != 3 {
            return Err(Error::InputShape {
                what: "attention input",
                expected: "[batch, t, embed_dim]".into(),
                found: format!("{dims:?}"),
            });
        }
        let (b, t, d) = (dims[0], dims[1], dims[2]);
        let q = self.split_heads(&self.q_proj.forward(x)?, b, t)?;
        let k = self.split_heads(&self.k_proj.forward(x)?, b, t)?;
        let v = self.split_heads(&self.v_proj.forward(x)?, b, t)?;
        let (k, v) = match cache {
            Some(c) => c.append(&k, &v)?,
            None => (k, v),
        };
        let (o, probs) = if output_attentions {
            let (o, p) = ops::attention_with_probs(&q, &k, &v, mask, self.scaling)?;
            (o, Some(p))
        } else {
            (ops::attention(&q, &k, &v, mask, self.scaling)?, None)
        };
        drop((k, v));
        // [b, heads, t, hd] -> [b, t, heads, hd]
        let mut o = o.transpose(1, 2)?.contiguous()?;
        let mut probs = probs;
        if let Some(hm) = head_mask {
            if hm.len() != self.num_heads {
                return Err(Error::InputShape {
                    what: "head_mask (one layer)",
                    expected: format!("{} factors", self.num_heads),
                    found: format!("{}", hm.len()),
                });
            }
            let factors: Vec<f32> = hm
                .iter()
                .flat_map(|&f| std::iter::repeat_n(f, self.head_dim))
                .collect();
            let factors = Tensor::from_vec(factors, &[self.num_heads, self.head_dim], x.device())?;
            o = o.mul(&factors)?;
            probs = probs.map(|p| scale_heads(&p, hm)).transpose()?;
        }
        let mut o = o.reshape(&[b, t, d])?;
        if let Some(ln) = &self.inner_attn_ln {
            o = ln.forward(&o)?;
        }
        let hidden_states = self.out_proj.forward(&o)?;
        Ok(AttentionOutput {
            hidden_states,
            attentions: probs,
        })
    }
}

/// Multiplies head `h` of `p` (`[batch, heads, tq, tk]`) by `factors[h]`.
fn scale_heads(p: &Tensor, factors: &[f32]) -> Result<Tensor> {
    let dims = p.dims().to_vec();
    let per_head = dims[2] * dims[3];
    let mut data = p.to_vec_f32()?;
    for (i, chunk) in data.chunks_exact_mut(per_head).enumerate() {
        let f = factors[i % factors.len()];
        chunk.iter_mut().for_each(|x| *x *= f);
    }
    Ok(Tensor::from_vec(data, &dims, p.device())?)
}
