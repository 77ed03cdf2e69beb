//! `ProjectionConfig`: the sizes of HF `Kosmos2ImageToTextProjection`, gathered from `Kosmos2Config`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The projection's sizes. In HF they come from three places of `Kosmos2Config`:
/// `latent_query_num` (top level), `vision_config.hidden_size`, and `text_config.embed_dim` /
/// `text_config.attention_heads`.
///
/// ```
/// use kosmos_projection::ProjectionConfig;
/// let cfg = ProjectionConfig::default();
/// assert_eq!((cfg.latent_query_num, cfg.vision_hidden_size, cfg.embed_dim, cfg.attention_heads), (64, 1024, 2048, 32));
/// assert_eq!(cfg.head_dim(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProjectionConfig {
    /// Number of latent queries = image tokens fed to the language model (64).
    pub latent_query_num: usize,
    /// Width of the vision features (`vision_config.hidden_size`, 1024).
    pub vision_hidden_size: usize,
    /// Width of the text model (`text_config.embed_dim`, 2048).
    pub embed_dim: usize,
    /// Heads of the cross-attention (`text_config.attention_heads`, 32).
    pub attention_heads: usize,
}

impl ProjectionConfig {
    /// The projection of `microsoft/kosmos-2-patch14-224`.
    pub fn kosmos2_patch14_224() -> Self {
        Self {
            latent_query_num: 64,
            vision_hidden_size: 1024,
            embed_dim: 2048,
            attention_heads: 32,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.attention_heads.max(1)
    }

    /// Checks the sizes the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("latent_query_num", self.latent_query_num),
            ("vision_hidden_size", self.vision_hidden_size),
            ("embed_dim", self.embed_dim),
            ("attention_heads", self.attention_heads),
        ] {
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
        Ok(())
    }
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self::kosmos2_patch14_224()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_model_and_parse() {
        let c: ProjectionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ProjectionConfig::kosmos2_patch14_224());
        c.validate().unwrap();
        let c: ProjectionConfig =
            serde_json::from_str(r#"{"embed_dim": 48, "attention_heads": 4}"#).unwrap();
        assert_eq!(c.head_dim(), 12);
    }

    #[test]
    fn rejects_bad_configs() {
        let c = ProjectionConfig {
            attention_heads: 3,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
        let c = ProjectionConfig {
            latent_query_num: 0,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    }
}
