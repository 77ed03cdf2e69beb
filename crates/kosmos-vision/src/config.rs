//! `Kosmos2VisionConfig`, mirroring HF `Kosmos2VisionConfig` (`model_type = "kosmos_2_vision_model"`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The activation of the encoder MLP (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VisionActivation {
    /// `x * sigmoid(1.702 x)` (the real model).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// The exact erf GELU (`"gelu"` in HF).
    #[serde(rename = "gelu")]
    Gelu,
}

impl From<VisionActivation> for kosmos_tensor::ops::Activation {
    fn from(a: VisionActivation) -> Self {
        match a {
            VisionActivation::QuickGelu => Self::QuickGelu,
            VisionActivation::Gelu => Self::GeluErf,
        }
    }
}

/// The vision tower's configuration: CLIP ViT-L/14 at 224 pixels by default.
///
/// Every field has the real checkpoint's value as its serde default, so the
/// `vision_config` object of `config.json` parses even when it only lists the
/// fields that differ. Unknown fields (`model_type`, ...) are ignored.
///
/// ```
/// use kosmos_vision::Kosmos2VisionConfig;
/// let cfg: Kosmos2VisionConfig = serde_json::from_str(r#"{"hidden_size": 32, "num_attention_heads": 4}"#)?;
/// assert_eq!(cfg.head_dim(), 8);
/// assert_eq!(cfg.num_hidden_layers, 24);
/// assert_eq!(Kosmos2VisionConfig::default().num_positions(), 257);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kosmos2VisionConfig {
    /// Width of the residual stream (Dv).
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Input channels.
    pub num_channels: usize,
    /// The square input size the position table was trained for.
    pub image_size: usize,
    /// Patch side (conv kernel and stride).
    pub patch_size: usize,
    /// MLP activation.
    pub hidden_act: VisionActivation,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Unused at inference.
    pub attention_dropout: f64,
    /// Unused at inference.
    pub initializer_range: f64,
    /// Unused at inference.
    pub initializer_factor: f64,
}

impl Kosmos2VisionConfig {
    /// The vision config of `microsoft/kosmos-2-patch14-224` (HF's defaults).
    pub fn kosmos2_patch14_224() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 224,
            patch_size: 14,
            hidden_act: VisionActivation::QuickGelu,
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            initializer_range: 0.02,
            initializer_factor: 1.0,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Patches per side at `image_size`.
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Patches at `image_size` (256 for the real model).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Rows of the position table: patches + the CLS token (257 for the real model).
    pub fn num_positions(&self) -> usize {
        self.num_patches() + 1
    }

    /// Checks the sizes that the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_channels", self.num_channels),
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be > 0")));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::InvalidConfig(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.image_size < self.patch_size {
            return Err(Error::InvalidConfig(format!(
                "image_size {} is smaller than patch_size {}",
                self.image_size, self.patch_size
            )));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "layer_norm_eps must be > 0, got {}",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }
}

impl Default for Kosmos2VisionConfig {
    fn default() -> Self {
        Self::kosmos2_patch14_224()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_model() {
        let c = Kosmos2VisionConfig::default();
        assert_eq!(c.hidden_size, 1024);
        assert_eq!(c.intermediate_size, 4096);
        assert_eq!(c.num_hidden_layers, 24);
        assert_eq!(c.num_attention_heads, 16);
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.num_patches(), 256);
        assert_eq!(c.num_positions(), 257);
        assert_eq!(c.hidden_act, VisionActivation::QuickGelu);
        assert_eq!(c.layer_norm_eps, 1e-5);
        c.validate().unwrap();
    }

    #[test]
    fn parses_hf_vision_config_and_ignores_unknown_keys() {
        let json = r#"{"model_type": "kosmos_2_vision_model", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 28, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-05, "dtype": "float32"}"#;
        let c: Kosmos2VisionConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.hidden_size, 64);
        assert_eq!(c.patch_size, 14);
        assert_eq!(c.num_positions(), 5);
        c.validate().unwrap();
        let empty: Kosmos2VisionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Kosmos2VisionConfig::default());
    }

    #[test]
    fn rejects_bad_configs() {
        let bad_act = serde_json::from_str::<Kosmos2VisionConfig>(r#"{"hidden_act": "relu"}"#);
        assert!(bad_act.is_err());
        let c = Kosmos2VisionConfig {
            num_attention_heads: 3,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        let c = Kosmos2VisionConfig {
            patch_size: 0,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    }
}
