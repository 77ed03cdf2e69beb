//! Generation parameters; mirrors HF `GenerationConfig` (the fields KOSMOS-2 generation uses).
//!
//! # Whose defaults
//!
//! [`GenerationConfig::default`] is what a plain `model.generate(..., max_new_tokens=128)` does in
//! **transformers 5.24**: greedy, no n-gram blocking, no repetition penalty, bos 0 / eos 2 / pad 1, and
//! the global defaults of `GenerationConfig._get_default_generation_params()` for everything else
//! (temperature 1.0, top_k 50, top_p 1.0, num_beams 1, length_penalty 1.0, early_stopping false).
//! Only `max_new_tokens` has no HF counterpart worth copying: HF's `max_length = 20` counts the 71-token
//! image prompt, so every KOSMOS-2 caller passes `max_new_tokens`; ours defaults to 128, the value of
//! the HF integration tests (reference §11).
//!
//! KOSMOS-2 is the case where the version matters (reference §6.4): the hub checkpoint carries
//! `no_repeat_ngram_size: 3` in `config.json` (`text_config`) and in `generation_config.json`.
//! transformers 4.x applied it by default; 5.24 builds the text model's generation config from the text
//! config's special ids only and ignores both files' `no_repeat_ngram_size` unless the caller passes it.
//! [`GenerationConfig::from_model_dir_with`] makes the choice explicit with [`HfDefaults`]; reference
//! outputs of this project always state `no_repeat_ngram_size` explicitly.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::{GenerationError, Result};

/// Beam-search stopping rule: HF `early_stopping` (`false`, `true` or `"never"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `false` (HF's default): stop a batch item when a heuristic says the running beams can no longer
    /// beat the worst finished one, assuming no further length growth.
    #[default]
    Heuristic,
    /// `true`: stop a batch item as soon as `num_beams` hypotheses are finished.
    Enabled,
    /// `"never"`: canonical beam search; with `length_penalty > 0` the bound assumes the maximal length.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::Heuristic => s.serialize_bool(false),
            EarlyStopping::Enabled => s.serialize_bool(true),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(EarlyStopping::Heuristic),
            Raw::Bool(true) => Ok(EarlyStopping::Enabled),
            Raw::Str(s) if s == "never" => Ok(EarlyStopping::Never),
            Raw::Str(s) => Err(serde::de::Error::custom(format!(
                "early_stopping must be true, false or \"never\", got {s:?}"
            ))),
        }
    }
}

/// `eos_token_id` may be one id or a list (HF accepts both); `null` means none.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => Vec::new(),
        Some(Raw::One(id)) => vec![id],
        Some(Raw::Many(ids)) => ids,
    })
}

