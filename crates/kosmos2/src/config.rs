//! `Kosmos2Config`, mirroring HF `Kosmos2Config` (`model_type = "kosmos-2"`).

use std::path::Path;

use kosmos_projection::ProjectionConfig;
use kosmos_text::Kosmos2TextConfig;
use kosmos_vision::Kosmos2VisionConfig;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The model configuration, as in `config.json`: nested `text_config` and `vision_config`, plus
/// `latent_query_num`. Every default is `microsoft/kosmos-2-patch14-224`; unknown keys are ignored
/// and `null` sub-configs take the defaults, as in HF.
///
/// ```
/// use kosmos2::Kosmos2Config;
/// let cfg = Kosmos2Config::from_json_str(r#"{"text_config": {"layers": 2}, "latent_query_num": 4}"#)?;
/// assert_eq!(cfg.text_config.layers, 2);
/// assert_eq!(cfg.vision_config.hidden_size, 1024);
/// assert_eq!(cfg.projection_config().latent_query_num, 4);
/// # Ok::<(), kosmos2::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kosmos2Config {
    /// The text decoder.
    #[serde(deserialize_with = "null_as_default")]
    pub text_config: Kosmos2TextConfig,
    /// The vision tower.
    #[serde(deserialize_with = "null_as_default")]
    pub vision_config: Kosmos2VisionConfig,
    /// Image tokens fed to the decoder (must match the processor's `num_image_tokens`).
    pub latent_query_num: usize,
    /// Whether `lm_head` is tied to `embed_tokens`.
    pub tie_word_embeddings: bool,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Default for Kosmos2Config {
    fn default() -> Self {
        Self::kosmos2_patch14_224()
    }
}

impl Kosmos2Config {
    /// The config of `microsoft/kosmos-2-patch14-224`.
    pub fn kosmos2_patch14_224() -> Self {
        Self {
            text_config: Kosmos2TextConfig::kosmos2_patch14_224(),
            vision_config: Kosmos2VisionConfig::kosmos2_patch14_224(),
            latent_query_num: 64,
            tie_word_embeddings: true,
        }
    }

    /// Parses a `config.json` string and validates it.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(json).map_err(|source| Error::ConfigJson {
            path: "<string>".into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.into(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigJson {
            path: path.into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The projection's sizes, gathered from the three places HF reads them from.
    pub fn projection_config(&self) -> ProjectionConfig {
        ProjectionConfig {
            latent_query_num: self.latent_query_num,
            vision_hidden_size: self.vision_config.hidden_size,
            embed_dim: self.text_config.embed_dim,
            attention_heads: self.text_config.attention_heads,
        }
    }

    /// Checks every sub-config.
    pub fn validate(&self) -> Result<()> {
        self.text_config.validate()?;
        self.vision_config.validate()?;
        self.projection_config().validate()?;
        Ok(())
    }
}
