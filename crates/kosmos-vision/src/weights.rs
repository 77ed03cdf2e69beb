//! Every weight name of the vision tower, in one place.
//!
//! The names are HF's state-dict keys under `vision_model.model.` (the
//! `Kosmos2VisionModel.model` attribute, a `Kosmos2VisionTransformer`),
//! including the misspelt `pre_layrnorm`. [`expected_weights`] lists the complete set
//! with shapes, so a loader can report missing and unexpected keys.

use crate::config::Kosmos2VisionConfig;

/// The prefix of every vision key in a KOSMOS-2 checkpoint.
pub const VISION_PREFIX: &str = "vision_model.model.";

pub use kosmos_tensor::keys::{LayerNormKeys, LinearKeys, WeightSpec};

fn key(suffix: &str) -> String {
    format!("{VISION_PREFIX}{suffix}")
}

/// Keys of `Kosmos2VisionEmbeddings` (`vision_model.model.embeddings.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingsKeys {
    /// `class_embedding`, `[hidden]`.
    pub class_embedding: String,
    /// `patch_embedding.weight`, `[hidden, channels, patch, patch]` (the conv has no bias).
    pub patch_embedding: String,
    /// `position_embedding.weight`, `[num_positions, hidden]`.
    pub position_embedding: String,
}

impl EmbeddingsKeys {
    /// The keys under `vision_model.model.embeddings.`.
    pub fn new() -> Self {
        Self {
            class_embedding: key("embeddings.class_embedding"),
            patch_embedding: key("embeddings.patch_embedding.weight"),
            position_embedding: key("embeddings.position_embedding.weight"),
        }
    }

    /// The keys with their shapes for `cfg`.
    pub fn specs(&self, cfg: &Kosmos2VisionConfig) -> Vec<WeightSpec> {
        let d = cfg.hidden_size;
        vec![
            WeightSpec {
                name: self.class_embedding.clone(),
                shape: vec![d],
            },
            WeightSpec {
                name: self.patch_embedding.clone(),
                shape: vec![d, cfg.num_channels, cfg.patch_size, cfg.patch_size],
            },
            WeightSpec {
                name: self.position_embedding.clone(),
                shape: vec![cfg.num_positions(), d],
            },
        ]
    }
}

impl Default for EmbeddingsKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// Keys of one `Kosmos2VisionEncoderLayer` (`vision_model.model.encoder.layers.{i}.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderLayerKeys {
    /// `self_attn.q_proj`.
    pub q_proj: LinearKeys,
    /// `self_attn.k_proj`.
    pub k_proj: LinearKeys,
    /// `self_attn.v_proj`.
    pub v_proj: LinearKeys,
    /// `self_attn.out_proj`.
    pub out_proj: LinearKeys,
    /// `layer_norm1` (before attention).
    pub layer_norm1: LayerNormKeys,
    /// `mlp.fc1`.
    pub fc1: LinearKeys,
    /// `mlp.fc2`.
    pub fc2: LinearKeys,
    /// `layer_norm2` (before the MLP).
    pub layer_norm2: LayerNormKeys,
}

impl EncoderLayerKeys {
    /// The keys of layer `index`.
    pub fn new(index: usize) -> Self {
        let p = key(&format!("encoder.layers.{index}"));
        Self {
            q_proj: LinearKeys::new(&format!("{p}.self_attn.q_proj")),
            k_proj: LinearKeys::new(&format!("{p}.self_attn.k_proj")),
            v_proj: LinearKeys::new(&format!("{p}.self_attn.v_proj")),
            out_proj: LinearKeys::new(&format!("{p}.self_attn.out_proj")),
            layer_norm1: LayerNormKeys::new(&format!("{p}.layer_norm1")),
            fc1: LinearKeys::new(&format!("{p}.mlp.fc1")),
            fc2: LinearKeys::new(&format!("{p}.mlp.fc2")),
            layer_norm2: LayerNormKeys::new(&format!("{p}.layer_norm2")),
        }
    }

    /// The 16 keys of the layer with their shapes for `cfg`.
    pub fn specs(&self, cfg: &Kosmos2VisionConfig) -> Vec<WeightSpec> {
        let d = cfg.hidden_size;
        let f = cfg.intermediate_size;
        let mut v = Vec::with_capacity(16);
        for proj in [&self.q_proj, &self.k_proj, &self.v_proj, &self.out_proj] {
            v.extend(proj.specs(d, d));
        }
        v.extend(self.layer_norm1.specs(d));
        v.extend(self.fc1.specs(f, d));
        v.extend(self.fc2.specs(d, f));
        v.extend(self.layer_norm2.specs(d));
        v
    }
}

/// `vision_model.model.pre_layrnorm` (HF's spelling).
pub fn pre_layrnorm() -> LayerNormKeys {
    LayerNormKeys::new(&key("pre_layrnorm"))
}

