//! `preprocessor_config.json` and `tokenizer_config.json`, with the HF defaults.

use std::path::Path;

use serde::Deserialize;

use crate::error::ProcessorError;
use crate::resize::Filter;

/// An image size as HF stores it: `{"height", "width"}`, `{"shortest_edge"}`, or a bare int.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(usize),
    Dict {
        height: Option<usize>,
        width: Option<usize>,
        shortest_edge: Option<usize>,
        longest_edge: Option<usize>,
    },
}

/// One float or one per channel (`image_mean`, `image_std`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum RawChannels {
    One(f64),
    Three(Vec<f64>),
}

/// The raw JSON, every field optional: absent fields take the CLIP processor defaults.
#[derive(Debug, Deserialize)]
struct RawPreprocessorConfig {
    image_processor_type: Option<String>,
    do_resize: Option<bool>,
    size: Option<RawSize>,
    resample: Option<u32>,
    do_center_crop: Option<bool>,
    crop_size: Option<RawSize>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<RawChannels>,
    image_std: Option<RawChannels>,
    do_convert_rgb: Option<bool>,
    use_square_size: Option<bool>,
}

/// How images are resized before the optional center crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Resize to exactly `height × width`, ignoring the aspect ratio (KOSMOS-2).
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// Resize so the shorter edge equals this value, keeping the aspect ratio
    /// (HF `get_resize_output_image_size(default_to_square=False)`).
    ShortestEdge(usize),
}

/// The effective image preprocessing settings (HF `CLIPImageProcessorPil`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// Whether to resize.
    pub do_resize: bool,
    /// The resize target.
    pub size: ResizeTarget,
    /// The Pillow resampling filter.
    pub resample: Filter,
    /// Whether to center-crop after resizing.
    pub do_center_crop: bool,
    /// Crop `(height, width)`.
    pub crop_size: (usize, usize),
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Per-channel mean (RGB).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (RGB).
    pub image_std: [f64; 3],
    /// Whether to convert to RGB (always done here; a `false` value is rejected at load).
    pub do_convert_rgb: bool,
}

