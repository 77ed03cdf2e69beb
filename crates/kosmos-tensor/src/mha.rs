//! Multi-head attention without cache or inner LayerNorm: the shared core of HF
//! `Kosmos2VisionAttention` (self-attention) and of `KosmosTextAttention` used as the projection's
//! cross-attention (`x_attn`).

use crate::keys::LinearKeys;
use crate::nn::Linear;
use crate::{ops, DType, Device, Error, Result, Tensor, WeightStore};

/// `out_proj(softmax(q kᵀ · head_dim^-½ + mask) v)` with q from `query` and k, v from `key_value`;
/// q/k/v/out are `nn.Linear` with bias.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f32,
    products: ops::AttentionProducts,
}

/// The four projection keys of one attention module.
#[derive(Debug, Clone, Copy)]
pub struct AttentionKeys<'a> {
    /// `q_proj`.
    pub q_proj: &'a LinearKeys,
    /// `k_proj`.
    pub k_proj: &'a LinearKeys,
    /// `v_proj`.
    pub v_proj: &'a LinearKeys,
    /// `out_proj`.
    pub out_proj: &'a LinearKeys,
}

impl MultiHeadAttention {
    /// Builds the attention from its four projections (`embed_dim = num_heads · head_dim` wide).
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
            products: ops::AttentionProducts::F32,
        }
    }

    /// The same attention with its two products (`q kᵀ`, `probabilities · v`) in `products`'
    /// precision ([`ops::AttentionProducts`]).
    pub fn with_products(mut self, products: ops::AttentionProducts) -> Self {
        self.products = products;
        self
    }

    /// The precision of the two products.
    pub fn products(&self) -> ops::AttentionProducts {
        self.products
    }

    /// Loads the four `[embed_dim, embed_dim]` projections named by `keys`. With bf16 weights the
    /// products are bf16 too ([`ops::AttentionProducts::Bf16`]), as in a bf16 PyTorch model.
    pub fn load(
        store: &WeightStore,
        keys: AttentionKeys<'_>,
        num_heads: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let d = num_heads * head_dim;
        let products = if dtype == DType::BF16 {
            ops::AttentionProducts::Bf16
        } else {
            ops::AttentionProducts::F32
        };
        Ok(Self::new(
            keys.q_proj.load(store, d, d, dtype, device)?,
            keys.k_proj.load(store, d, d, dtype, device)?,
            keys.v_proj.load(store, d, d, dtype, device)?,
            keys.out_proj.load(store, d, d, dtype, device)?,
            num_heads,
            head_dim,
        )
        .with_products(products))
    }

    /// `[B, T, D]` → `[B, H, T, hd]` (a strided view).
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(Error::Rank {
                op: "multi_head_attention",
                expected: 3,
                shape: x.dims().to_vec(),
            });
        }
        let (b, t) = (x.dims()[0], x.dims()[1]);
        x.reshape(&[b, t, self.num_heads, self.head_dim])?
            .transpose(1, 2)
    }

    /// `query [B, Tq, D]` attends to `key_value [B, Tk, D]` under the optional additive `mask`
    /// (broadcast to `[B, H, Tq, Tk]`); returns `[B, Tq, D]` and, when asked, the probabilities
    /// `[B, H, Tq, Tk]`.
    pub fn forward(
        &self,
        query: &Tensor,
        key_value: &Tensor,
        mask: Option<&Tensor>,
        output_attentions: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let q = self.split_heads(&self.q_proj.forward(query)?)?;
        let k = self.split_heads(&self.k_proj.forward(key_value)?)?;
        let v = self.split_heads(&self.v_proj.forward(key_value)?)?;
        let (ctx, probs) = ops::attention_products(
            &q,
            &k,
            &v,
            mask,
            self.scale,
            output_attentions,
            self.products,
        )?;
        let (b, tq) = (query.dims()[0], query.dims()[1]);
        // [B, H, Tq, hd] → [B, Tq, H·hd]
        let ctx =
            ctx.transpose(1, 2)?
                .contiguous()?
                .reshape(&[b, tq, self.num_heads * self.head_dim])?;
        Ok((self.out_proj.forward(&ctx)?, probs))
    }
}