/// `vision_model.model.post_layernorm`.
pub fn post_layernorm() -> LayerNormKeys {
    LayerNormKeys::new(&key("post_layernorm"))
}

/// The complete set of vision weights for `cfg`, with shapes, in module order.
pub fn expected_weights(cfg: &Kosmos2VisionConfig) -> Vec<WeightSpec> {
    let d = cfg.hidden_size;
    let mut v = EmbeddingsKeys::new().specs(cfg);
    v.extend(pre_layrnorm().specs(d));
    for i in 0..cfg.num_hidden_layers {
        v.extend(EncoderLayerKeys::new(i).specs(cfg));
    }
    v.extend(post_layernorm().specs(d));
    v
}

/// The complete set of vision key names for `cfg`, in module order.
pub fn expected_keys(cfg: &Kosmos2VisionConfig) -> Vec<String> {
    expected_weights(cfg).into_iter().map(|w| w.name).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The 16 per-layer suffixes of reference §5, typed out independently of the code above.
    const LAYER_SUFFIXES: [(&str, [usize; 2]); 16] = [
        ("self_attn.q_proj.weight", [1024, 1024]),
        ("self_attn.q_proj.bias", [1024, 0]),
        ("self_attn.k_proj.weight", [1024, 1024]),
        ("self_attn.k_proj.bias", [1024, 0]),
        ("self_attn.v_proj.weight", [1024, 1024]),
        ("self_attn.v_proj.bias", [1024, 0]),
        ("self_attn.out_proj.weight", [1024, 1024]),
        ("self_attn.out_proj.bias", [1024, 0]),
        ("layer_norm1.weight", [1024, 0]),
        ("layer_norm1.bias", [1024, 0]),
        ("mlp.fc1.weight", [4096, 1024]),
        ("mlp.fc1.bias", [4096, 0]),
        ("mlp.fc2.weight", [1024, 4096]),
        ("mlp.fc2.bias", [1024, 0]),
        ("layer_norm2.weight", [1024, 0]),
        ("layer_norm2.bias", [1024, 0]),
    ];

    #[test]
    fn real_config_gives_exactly_the_hf_vision_keys() {
        let cfg = Kosmos2VisionConfig::default();
        let got = expected_weights(&cfg);
        let mut want: Vec<(String, Vec<usize>)> = vec![
            (
                "vision_model.model.embeddings.class_embedding".into(),
                vec![1024],
            ),
            (
                "vision_model.model.embeddings.patch_embedding.weight".into(),
                vec![1024, 3, 14, 14],
            ),
            (
                "vision_model.model.embeddings.position_embedding.weight".into(),
                vec![257, 1024],
            ),
            ("vision_model.model.pre_layrnorm.weight".into(), vec![1024]),
            ("vision_model.model.pre_layrnorm.bias".into(), vec![1024]),
            (
                "vision_model.model.post_layernorm.weight".into(),
                vec![1024],
            ),
            ("vision_model.model.post_layernorm.bias".into(), vec![1024]),
        ];
        for i in 0..24 {
            for (suffix, shape) in LAYER_SUFFIXES {
                let shape: Vec<usize> = shape.into_iter().filter(|&s| s != 0).collect();
                want.push((
                    format!("vision_model.model.encoder.layers.{i}.{suffix}"),
                    shape,
                ));
            }
        }
        assert_eq!(want.len(), 7 + 384);
        assert_eq!(got.len(), 391);
        let got_set: BTreeSet<(String, Vec<usize>)> =
            got.into_iter().map(|w| (w.name, w.shape)).collect();
        let want_set: BTreeSet<(String, Vec<usize>)> = want.into_iter().collect();
        assert_eq!(got_set.len(), 391, "duplicate keys");
        let missing: Vec<_> = want_set.difference(&got_set).collect();
        let extra: Vec<_> = got_set.difference(&want_set).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );

        let layer_keys = expected_keys(&cfg)
            .into_iter()
            .filter(|k| k.contains(".encoder.layers."))
            .count();
        assert_eq!(layer_keys, 384);
        // Parameter count of the vision tower, reference §5.
        let params: usize = expected_weights(&cfg)
            .iter()
            .map(|w| w.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 303_179_776);
    }

    #[test]
    fn small_config_scales_the_key_set() {
        let cfg = Kosmos2VisionConfig {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            image_size: 28,
            ..Default::default()
        };
        let w = expected_weights(&cfg);
        assert_eq!(w.len(), 7 + 2 * 16);
        let pos = w
            .iter()
            .find(|w| w.name.ends_with("position_embedding.weight"))
            .unwrap();
        assert_eq!(pos.shape, vec![5, 32]);
        assert!(w.iter().all(|w| w.name.starts_with(VISION_PREFIX)));
    }
}
