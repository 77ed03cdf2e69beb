//! Every text weight name in one place (HF `Kosmos2TextForCausalLM` under `text_model.`), and the
//! [`WeightSource`] the constructors read them from.
//!
//! Names are built from a root so that the same decoder loads from a full KOSMOS-2 checkpoint
//! (root `text_model.`, [`TextNames::kosmos2`]) or from a bare `Kosmos2TextForCausalLM` state dict
//! (root `""`).

use std::collections::HashMap;

use kosmos_tensor::packed::PackedBf16;
use kosmos_tensor::quant::Int8Weight;
use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::config::Kosmos2TextConfig;
use crate::error::{Error, Result};

/// Where constructors get their tensors: a safetensors [`WeightStore`] (through [`StoreWeights`])
/// or an in-memory map (tests, doc examples, programmatic models).
pub trait WeightSource {
    /// The tensor `name` with exactly `shape`; a typed error if it is missing or shaped otherwise.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// Whether `name` is present.
    fn contains(&self, name: &str) -> bool;
    /// The linear weight `name` (`[out, in]`) as int8, when this source stores it quantised or
    /// quantises on load ([`WeightSource::quantizes_int8`]); `None` loads it as a float tensor.
    fn int8(&self, name: &str, dims: [usize; 2]) -> Result<Option<Int8Weight>> {
        let _ = (name, dims);
        Ok(None)
    }
    /// Whether float linear weights are quantised to int8 on load (then a tied `lm_head` gets an
    /// int8 copy of `embed_tokens`).
    fn quantizes_int8(&self) -> bool {
        false
    }
    /// The linear weight `name` (`[out, in]`) packed as bf16 for the prefill GEMM, when this source
    /// stores bf16 linears that way ([`kosmos_tensor::packed::packs_on_load`]); `None` loads it as a
    /// tensor.
    fn packed_bf16(&self, name: &str, dims: [usize; 2]) -> Result<Option<PackedBf16>> {
        let _ = (name, dims);
        Ok(None)
    }
}

/// A [`WeightStore`] read at one dtype onto one device.
#[derive(Debug, Clone, Copy)]
pub struct StoreWeights<'a> {
    /// The opened safetensors file(s).
    pub store: &'a WeightStore,
    /// The dtype weights are converted to (zero-copy when it is the stored dtype).
    pub dtype: DType,
    /// Where the tensors live.
    pub device: &'a Device,
    /// Quantise the float linear weights (and the LM head) to int8 on load. Weights the file
    /// already stores as int8 ([`Int8Weight::load`]) load as int8 either way.
    pub quantize_int8: bool,
}

impl<'a> StoreWeights<'a> {
    /// Reads `store` at `dtype` onto `device`, no quantisation.
    pub fn new(store: &'a WeightStore, dtype: DType, device: &'a Device) -> Self {
        Self {
            store,
            dtype,
            device,
            quantize_int8: false,
        }
    }

    /// Also quantise the float linear weights to int8 on load.
    pub fn with_int8(mut self) -> Self {
        self.quantize_int8 = true;
        self
    }
}

impl WeightSource for StoreWeights<'_> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.store.get(name, shape, self.dtype, self.device)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.store.contains(name)
    }

    fn int8(&self, name: &str, dims: [usize; 2]) -> Result<Option<Int8Weight>> {
        if self.store.stored_dtype_name(name)? == "I8" {
            return Ok(Some(Int8Weight::load(self.store, name, dims)?));
        }
        if !self.quantize_int8 {
            return Ok(None);
        }
        let q = Int8Weight::quantize_stored(self.store, name, dims)?;
        // The float source pages are not needed any more (a zero-copy view re-faults on use);
        // `quantize_stored` released an f32 source's block by block, this gets the rest.
        self.store.mapped_pages(name).release();
        Ok(Some(q))
    }

    fn quantizes_int8(&self) -> bool {
        self.quantize_int8
    }

    fn packed_bf16(&self, name: &str, dims: [usize; 2]) -> Result<Option<PackedBf16>> {
        if !kosmos_tensor::packed::packs_on_load(self.dtype, self.device) {
            return Ok(None);
        }
        Ok(Some(self.store.get_packed_bf16(name, dims)?))
    }
}

