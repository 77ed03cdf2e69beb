//! `Kosmos2TextConfig`, mirroring HF `Kosmos2TextConfig` (`model_type = "kosmos_2_text_model"`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The activation between `fc1` and `ffn_layernorm` (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextActivation {
    /// The exact erf GELU, `0.5 x (1 + erf(x / sqrt 2))` (HF `"gelu"`, the real model).
    #[serde(rename = "gelu")]
    Gelu,
    /// `x * sigmoid(1.702 x)` (HF `"quick_gelu"`).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
}

impl From<TextActivation> for kosmos_tensor::ops::Activation {
    fn from(a: TextActivation) -> Self {
        match a {
            TextActivation::Gelu => Self::GeluErf,
            TextActivation::QuickGelu => Self::QuickGelu,
        }
    }
}

/// A token id given either as one id or as a list (HF allows both for `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids, any of which counts.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a slice.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            TokenIds::One(id) => std::slice::from_ref(id),
            TokenIds::Many(ids) => ids,
        }
    }
}

/// The text decoder's configuration; the defaults are `microsoft/kosmos-2-patch14-224`.
///
/// Field names are HF's, and the `attribute_map` aliases are accepted too:
/// `num_attention_heads` → `attention_heads`, `hidden_size` → `embed_dim`,
/// `num_hidden_layers` → `layers`. Missing fields take the real model's value;
/// unknown fields (`model_type`, generation keys, ...) are ignored.
///
/// ```
/// use kosmos_text::Kosmos2TextConfig;
/// let cfg: Kosmos2TextConfig =
///     serde_json::from_str(r#"{"hidden_size": 64, "num_attention_heads": 4, "layers": 2}"#)?;
/// assert_eq!((cfg.embed_dim, cfg.attention_heads, cfg.layers), (64, 4, 2));
/// assert_eq!(cfg.head_dim(), 16);
/// assert_eq!(Kosmos2TextConfig::default().vocab_size, 65037);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kosmos2TextConfig {
    /// Rows of `embed_tokens` and of `lm_head`.
    pub vocab_size: usize,
    /// Rows of the initial sinusoid table (minus the offset 2); positions beyond it still work.
    pub max_position_embeddings: usize,
    /// Width of the residual stream (D).
    #[serde(alias = "hidden_size")]
    pub embed_dim: usize,
    /// Number of decoder blocks.
    #[serde(alias = "num_hidden_layers")]
    pub layers: usize,
    /// Inner width of the FFN.
    pub ffn_dim: usize,
    /// Attention heads per block.
    #[serde(alias = "num_attention_heads")]
    pub attention_heads: usize,
    /// The FFN activation.
    pub activation_function: TextActivation,
    /// Unused at inference.
    pub dropout: f64,
    /// Unused at inference.
    pub attention_dropout: f64,
    /// Unused at inference.
    pub activation_dropout: f64,
    /// Unused at inference.
    pub layerdrop: f64,
    /// Epsilon of every text LayerNorm.
    pub layer_norm_eps: f64,
    /// Unused at inference.
    pub init_std: f64,
    /// Multiply token (and image) embeddings by `sqrt(embed_dim)`.
    pub scale_embedding: bool,
    /// Whether a forward pass keeps a KV cache by default.
    pub use_cache: bool,
    /// `lm_head` shares `embed_tokens` when the checkpoint stores no separate head.
    pub tie_word_embeddings: bool,
    /// The pad id; also the sinusoid `padding_idx` (row `pad` is all zeros).
    pub pad_token_id: Option<u32>,
    /// The beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// The end-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// Must be `false`: the checkpoint has no cross-attention.
    pub add_cross_attention: bool,
}

impl Kosmos2TextConfig {
    /// The text config of `microsoft/kosmos-2-patch14-224` (HF's defaults).
    pub fn kosmos2_patch14_224() -> Self {
        Self {
            vocab_size: 65037,
            max_position_embeddings: 2048,
            embed_dim: 2048,
            layers: 24,
            ffn_dim: 8192,
            attention_heads: 32,
            activation_function: TextActivation::Gelu,
            dropout: 0.1,
            attention_dropout: 0.1,
            activation_dropout: 0.0,
            layerdrop: 0.0,
            layer_norm_eps: 1e-5,
            init_std: 0.02,
            scale_embedding: true,
            use_cache: true,
            tie_word_embeddings: true,
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            eos_token_id: Some(TokenIds::One(2)),
            add_cross_attention: false,
        }
    }