/// Generation parameters, with HF's field names (so HF `generation_config.json` and `generate()` kwargs
/// deserialize directly; unknown fields are ignored).
///
/// ```
/// use kosmos2::generation::{EarlyStopping, GenerationConfig};
/// let cfg: GenerationConfig =
///     serde_json::from_str(r#"{"num_beams": 3, "early_stopping": "never", "eos_token_id": [2, 7]}"#).unwrap();
/// assert_eq!(cfg.num_beams, 3);
/// assert_eq!(cfg.early_stopping, EarlyStopping::Never);
/// assert_eq!(cfg.eos_token_id, vec![2, 7]);
/// assert_eq!(cfg.top_k, 50); // HF 5.24's global default (used only when sampling)
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationConfig {
    /// Most tokens generated per row (the prompt does not count). Must be ≥ 1.
    pub max_new_tokens: usize,
    /// Eos is banned (score −inf) until this many tokens are generated.
    pub min_new_tokens: usize,
    /// Sample from the processed distribution instead of taking the argmax.
    pub do_sample: bool,
    /// Sampling temperature (scores are divided by `f32(temperature)`); sampling only.
    pub temperature: f64,
    /// Keep the `top_k` best scores (ties with the k-th all kept); 0 disables; sampling only.
    pub top_k: usize,
    /// Nucleus sampling mass in `[0, 1]`; 1.0 disables; sampling only.
    pub top_p: f64,
    /// Seed of the ChaCha8 sampler: row `r` draws from stream `r`, so a run is reproducible.
    pub seed: u64,
    /// HF `RepetitionPenaltyLogitsProcessor` factor (1.0 = off); left pads are ignored, as in HF.
    pub repetition_penalty: f64,
    /// Ban every token that would repeat an n-gram of the row (prompt, image placeholders and tags
    /// included); 0 = off. KOSMOS-2's demo and HF v4 used 3.
    pub no_repeat_ngram_size: usize,
    /// Beam count; 1 = greedy or sampling.
    pub num_beams: usize,
    /// Beam scores are divided by `generated_len ^ length_penalty`.
    pub length_penalty: f64,
    /// Beam-search stopping rule.
    pub early_stopping: EarlyStopping,
    /// End-of-sequence ids (one or a list in JSON); a row stops when it emits one. Empty = none.
    #[serde(deserialize_with = "one_or_many")]
    pub eos_token_id: Vec<u32>,
    /// Fills finished rows; `None` falls back to the first eos id, as in HF.
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence id (informational: the prompt already starts with it).
    pub bos_token_id: Option<u32>,
    /// Keep the processed per-step scores (HF `output_scores`).
    pub output_scores: bool,
    /// Reproduce HF's batched behaviour instead of batch-independent rows: decode positions count the
    /// left pads (`cache_len + 2`, reference §4.2) and the pads are part of the n-gram history.
    pub hf_compat_positions: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            min_new_tokens: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            eos_token_id: vec![2],
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            output_scores: false,
            hf_compat_positions: false,
        }
    }
}

/// Which transformers version's reading of a model directory [`GenerationConfig::from_model_dir_with`]
/// reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HfDefaults {
    /// transformers 5.24: only `text_config`'s bos/eos/pad ids (defaults 0/2/1); both files'
    /// `no_repeat_ngram_size` and other generation fields are ignored.
    #[default]
    Transformers5_24,
    /// transformers 4.x (the era of the hub checkpoint and the HF golden outputs): `text_config`'s
    /// generation attributes apply too (`no_repeat_ngram_size: 3` on the real model).
    Transformers4,
    /// Everything `generation_config.json` sets (what passing `model.generation_config` explicitly does);
    /// falls back to `config.json` when the file is absent.
    GenerationConfigJson,
}

/// The generation fields read from a config object (HF names; `max_length`/`min_length` are
/// deliberately absent: they count the prompt).
const GENERATION_FIELDS: &[&str] = &[
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
];

const SPECIAL_IDS: &[&str] = &["eos_token_id", "pad_token_id", "bos_token_id"];

