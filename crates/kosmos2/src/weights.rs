//! The complete KOSMOS-2 key set (vision + projection + text) and the check of a checkpoint against it.

use std::collections::BTreeSet;

use kosmos_text::TextNames;

use crate::config::Kosmos2Config;
use crate::error::{Error, Result};

/// Buffers that old checkpoints may carry and that the model computes instead.
pub const IGNORED_KEYS: [&str; 2] = [
    "vision_model.model.embeddings.position_ids",
    "text_model.model.embed_positions.weights",
];

/// Every key of `Kosmos2ForConditionalGeneration` for `cfg`: 886 for the real config with the
/// tied `text_model.lm_head.weight`, 885 without it.
pub fn expected_keys(cfg: &Kosmos2Config, with_lm_head: bool) -> Vec<String> {
    let mut keys = kosmos_vision::weights::expected_keys(&cfg.vision_config);
    keys.extend(kosmos_projection::weights::expected_keys(
        &cfg.projection_config(),
    ));
    keys.extend(
        TextNames::kosmos2()
            .all_keys(&cfg.text_config, with_lm_head)
            .into_iter()
            .map(|(k, _)| k),
    );
    keys
}

/// The keys of the per-row scales a quantised checkpoint stores next to its int8 weights (one per
/// text linear layer and one for `lm_head`).
pub fn int8_scale_keys(cfg: &Kosmos2Config) -> Vec<String> {
    TextNames::kosmos2()
        .int8_linear_keys(&cfg.text_config)
        .into_iter()
        .map(|(k, _)| kosmos_tensor::quant::scale_key(&k))
        .collect()
}

/// Compares a checkpoint's keys with the model's.
///
/// `lm_head` may be present or absent when the config ties it (absent means tied); it is
/// required when the config does not tie it. Returns whether the file holds `lm_head`, or
/// [`Error::Weights`] listing the missing and unexpected keys.
pub fn check_keys(cfg: &Kosmos2Config, present: &[String]) -> Result<bool> {
    let lm_head = TextNames::kosmos2().lm_head();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    let has_head = present.contains(lm_head.as_str());
    let tied = cfg.tie_word_embeddings && cfg.text_config.tie_word_embeddings;
    let expected = expected_keys(cfg, has_head || !tied);
    let expected_set: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    // A quantised checkpoint (`kosmos2 quantize`) adds the per-row scales of its int8 weights.
    let scales: BTreeSet<String> = int8_scale_keys(cfg).into_iter().collect();
    let missing: Vec<String> = expected_set
        .difference(&present)
        .map(|k| k.to_string())
        .collect();
    let unexpected: Vec<String> = present
        .difference(&expected_set)
        .filter(|k| !IGNORED_KEYS.contains(k) && !scales.contains(**k))
        .map(|k| k.to_string())
        .collect();
    if missing.is_empty() && unexpected.is_empty() {
        Ok(has_head)
    } else {
        Err(Error::Weights {
            missing,
            unexpected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_config_has_886_keys_with_the_head_and_885_without() {
        let cfg = Kosmos2Config::default();
        for (head, n) in [(true, 886), (false, 885)] {
            let keys = expected_keys(&cfg, head);
            let set: BTreeSet<&String> = keys.iter().collect();
            assert_eq!(set.len(), n);
            assert_eq!(keys.len(), n, "duplicates");
        }
        let keys = expected_keys(&cfg, false);
        let count = |p: &str| keys.iter().filter(|k| k.starts_with(p)).count();
        assert_eq!(count("vision_model.model."), 391);
        assert_eq!(count("image_to_text_projection."), 11);
        assert_eq!(count("text_model.model.layers."), 480);
        assert_eq!(count("text_model."), 483);
    }

    #[test]
    fn check_reports_missing_and_unexpected() {
        let cfg = Kosmos2Config::default();
        let mut keys = expected_keys(&cfg, false);
        assert!(!check_keys(&cfg, &keys).unwrap());
        keys.push("text_model.lm_head.weight".into());
        assert!(check_keys(&cfg, &keys).unwrap());
        keys.push("vision_model.model.embeddings.position_ids".into());
        assert!(check_keys(&cfg, &keys).is_ok());
        keys.retain(|k| k != "text_model.model.layers.3.ffn.fc1.bias");
        keys.push("text_model.model.layers.3.ffn.fc3.bias".into());
        match check_keys(&cfg, &keys) {
            Err(Error::Weights {
                missing,
                unexpected,
            }) => {
                assert_eq!(missing, ["text_model.model.layers.3.ffn.fc1.bias"]);
                assert_eq!(unexpected, ["text_model.model.layers.3.ffn.fc3.bias"]);
            }
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn quantised_checkpoints_may_add_exactly_the_145_scale_keys() {
        let cfg = Kosmos2Config::default();
        let scales = int8_scale_keys(&cfg);
        assert_eq!(scales.len(), 24 * 6 + 1);
        assert!(scales.contains(&"text_model.model.layers.0.self_attn.q_proj.weight_scale".into()));
        assert!(scales.contains(&"text_model.lm_head.weight_scale".into()));
        let mut keys = expected_keys(&cfg, true);
        keys.extend(scales);
        assert!(check_keys(&cfg, &keys).unwrap());
        // Scales of layers that are not quantised (vision, LayerNorms) stay unexpected.
        keys.push("vision_model.model.encoder.layers.0.mlp.fc1.weight_scale".into());
        keys.push("text_model.model.layer_norm.weight_scale".into());
        match check_keys(&cfg, &keys) {
            Err(Error::Weights { unexpected, .. }) => assert_eq!(unexpected.len(), 2),
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn untied_config_requires_the_head() {
        let mut cfg = Kosmos2Config {
            tie_word_embeddings: false,
            ..Kosmos2Config::default()
        };
        cfg.text_config.tie_word_embeddings = false;
        let keys = expected_keys(&cfg, false);
        match check_keys(&cfg, &keys) {
            Err(Error::Weights {
                missing,
                unexpected,
            }) => {
                assert_eq!(missing, ["text_model.lm_head.weight"]);
                assert!(unexpected.is_empty());
            }
            other => panic!("expected a key error, got {other:?}"),
        }
    }
}