impl WeightSource for HashMap<String, Tensor> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .get(name)
            .ok_or_else(|| kosmos_tensor::Error::MissingKey {
                name: name.to_string(),
            })?;
        if t.dims() != shape {
            return Err(kosmos_tensor::Error::WrongShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            }
            .into());
        }
        Ok(t.clone())
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// The names of one `nn.Linear`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearNames {
    /// `<prefix>.weight`, shape `[out, in]`.
    pub weight: String,
    /// `<prefix>.bias`, shape `[out]`.
    pub bias: String,
}

impl LinearNames {
    fn new(prefix: &str) -> Self {
        Self {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
        }
    }
}

/// The names of one `nn.LayerNorm` (same layout as a linear: `.weight`, `.bias`).
pub type LayerNormNames = LinearNames;

/// The names of one `KosmosTextAttention` with its `inner_attn_ln`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionNames {
    /// `q_proj`.
    pub q_proj: LinearNames,
    /// `k_proj`.
    pub k_proj: LinearNames,
    /// `v_proj`.
    pub v_proj: LinearNames,
    /// `out_proj`.
    pub out_proj: LinearNames,
    /// `inner_attn_ln` (the sub-LN before `out_proj`).
    pub inner_attn_ln: LayerNormNames,
}

/// The names of one `Kosmos2TextFFN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfnNames {
    /// `fc1` (`embed_dim -> ffn_dim`).
    pub fc1: LinearNames,
    /// `fc2` (`ffn_dim -> embed_dim`).
    pub fc2: LinearNames,
    /// `ffn_layernorm` (over `ffn_dim`, between the activation and `fc2`).
    pub ffn_layernorm: LayerNormNames,
}

/// The names of one `Kosmos2TextBlock` (`<root>model.layers.{i}.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockNames {
    /// `self_attn_layer_norm` (pre-LN of the attention).
    pub self_attn_layer_norm: LayerNormNames,
    /// `self_attn`.
    pub self_attn: AttentionNames,
    /// `final_layer_norm` (pre-LN of the FFN).
    pub final_layer_norm: LayerNormNames,
    /// `ffn`.
    pub ffn: FfnNames,
}

/// The text decoder's weight names under a root (`text_model.` in a KOSMOS-2 checkpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextNames {
    root: String,
}

impl TextNames {
    /// The root of the text model inside `Kosmos2ForConditionalGeneration`.
    pub const KOSMOS2_ROOT: &'static str = "text_model.";

    /// Names under `root` (for example `"text_model."`, or `""` for a bare text model).
    pub fn new(root: &str) -> Self {
        Self {
            root: root.to_string(),
        }
    }

    /// Names inside a full KOSMOS-2 checkpoint.
    pub fn kosmos2() -> Self {
        Self::new(Self::KOSMOS2_ROOT)
    }

    /// `model.embed_tokens.weight`, `[vocab_size, embed_dim]`.
    pub fn embed_tokens(&self) -> String {
        format!("{}model.embed_tokens.weight", self.root)
    }

    /// `model.layer_norm` (the final LayerNorm).
    pub fn layer_norm(&self) -> LayerNormNames {
        LinearNames::new(&format!("{}model.layer_norm", self.root))
    }

    /// `lm_head.weight`, `[vocab_size, embed_dim]`, no bias; tied to `embed_tokens` when absent.
    pub fn lm_head(&self) -> String {
        format!("{}lm_head.weight", self.root)
    }