/// OpenAI CLIP mean (HF `OPENAI_CLIP_MEAN`).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP standard deviation (HF `OPENAI_CLIP_STD`).
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl PreprocessorConfig {
    /// The settings of `microsoft/kosmos-2-patch14-224`: square 224×224 bicubic resize,
    /// crop 224 (a no-op), rescale 1/255, CLIP normalisation.
    pub fn kosmos2() -> Self {
        Self {
            do_resize: true,
            size: ResizeTarget::Exact {
                height: 224,
                width: 224,
            },
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            do_convert_rgb: true,
        }
    }

    /// Reads `preprocessor_config.json`, applying the HF CLIP defaults for absent keys and
    /// the legacy `use_square_size` flag.
    pub fn from_file(path: &Path) -> Result<Self, ProcessorError> {
        let text = crate::config::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses the JSON text of a `preprocessor_config.json`; `path` is only used in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ProcessorError> {
        let raw: RawPreprocessorConfig =
            serde_json::from_str(text).map_err(|source| ProcessorError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let bad = |message: String| ProcessorError::Config {
            path: path.to_path_buf(),
            message,
        };
        if let Some(kind) = &raw.image_processor_type {
            if !kind.starts_with("CLIPImageProcessor") {
                return Err(bad(format!(
                    "image_processor_type {kind:?} is not a CLIP image processor"
                )));
            }
        }
        let defaults = Self::kosmos2();
        // CLIPImageProcessorPil.__init__: `use_square_size` replaces size by
        // {height: 224, width: 224} taken from the class default shortest_edge.
        let size = if raw.use_square_size == Some(true) {
            ResizeTarget::Exact {
                height: 224,
                width: 224,
            }
        } else {
            match raw.size {
                None => ResizeTarget::ShortestEdge(224),
                Some(RawSize::Int(n)) => ResizeTarget::ShortestEdge(n),
                Some(RawSize::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }) => ResizeTarget::Exact {
                    height: h,
                    width: w,
                },
                Some(RawSize::Dict {
                    shortest_edge: Some(s),
                    longest_edge: None,
                    ..
                }) => ResizeTarget::ShortestEdge(s),
                Some(other) => return Err(bad(format!("unsupported size {other:?}"))),
            }
        };
        let crop_size = match raw.crop_size {
            None => defaults.crop_size,
            Some(RawSize::Int(n)) => (n, n),
            Some(RawSize::Dict {
                height: Some(h),
                width: Some(w),
                ..
            }) => (h, w),
            Some(other) => return Err(bad(format!("unsupported crop_size {other:?}"))),
        };
        let resample = match raw.resample {
            None => Filter::Bicubic,
            Some(code) => Filter::from_pil_code(code)
                .ok_or_else(|| bad(format!("unsupported resample filter {code}")))?,
        };
        let channels = |v: Option<RawChannels>, default: [f64; 3], name: &str| match v {
            None => Ok(default),
            Some(RawChannels::One(x)) => Ok([x; 3]),
            Some(RawChannels::Three(v)) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
            Some(RawChannels::Three(v)) => {
                Err(bad(format!("{name} must have 3 values, found {}", v.len())))
            }
        };
        let image_mean = channels(raw.image_mean, CLIP_MEAN, "image_mean")?;
        let image_std = channels(raw.image_std, CLIP_STD, "image_std")?;
        let do_convert_rgb = raw.do_convert_rgb.unwrap_or(true);
        if !do_convert_rgb {
            return Err(bad("do_convert_rgb = false is not supported".into()));
        }
        let cfg = Self {
            do_resize: raw.do_resize.unwrap_or(true),
            size,
            resample,
            do_center_crop: raw.do_center_crop.unwrap_or(true),
            crop_size,
            do_rescale: raw.do_rescale.unwrap_or(true),
            rescale_factor: raw.rescale_factor.unwrap_or(1.0 / 255.0),
            do_normalize: raw.do_normalize.unwrap_or(true),
            image_mean,
            image_std,
            do_convert_rgb,
        };
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// Checks sizes are positive and the rescale / normalisation values finite.
    pub fn validate(&self) -> Result<(), String> {
        let size_ok = match self.size {
            ResizeTarget::Exact { height, width } => height > 0 && width > 0,
            ResizeTarget::ShortestEdge(s) => s > 0,
        };
        if !size_ok {
            return Err(format!("size must be positive, found {:?}", self.size));
        }
        if self.crop_size.0 == 0 || self.crop_size.1 == 0 {
            return Err(format!(
                "crop_size must be positive, found {:?}",
                self.crop_size
            ));
        }
        if !self.rescale_factor.is_finite() {
            return Err("rescale_factor must be finite".into());
        }
        if self
            .image_mean
            .iter()
            .chain(&self.image_std)
            .any(|v| !v.is_finite())
        {
            return Err("image_mean and image_std must be finite".into());
        }
        Ok(())
    }
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self::kosmos2()
    }
}

/// Padding side of the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingSide {
    /// Pads after the tokens (HF default).
    #[default]
    Right,
    /// Pads before the tokens.
    Left,
}

/// The raw `tokenizer_config.json` fields this crate uses.
#[derive(Debug, Deserialize)]
struct RawTokenizerConfig {
    clean_up_tokenization_spaces: Option<bool>,
    padding_side: Option<PaddingSide>,
    truncation_side: Option<PaddingSide>,
    bos_token: Option<TokenField>,
    eos_token: Option<TokenField>,
    pad_token: Option<TokenField>,
    unk_token: Option<TokenField>,
}

/// A token given as a string or as an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenField {
    Plain(String),
    Object { content: String },
}

impl TokenField {
    fn into_string(self) -> String {
        match self {
            TokenField::Plain(s) | TokenField::Object { content: s } => s,
        }
    }
}