    /// Width of one attention head (64 for the real model).
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.attention_heads.max(1)
    }

    /// The factor applied to the input embeddings: `f32(sqrt(embed_dim))`, or 1.
    pub fn embed_scale(&self) -> f32 {
        if self.scale_embedding {
            (self.embed_dim as f64).sqrt() as f32
        } else {
            1.0
        }
    }

    /// The pad id, which the sinusoidal positions need.
    pub fn padding_idx(&self) -> Result<u32> {
        self.pad_token_id.ok_or_else(|| {
            Error::InvalidConfig("pad_token_id is null; the sinusoidal positions need it".into())
        })
    }

    /// Checks the sizes the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("embed_dim", self.embed_dim),
            ("ffn_dim", self.ffn_dim),
            ("attention_heads", self.attention_heads),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be > 0")));
            }
        }
        if self.attention_heads == 0 || !self.embed_dim.is_multiple_of(self.attention_heads) {
            return Err(Error::InvalidConfig(format!(
                "embed_dim {} is not divisible by attention_heads {}",
                self.embed_dim, self.attention_heads
            )));
        }
        if self.embed_dim < 4 {
            return Err(Error::InvalidConfig(format!(
                "embed_dim {} is too small for the sinusoidal positions (needs >= 4)",
                self.embed_dim
            )));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "layer_norm_eps must be > 0, got {}",
                self.layer_norm_eps
            )));
        }
        if self.add_cross_attention {
            return Err(Error::InvalidConfig(
                "add_cross_attention = true is not supported (KOSMOS-2 has no cross-attention)"
                    .into(),
            ));
        }
        let pad = self.padding_idx()?;
        if pad as usize >= self.vocab_size {
            return Err(Error::InvalidConfig(format!(
                "pad_token_id {pad} is outside the vocabulary ({})",
                self.vocab_size
            )));
        }
        Ok(())
    }
}

impl Default for Kosmos2TextConfig {
    fn default() -> Self {
        Self::kosmos2_patch14_224()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_model() {
        let c = Kosmos2TextConfig::default();
        assert_eq!(c.vocab_size, 65037);
        assert_eq!(c.embed_dim, 2048);
        assert_eq!(c.layers, 24);
        assert_eq!(c.ffn_dim, 8192);
        assert_eq!(c.attention_heads, 32);
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.activation_function, TextActivation::Gelu);
        assert_eq!(c.layer_norm_eps, 1e-5);
        assert_eq!(c.pad_token_id, Some(1));
        assert_eq!(c.embed_scale(), 45.254_833_995_939_045_f64 as f32);
        assert!(c.tie_word_embeddings && c.scale_embedding && !c.add_cross_attention);
        c.validate().unwrap();
    }

    #[test]
    fn parses_hf_names_and_aliases() {
        let hf = r#"{"model_type": "kosmos_2_text_model", "embed_dim": 32, "attention_heads": 4, "layers": 2,
            "ffn_dim": 64, "vocab_size": 99, "no_repeat_ngram_size": 3, "eos_token_id": [2, 5]}"#;
        let c: Kosmos2TextConfig = serde_json::from_str(hf).unwrap();
        assert_eq!((c.embed_dim, c.attention_heads, c.layers), (32, 4, 2));
        assert_eq!(
            c.eos_token_id.as_ref().map(TokenIds::as_slice),
            Some(&[2u32, 5][..])
        );
        let aliased = r#"{"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
            "ffn_dim": 64, "vocab_size": 99, "eos_token_id": [2, 5]}"#;
        let a: Kosmos2TextConfig = serde_json::from_str(aliased).unwrap();
        assert_eq!(a, c);
        let empty: Kosmos2TextConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Kosmos2TextConfig::default());
    }

    #[test]
    fn parses_the_real_config_json_text_section() {
        // The real hub config.json carries 4.x generation keys inside text_config; they are ignored.
        let json = r#"{"activation_function": "gelu", "attention_heads": 32, "embed_dim": 2048,
            "eos_token_id": 2, "ffn_dim": 8192, "layer_norm_eps": 1e-05, "layers": 24,
            "no_repeat_ngram_size": 3, "pad_token_id": 1, "vocab_size": 65037, "torch_dtype": null}"#;
        let c: Kosmos2TextConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c, Kosmos2TextConfig::default());
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(
            serde_json::from_str::<Kosmos2TextConfig>(r#"{"activation_function": "relu"}"#)
                .is_err()
        );
        for bad in [
            Kosmos2TextConfig {
                attention_heads: 3,
                ..Default::default()
            },
            Kosmos2TextConfig {
                embed_dim: 0,
                ..Default::default()
            },
            Kosmos2TextConfig {
                pad_token_id: None,
                ..Default::default()
            },
            Kosmos2TextConfig {
                add_cross_attention: true,
                ..Default::default()
            },
            Kosmos2TextConfig {
                layer_norm_eps: 0.0,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }
}
