//! The feed-forward network with its sub-LN; mirrors HF `Kosmos2TextFFN`.

use kosmos_tensor::nn::{LayerNorm, Linear};
use kosmos_tensor::Tensor;

use crate::config::{Kosmos2TextConfig, TextActivation};
use crate::error::Result;
use crate::weights::{load_layer_norm, load_linear, FfnNames, WeightSource};

/// `fc2(ffn_layernorm(act(fc1(x))))`, with the LayerNorm over `ffn_dim` BETWEEN the activation and `fc2`.
#[derive(Debug, Clone)]
pub struct TextFfn {
    /// `fc1`: `embed_dim -> ffn_dim`.
    pub fc1: Linear,
    /// `fc2`: `ffn_dim -> embed_dim`.
    pub fc2: Linear,
    /// `ffn_layernorm`: LayerNorm over `ffn_dim`.
    pub ffn_layernorm: LayerNorm,
    /// The activation (exact erf GELU for the real model).
    pub activation: TextActivation,
}

impl TextFfn {
    /// Loads `fc1`, `fc2` and `ffn_layernorm` of one block.
    pub fn load(cfg: &Kosmos2TextConfig, src: &dyn WeightSource, names: &FfnNames) -> Result<Self> {
        Ok(Self {
            fc1: load_linear(src, &names.fc1, cfg.ffn_dim, cfg.embed_dim)?,
            fc2: load_linear(src, &names.fc2, cfg.embed_dim, cfg.ffn_dim)?,
            ffn_layernorm: load_layer_norm(
                src,
                &names.ffn_layernorm,
                cfg.ffn_dim,
                cfg.layer_norm_eps,
            )?,
            activation: cfg.activation_function,
        })
    }

    /// Applies the FFN to `[.., embed_dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // fc1 with the activation in its epilogue (bitwise fc1, then the activation).
        let h = self.fc1.forward_act(x, self.activation.into())?;
        let h = self.ffn_layernorm.forward(&h)?;
        Ok(self.fc2.forward(&h)?)
    }
}