impl GenerationConfig {
    /// transformers 5.24's defaults for the model in `dir` (see [`HfDefaults::Transformers5_24`]).
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_model_dir_with(dir, HfDefaults::Transformers5_24)
    }

    /// The defaults the chosen transformers behaviour derives from `dir/config.json` and
    /// `dir/generation_config.json`. Fields not set by the files keep [`GenerationConfig::default`].
    pub fn from_model_dir_with(dir: impl AsRef<Path>, hf: HfDefaults) -> Result<Self> {
        let dir = dir.as_ref();
        let config = read_json(&dir.join("config.json"))?;
        let text = match config.get("text_config") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let mut cfg = Self::default();
        cfg = cfg.overlay(&text, SPECIAL_IDS)?;
        match hf {
            HfDefaults::Transformers5_24 => {}
            HfDefaults::Transformers4 => cfg = cfg.overlay(&text, GENERATION_FIELDS)?,
            HfDefaults::GenerationConfigJson => {
                let path = dir.join("generation_config.json");
                if path.is_file() {
                    if let Value::Object(gen) = read_json(&path)? {
                        cfg = cfg.overlay(&gen, GENERATION_FIELDS)?;
                    }
                }
            }
        }
        Ok(cfg)
    }

    /// A copy with the `fields` that `src` sets (non-null) replaced.
    fn overlay(&self, src: &Map<String, Value>, fields: &[&str]) -> Result<Self> {
        let mut base = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(GenerationError::InvalidConfig(
                    "config is not an object".into(),
                ))
            }
        };
        for &f in fields {
            match src.get(f) {
                Some(Value::Null) | None => {}
                Some(v) => {
                    base.insert(f.to_string(), v.clone());
                }
            }
        }
        serde_json::from_value(Value::Object(base)).map_err(|e| {
            GenerationError::InvalidConfig(format!("model directory generation fields: {e}"))
        })
    }

    /// The id that fills finished rows: `pad_token_id`, else the first eos id (HF's rule).
    pub fn resolved_pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
            .or_else(|| self.eos_token_id.first().copied())
    }

    /// Checks every range HF checks (plus `max_new_tokens ≥ 1` and a usable pad id).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GenerationError::InvalidConfig(m));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be a positive number, got {}",
                self.repetition_penalty
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!(
                "length_penalty must be finite, got {}",
                self.length_penalty
            ));
        }
        if self.do_sample {
            if !(self.temperature.is_finite() && self.temperature > 0.0) {
                return bad(format!(
                    "temperature must be > 0 when sampling (use do_sample = false for greedy), got {}",
                    self.temperature
                ));
            }
            if !(0.0..=1.0).contains(&self.top_p) {
                return bad(format!("top_p must be in [0, 1], got {}", self.top_p));
            }
        }
        if self.resolved_pad_token_id().is_none() {
            return bad("pad_token_id is unset and there is no eos id to fall back on".into());
        }
        Ok(())
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| GenerationError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| GenerationError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip_keeps_every_field() {
        let cfg = GenerationConfig {
            max_new_tokens: 7,
            min_new_tokens: 2,
            do_sample: true,
            temperature: 0.7,
            top_k: 5,
            top_p: 0.9,
            seed: 42,
            repetition_penalty: 1.2,
            no_repeat_ngram_size: 3,
            num_beams: 4,
            length_penalty: -0.5,
            early_stopping: EarlyStopping::Never,
            eos_token_id: vec![2, 9],
            pad_token_id: None,
            bos_token_id: None,
            output_scores: true,
            hf_compat_positions: true,
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"early_stopping\":\"never\""));
        let back: GenerationConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.resolved_pad_token_id(), Some(2));
    }

    #[test]
    fn eos_accepts_int_list_and_null() {
        let one: GenerationConfig = serde_json::from_str(r#"{"eos_token_id": 5}"#).unwrap();
        assert_eq!(one.eos_token_id, vec![5]);
        let none: GenerationConfig = serde_json::from_str(r#"{"eos_token_id": null}"#).unwrap();
        assert!(none.eos_token_id.is_empty());
        assert!(
            serde_json::from_str::<GenerationConfig>(r#"{"early_stopping": "sometimes"}"#).is_err()
        );
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let ok = GenerationConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            GenerationConfig {
                max_new_tokens: 0,
                ..ok.clone()
            },
            GenerationConfig {
                num_beams: 0,
                ..ok.clone()
            },
            GenerationConfig {
                repetition_penalty: 0.0,
                ..ok.clone()
            },
            GenerationConfig {
                length_penalty: f64::NAN,
                ..ok.clone()
            },
            GenerationConfig {
                do_sample: true,
                temperature: 0.0,
                ..ok.clone()
            },
            GenerationConfig {
                do_sample: true,
                top_p: 1.5,
                ..ok.clone()
            },
            GenerationConfig {
                pad_token_id: None,
                eos_token_id: vec![],
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(GenerationError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        // temperature is not checked when not sampling, as in HF (the warper is never built)
        assert!(GenerationConfig {
            temperature: 0.0,
            ..ok
        }
        .validate()
        .is_ok());
    }
}
