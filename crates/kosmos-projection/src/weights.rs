//! Every weight name of the image-to-text projection (`image_to_text_projection.*`), in one place.

use crate::config::ProjectionConfig;

/// The prefix of every projection key in a KOSMOS-2 checkpoint.
pub const PROJECTION_PREFIX: &str = "image_to_text_projection.";

pub use kosmos_tensor::keys::{LinearKeys, WeightSpec};

fn linear_keys(module: &str) -> LinearKeys {
    LinearKeys::new(&format!("{PROJECTION_PREFIX}{module}"))
}

/// The keys of `Kosmos2ImageToTextProjection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionKeys {
    /// `dense`: vision width → text width.
    pub dense: LinearKeys,
    /// `latent_query`, `[latent_query_num, embed_dim]`.
    pub latent_query: String,
    /// `x_attn.q_proj`.
    pub q_proj: LinearKeys,
    /// `x_attn.k_proj`.
    pub k_proj: LinearKeys,
    /// `x_attn.v_proj`.
    pub v_proj: LinearKeys,
    /// `x_attn.out_proj`.
    pub out_proj: LinearKeys,
}

impl ProjectionKeys {
    /// The keys under `image_to_text_projection.`.
    pub fn new() -> Self {
        Self {
            dense: linear_keys("dense"),
            latent_query: format!("{PROJECTION_PREFIX}latent_query"),
            q_proj: linear_keys("x_attn.q_proj"),
            k_proj: linear_keys("x_attn.k_proj"),
            v_proj: linear_keys("x_attn.v_proj"),
            out_proj: linear_keys("x_attn.out_proj"),
        }
    }
}

impl Default for ProjectionKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// The complete set of projection weights for `cfg`, with shapes.
pub fn expected_weights(cfg: &ProjectionConfig) -> Vec<WeightSpec> {
    let k = ProjectionKeys::new();
    let d = cfg.embed_dim;
    let mut v = Vec::with_capacity(11);
    v.extend(k.dense.specs(d, cfg.vision_hidden_size));
    v.push(WeightSpec {
        name: k.latent_query.clone(),
        shape: vec![cfg.latent_query_num, d],
    });
    for proj in [&k.q_proj, &k.k_proj, &k.v_proj, &k.out_proj] {
        v.extend(proj.specs(d, d));
    }
    v
}

/// The complete set of projection key names for `cfg`.
pub fn expected_keys(cfg: &ProjectionConfig) -> Vec<String> {
    expected_weights(cfg).into_iter().map(|w| w.name).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn real_config_gives_exactly_the_hf_projection_keys() {
        // Reference §5, typed out independently of the code above.
        let want: BTreeSet<(String, Vec<usize>)> = [
            ("image_to_text_projection.latent_query", vec![64, 2048]),
            ("image_to_text_projection.dense.weight", vec![2048, 1024]),
            ("image_to_text_projection.dense.bias", vec![2048]),
            (
                "image_to_text_projection.x_attn.q_proj.weight",
                vec![2048, 2048],
            ),
            ("image_to_text_projection.x_attn.q_proj.bias", vec![2048]),
            (
                "image_to_text_projection.x_attn.k_proj.weight",
                vec![2048, 2048],
            ),
            ("image_to_text_projection.x_attn.k_proj.bias", vec![2048]),
            (
                "image_to_text_projection.x_attn.v_proj.weight",
                vec![2048, 2048],
            ),
            ("image_to_text_projection.x_attn.v_proj.bias", vec![2048]),
            (
                "image_to_text_projection.x_attn.out_proj.weight",
                vec![2048, 2048],
            ),
            ("image_to_text_projection.x_attn.out_proj.bias", vec![2048]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        let got_list = expected_weights(&ProjectionConfig::default());
        assert_eq!(got_list.len(), 11);
        let got: BTreeSet<(String, Vec<usize>)> =
            got_list.into_iter().map(|w| (w.name, w.shape)).collect();
        assert_eq!(got, want);
        // No inner_attn_ln in x_attn.
        assert!(expected_keys(&ProjectionConfig::default())
            .iter()
            .all(|k| !k.contains("inner_attn_ln")));
        // Parameter count, reference §5.
        let params: usize = expected_weights(&ProjectionConfig::default())
            .iter()
            .map(|w| w.shape.iter().product::<usize>())
            .sum();
        assert_eq!(params, 19_015_680);
    }
}
