//! Weight-name helpers shared by the model crates: a key with its expected shape, and the key pairs
//! of `nn.Linear` and `nn.LayerNorm` with their loaders. Each model crate still lists its own names
//! in its `weights.rs`; this module only gives them one vocabulary.

use crate::nn::{LayerNorm, Linear};
use crate::{DType, Device, Result, WeightStore};

/// A weight name together with the shape it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightSpec {
    /// The full key, e.g. `vision_model.model.pre_layrnorm.weight`.
    pub name: String,
    /// The expected shape.
    pub shape: Vec<usize>,
}

/// The two keys of a `nn.Linear` with bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearKeys {
    /// `<module>.weight`, shape `[out, in]`.
    pub weight: String,
    /// `<module>.bias`, shape `[out]`.
    pub bias: String,
}

impl LinearKeys {
    /// The keys of the module at the full path `module` (prefix included).
    ///
    /// ```
    /// use kosmos_tensor::keys::LinearKeys;
    /// let k = LinearKeys::new("x_attn.q_proj");
    /// assert_eq!((k.weight.as_str(), k.bias.as_str()), ("x_attn.q_proj.weight", "x_attn.q_proj.bias"));
    /// ```
    pub fn new(module: &str) -> Self {
        Self {
            weight: format!("{module}.weight"),
            bias: format!("{module}.bias"),
        }
    }

    /// The weight `[out_dim, in_dim]` and bias `[out_dim]` with their shapes.
    pub fn specs(&self, out_dim: usize, in_dim: usize) -> [WeightSpec; 2] {
        [
            WeightSpec {
                name: self.weight.clone(),
                shape: vec![out_dim, in_dim],
            },
            WeightSpec {
                name: self.bias.clone(),
                shape: vec![out_dim],
            },
        ]
    }

    /// Loads the layer `nn.Linear(in_dim, out_dim)` (with bias), checking both shapes. bf16 weights
    /// are stored packed for the prefill GEMM where [`crate::packed::packs_on_load`] says so.
    pub fn load(
        &self,
        store: &WeightStore,
        out_dim: usize,
        in_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Linear> {
        if crate::packed::packs_on_load(dtype, device) {
            let weight = store.get_packed_bf16(&self.weight, [out_dim, in_dim])?;
            let bias = store.get(&self.bias, &[out_dim], dtype, device)?;
            return Linear::from_packed(weight, Some(bias));
        }
        let weight = store.get(&self.weight, &[out_dim, in_dim], dtype, device)?;
        let bias = store.get(&self.bias, &[out_dim], dtype, device)?;
        Ok(Linear::new(weight, Some(bias)))
    }
}

/// The two keys of a `nn.LayerNorm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNormKeys {
    /// `<module>.weight`, shape `[dim]`.
    pub weight: String,
    /// `<module>.bias`, shape `[dim]`.
    pub bias: String,
}

impl LayerNormKeys {
    /// The keys of the module at the full path `module` (prefix included).
    pub fn new(module: &str) -> Self {
        Self {
            weight: format!("{module}.weight"),
            bias: format!("{module}.bias"),
        }
    }

    /// The weight and bias `[dim]` with their shapes.
    pub fn specs(&self, dim: usize) -> [WeightSpec; 2] {
        [
            WeightSpec {
                name: self.weight.clone(),
                shape: vec![dim],
            },
            WeightSpec {
                name: self.bias.clone(),
                shape: vec![dim],
            },
        ]
    }

    /// Loads the layer `nn.LayerNorm(dim, eps)`, checking both shapes.
    pub fn load(
        &self,
        store: &WeightStore,
        dim: usize,
        eps: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<LayerNorm> {
        let weight = store.get(&self.weight, &[dim], dtype, device)?;
        let bias = store.get(&self.bias, &[dim], dtype, device)?;
        Ok(LayerNorm::new(weight, bias, eps as f32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_both_keys_with_their_shapes() {
        let l = LinearKeys::new("m.fc1");
        assert_eq!(
            l.specs(3, 5).map(|s| (s.name, s.shape)),
            [
                ("m.fc1.weight".to_string(), vec![3, 5]),
                ("m.fc1.bias".to_string(), vec![3])
            ]
        );
        let n = LayerNormKeys::new("m.ln");
        assert_eq!(
            n.specs(7).map(|s| (s.name, s.shape)),
            [
                ("m.ln.weight".to_string(), vec![7]),
                ("m.ln.bias".to_string(), vec![7])
            ]
        );
    }
}