/// The tokenizer settings from `tokenizer_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerConfig {
    /// Apply HF's `clean_up_tokenization` after decoding (the 5.24 default is `false`;
    /// the real checkpoint's file sets `true`).
    pub clean_up_tokenization_spaces: bool,
    /// Default padding side.
    pub padding_side: PaddingSide,
    /// Default truncation side.
    pub truncation_side: PaddingSide,
    /// Beginning-of-sequence token text (`<s>`).
    pub bos_token: String,
    /// End-of-sequence token text (`</s>`).
    pub eos_token: String,
    /// Padding token text (`<pad>`).
    pub pad_token: String,
    /// Unknown token text (`<unk>`).
    pub unk_token: String,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            clean_up_tokenization_spaces: false,
            padding_side: PaddingSide::Right,
            truncation_side: PaddingSide::Right,
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            pad_token: "<pad>".into(),
            unk_token: "<unk>".into(),
        }
    }
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`; absent keys keep the HF 5.24 defaults.
    pub fn from_file(path: &Path) -> Result<Self, ProcessorError> {
        let text = read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parses the JSON text of a `tokenizer_config.json`; `path` is only used in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, ProcessorError> {
        let raw: RawTokenizerConfig =
            serde_json::from_str(text).map_err(|source| ProcessorError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let d = Self::default();
        Ok(Self {
            clean_up_tokenization_spaces: raw
                .clean_up_tokenization_spaces
                .unwrap_or(d.clean_up_tokenization_spaces),
            padding_side: raw.padding_side.unwrap_or(d.padding_side),
            truncation_side: raw.truncation_side.unwrap_or(d.truncation_side),
            bos_token: raw.bos_token.map_or(d.bos_token, TokenField::into_string),
            eos_token: raw.eos_token.map_or(d.eos_token, TokenField::into_string),
            pad_token: raw.pad_token.map_or(d.pad_token, TokenField::into_string),
            unk_token: raw.unk_token.map_or(d.unk_token, TokenField::into_string),
        })
    }
}

/// Reads a whole file as UTF-8, mapping "not found" to [`ProcessorError::MissingFile`].
pub(crate) fn read_text(path: &Path) -> Result<String, ProcessorError> {
    let bytes = read_bytes(path)?;
    String::from_utf8(bytes).map_err(|e| ProcessorError::Config {
        path: path.to_path_buf(),
        message: format!("not valid UTF-8: {e}"),
    })
}

/// Reads a whole file, mapping "not found" to [`ProcessorError::MissingFile`].
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, ProcessorError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProcessorError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            ProcessorError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_preprocessor_json_gives_square_224() {
        let json = r#"{"crop_size": {"height": 224, "width": 224}, "do_center_crop": true,
            "image_processor_type": "CLIPImageProcessor", "resample": 3,
            "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224},
            "use_square_size": true}"#;
        let cfg = PreprocessorConfig::from_json_str(json, Path::new("p.json")).unwrap();
        assert_eq!(cfg, PreprocessorConfig::kosmos2());
    }

    #[test]
    fn shortest_edge_and_bad_values() {
        let cfg = PreprocessorConfig::from_json_str(
            r#"{"size": {"shortest_edge": 180}, "crop_size": 180}"#,
            Path::new("p.json"),
        )
        .unwrap();
        assert_eq!(cfg.size, ResizeTarget::ShortestEdge(180));
        assert_eq!(cfg.crop_size, (180, 180));
        let err =
            PreprocessorConfig::from_json_str(r#"{"image_mean": [1, 2]}"#, Path::new("p.json"))
                .unwrap_err();
        assert!(
            err.to_string().contains("image_mean must have 3 values"),
            "{err}"
        );
        let err = PreprocessorConfig::from_json_str("{", Path::new("p.json")).unwrap_err();
        assert!(matches!(err, ProcessorError::Json { .. }), "{err}");
        let err = PreprocessorConfig::from_json_str(r#"{"resample": 0}"#, Path::new("p.json"))
            .unwrap_err();
        assert!(err.to_string().contains("resample"), "{err}");
    }

    #[test]
    fn tokenizer_config_fields() {
        let cfg = TokenizerConfig::from_json_str(
            r#"{"clean_up_tokenization_spaces": true, "padding_side": "left",
                "mask_token": {"content": "<mask>"}, "bos_token": {"content": "<s>", "lstrip": false}}"#,
            Path::new("t.json"),
        )
        .unwrap();
        assert!(cfg.clean_up_tokenization_spaces);
        assert_eq!(cfg.padding_side, PaddingSide::Left);
        assert_eq!(cfg.bos_token, "<s>");
        let d = TokenizerConfig::from_json_str("{}", Path::new("t.json")).unwrap();
        assert_eq!(d, TokenizerConfig::default());
    }
}