    /// The names of block `i`.
    pub fn block(&self, i: usize) -> BlockNames {
        let p = format!("{}model.layers.{i}", self.root);
        BlockNames {
            self_attn_layer_norm: LinearNames::new(&format!("{p}.self_attn_layer_norm")),
            self_attn: AttentionNames {
                q_proj: LinearNames::new(&format!("{p}.self_attn.q_proj")),
                k_proj: LinearNames::new(&format!("{p}.self_attn.k_proj")),
                v_proj: LinearNames::new(&format!("{p}.self_attn.v_proj")),
                out_proj: LinearNames::new(&format!("{p}.self_attn.out_proj")),
                inner_attn_ln: LinearNames::new(&format!("{p}.self_attn.inner_attn_ln")),
            },
            final_layer_norm: LinearNames::new(&format!("{p}.final_layer_norm")),
            ffn: FfnNames {
                fc1: LinearNames::new(&format!("{p}.ffn.fc1")),
                fc2: LinearNames::new(&format!("{p}.ffn.fc2")),
                ffn_layernorm: LinearNames::new(&format!("{p}.ffn.ffn_layernorm")),
            },
        }
    }

    /// Every key of block `i` with its shape (20 keys).
    pub fn block_keys(&self, cfg: &Kosmos2TextConfig, i: usize) -> Vec<(String, Vec<usize>)> {
        let (d, f) = (cfg.embed_dim, cfg.ffn_dim);
        let b = self.block(i);
        let mut keys = Vec::with_capacity(20);
        let mut linear = |n: &LinearNames, out: usize, inp: usize| {
            keys.push((n.weight.clone(), vec![out, inp]));
            keys.push((n.bias.clone(), vec![out]));
        };
        for n in [
            &b.self_attn.q_proj,
            &b.self_attn.k_proj,
            &b.self_attn.v_proj,
            &b.self_attn.out_proj,
        ] {
            linear(n, d, d);
        }
        linear(&b.ffn.fc1, f, d);
        linear(&b.ffn.fc2, d, f);
        for (n, width) in [
            (&b.self_attn.inner_attn_ln, d),
            (&b.self_attn_layer_norm, d),
            (&b.final_layer_norm, d),
            (&b.ffn.ffn_layernorm, f),
        ] {
            keys.push((n.weight.clone(), vec![width]));
            keys.push((n.bias.clone(), vec![width]));
        }
        keys
    }

    /// Every text key with its shape: embeddings, final LayerNorm, the blocks, and `lm_head` when
    /// `with_lm_head` (a checkpoint may store the tied head or not).
    pub fn all_keys(
        &self,
        cfg: &Kosmos2TextConfig,
        with_lm_head: bool,
    ) -> Vec<(String, Vec<usize>)> {
        let d = cfg.embed_dim;
        let mut keys = vec![(self.embed_tokens(), vec![cfg.vocab_size, d])];
        let ln = self.layer_norm();
        keys.push((ln.weight, vec![d]));
        keys.push((ln.bias, vec![d]));
        if with_lm_head {
            keys.push((self.lm_head(), vec![cfg.vocab_size, d]));
        }
        for i in 0..cfg.layers {
            keys.extend(self.block_keys(cfg, i));
        }
        keys
    }

    /// The weights int8 quantisation covers, with their `[out, in]` shapes: the six linear layers
    /// of every block (q/k/v/out projections, fc1, fc2), then `lm_head`. In a quantised checkpoint
    /// each is stored as `I8` with its per-row scales at
    /// [`scale_key`](kosmos_tensor::quant::scale_key)`(key)`.
    pub fn int8_linear_keys(&self, cfg: &Kosmos2TextConfig) -> Vec<(String, [usize; 2])> {
        let (d, f) = (cfg.embed_dim, cfg.ffn_dim);
        let mut keys = Vec::with_capacity(6 * cfg.layers + 1);
        for i in 0..cfg.layers {
            let b = self.block(i);
            for (n, dims) in [
                (&b.self_attn.q_proj, [d, d]),
                (&b.self_attn.k_proj, [d, d]),
                (&b.self_attn.v_proj, [d, d]),
                (&b.self_attn.out_proj, [d, d]),
                (&b.ffn.fc1, [f, d]),
                (&b.ffn.fc2, [d, f]),
            ] {
                keys.push((n.weight.clone(), dims));
            }
        }
        keys.push((self.lm_head(), [cfg.vocab_size, d]));
        keys
    }
}

/// Reads a linear layer's weight `[out, in]` and bias `[out]`.
pub(crate) fn load_linear(
    src: &dyn WeightSource,
    names: &LinearNames,
    out: usize,
    inp: usize,
) -> Result<kosmos_tensor::nn::Linear> {
    let b = src.tensor(&names.bias, &[out])?;
    if let Some(q) = src.int8(&names.weight, [out, inp])? {
        return Ok(kosmos_tensor::nn::Linear::from_int8(q, Some(b))?);
    }
    if let Some(p) = src.packed_bf16(&names.weight, [out, inp])? {
        return Ok(kosmos_tensor::nn::Linear::from_packed(p, Some(b))?);
    }
    let w = src.tensor(&names.weight, &[out, inp])?;
    Ok(kosmos_tensor::nn::Linear::new(w, Some(b)))
}

/// Reads a LayerNorm's weight and bias `[width]`.
pub(crate) fn load_layer_norm(
    src: &dyn WeightSource,
    names: &LayerNormNames,
    width: usize,
    eps: f64,
) -> Result<kosmos_tensor::nn::LayerNorm> {
    let w = src.tensor(&names.weight, &[width])?;
    let b = src.tensor(&names.bias, &[width])?;
    Ok(kosmos_tensor::nn::LayerNorm::new(w, b, eps as f32))
}

/// Fails with the first key of `keys` that `src` lacks (used by tests and loaders for early checks).
pub fn check_present(src: &dyn WeightSource, keys: &[(String, Vec<usize>)]) -> Result<()> {
    match keys.iter().find(|(k, _)| !src.contains(k)) {
        Some((k, _)) => Err(Error::Tensor(kosmos_tensor::Error::MissingKey {
            name: k.clone(),
        })),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The non-layer text keys of reference §5.
    const NON_LAYER: [&str; 4] = [
        "text_model.model.embed_tokens.weight",
        "text_model.model.layer_norm.weight",
        "text_model.model.layer_norm.bias",
        "text_model.lm_head.weight",
    ];

    /// The 20 per-layer suffixes of reference §5.
    const LAYER_SUFFIXES: [&str; 20] = [
        "self_attn.q_proj.weight",
        "self_attn.q_proj.bias",
        "self_attn.k_proj.weight",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.weight",
        "self_attn.v_proj.bias",
        "self_attn.out_proj.weight",
        "self_attn.out_proj.bias",
        "self_attn.inner_attn_ln.weight",
        "self_attn.inner_attn_ln.bias",
        "self_attn_layer_norm.weight",
        "self_attn_layer_norm.bias",
        "ffn.fc1.weight",
        "ffn.fc1.bias",
        "ffn.fc2.weight",
        "ffn.fc2.bias",
        "ffn.ffn_layernorm.weight",
        "ffn.ffn_layernorm.bias",
        "final_layer_norm.weight",
        "final_layer_norm.bias",
    ];

    #[test]
    fn real_config_gives_exactly_the_hf_text_keys() {
        let cfg = Kosmos2TextConfig::default();
        let names = TextNames::kosmos2();
        for with_head in [true, false] {
            let got: Vec<_> = names.all_keys(&cfg, with_head);
            let got_set: BTreeSet<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(got_set.len(), got.len(), "duplicate keys");
            let mut want: BTreeSet<String> = NON_LAYER
                .iter()
                .filter(|k| with_head || !k.contains("lm_head"))
                .map(|k| k.to_string())
                .collect();
            for i in 0..24 {
                for s in LAYER_SUFFIXES {
                    want.insert(format!("text_model.model.layers.{i}.{s}"));
                }
            }
            let want_ref: BTreeSet<&str> = want.iter().map(String::as_str).collect();
            assert_eq!(got_set, want_ref);
            let layer_keys = got.iter().filter(|(k, _)| k.contains(".layers.")).count();
            assert_eq!(layer_keys, 480);
            assert_eq!(got.len(), if with_head { 484 } else { 483 });
        }
    }

    #[test]
    fn int8_keys_are_the_six_linears_of_every_block_and_the_head() {
        let cfg = Kosmos2TextConfig::default();
        let names = TextNames::kosmos2();
        let keys = names.int8_linear_keys(&cfg);
        assert_eq!(keys.len(), 24 * 6 + 1);
        let all: HashMap<String, Vec<usize>> = names.all_keys(&cfg, true).into_iter().collect();
        for (k, dims) in &keys {
            assert_eq!(all.get(k).map(Vec::as_slice), Some(&dims[..]), "{k}");
        }
        let per_layer: BTreeSet<&str> = keys
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("text_model.model.layers.7."))
            .collect();
        let want: BTreeSet<&str> = LAYER_SUFFIXES
            .iter()
            .copied()
            .filter(|s| s.ends_with(".weight") && (s.contains("proj") || s.contains(".fc")))
            .collect();
        assert_eq!(per_layer, want);
        assert_eq!(
            keys.last().map(|k| k.0.as_str()),
            Some("text_model.lm_head.weight")
        );
        let int8_params: usize = keys.iter().map(|(_, [o, i])| o * i).sum();
        assert_eq!(
            int8_params,
            24 * (4 * 2048 * 2048 + 2 * 2048 * 8192) + 65037 * 2048
        );
    }

    #[test]
    fn real_config_shapes_match_reference_section_5() {
        let cfg = Kosmos2TextConfig::default();
        let keys: HashMap<String, Vec<usize>> = TextNames::kosmos2()
            .all_keys(&cfg, true)
            .into_iter()
            .collect();
        let shape = |k: &str| keys[k].clone();
        assert_eq!(shape("text_model.model.embed_tokens.weight"), [65037, 2048]);
        assert_eq!(shape("text_model.lm_head.weight"), [65037, 2048]);
        assert_eq!(shape("text_model.model.layer_norm.bias"), [2048]);
        let p = "text_model.model.layers.23.";
        assert_eq!(shape(&format!("{p}self_attn.q_proj.weight")), [2048, 2048]);
        assert_eq!(shape(&format!("{p}self_attn.out_proj.bias")), [2048]);
        assert_eq!(shape(&format!("{p}self_attn.inner_attn_ln.weight")), [2048]);
        assert_eq!(shape(&format!("{p}ffn.fc1.weight")), [8192, 2048]);
        assert_eq!(shape(&format!("{p}ffn.fc1.bias")), [8192]);
        assert_eq!(shape(&format!("{p}ffn.fc2.weight")), [2048, 8192]);
        assert_eq!(shape(&format!("{p}ffn.ffn_layernorm.bias")), [8192]);
        assert_eq!(shape(&format!("{p}final_layer_norm.weight")), [2048]);
        // Text parameters without the tied head: reference §5 gives 1,342,289,920.
        let params: usize = keys
            .iter()
            .filter(|(k, _)| !k.contains("lm_head"))
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 1_342_289_920);
    }

    #[test]
    fn bare_root_has_no_prefix() {
        let n = TextNames::new("");
        assert_eq!(n.embed_tokens(), "model.embed_tokens.weight");
        assert_eq!(n.lm_head(), "lm_head.weight");
        assert_eq!(n.block(3).ffn.fc2.bias, "model.layers.3.ffn.fc2.bias");
    }
}
