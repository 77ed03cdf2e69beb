//! `quantize_checkpoint`: writes an int8 copy of a model directory (`kosmos2 quantize`).
//!
//! The text decoder's linear weights and `lm_head` become per-output-channel symmetric int8
//! (`I8` tensors) with their f32 scales at `<key>_scale`; every other tensor is copied byte for
//! byte. The copy loads with [`Kosmos2ForConditionalGeneration::load`] at any precision (its
//! int8 weights are memory-mapped, not converted), and its `config.json` carries a
//! `quantization_config` entry so that other loaders refuse it rather than misread it.
//!
//! [`Kosmos2ForConditionalGeneration::load`]: crate::Kosmos2ForConditionalGeneration::load

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kosmos_tensor::quant::{scale_key, Int8Weight};
use kosmos_tensor::{write_safetensors_raw, RawTensor, WeightStore};
use kosmos_text::TextNames;

use crate::config::Kosmos2Config;
use crate::error::{Error, Result};
use crate::weights::check_keys;

/// The `quant_method` written to the quantised checkpoint's `config.json`.
pub const QUANT_METHOD: &str = "kosmos2-int8-weight-only";

/// What [`quantize_checkpoint`] wrote.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    /// The weights file written (`<out>/model.safetensors`).
    pub weights: PathBuf,
    /// Number of weights stored as int8 (145 for the real model: 6 per block and `lm_head`).
    pub int8_tensors: usize,
    /// Parameters stored as int8.
    pub int8_params: usize,
    /// Bytes of the whole weights file.
    pub file_bytes: u64,
    /// The other files copied next to it (tokenizer, processor and generation configs, ...).
    pub copied: Vec<String>,
}

/// Writes `out_dir/model.safetensors` with the text linears and `lm_head` of `src_dir`'s
/// checkpoint in int8, `out_dir/config.json` with a `quantization_config`, and copies every other
/// plain file of `src_dir` (tokenizer, processor and generation configs), so that `out_dir` is a
/// complete model directory.
///
/// A tied `lm_head` is written as an int8 copy of `embed_tokens` (the embedding itself stays
/// f32). Weights the source already stores as int8 are copied as they are. Errors on a bad source
/// (the same checks as loading), or when `out_dir` is `src_dir`.
///
/// ```
/// # fn main() -> Result<(), kosmos2::Error> {
/// use kosmos2::{quantize_checkpoint, Kosmos2ForConditionalGeneration, Precision};
/// let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-realvocab");
/// let out = std::env::temp_dir().join(format!("kosmos2-q-doc-{}", std::process::id()));
/// let report = quantize_checkpoint(src.as_ref(), &out)?;
/// assert_eq!(report.int8_tensors, 2 * 6 + 1); // two blocks, and the head
/// let model = Kosmos2ForConditionalGeneration::load(&out, &kosmos2::Device::Cpu, Precision::F32)?;
/// assert!(model.lm_head.is_int8());
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub fn quantize_checkpoint(src_dir: &Path, out_dir: &Path) -> Result<QuantizeReport> {
    let config_path = src_dir.join("config.json");
    let config = Kosmos2Config::from_file(&config_path)?;
    let store = WeightStore::open(src_dir)?;
    let has_head = check_keys(&config, &store.keys())?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        path: out_dir.into(),
        source,
    })?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(src_dir, out_dir) {
        return Err(Error::InvalidInput(format!(
            "quantize: the output directory {} is the source directory",
            out_dir.display()
        )));
    }

    // Quantise (or pick up already-int8) weights, releasing each float source once read.
    let names = TextNames::kosmos2();
    let t = &config.text_config;
    let mut quantised: BTreeMap<String, Quantised> = BTreeMap::new();
    for (key, dims) in names.int8_linear_keys(t) {
        let from = if key == names.lm_head() && !has_head {
            names.embed_tokens()
        } else {
            key.clone()
        };
        let q = if store.stored_dtype_name(&from)? == "I8" {
            Int8Weight::load(&store, &from, dims)?
        } else {
            let q = Int8Weight::quantize_stored(&store, &from, dims)?;
            store.mapped_pages(&from).release();
            q
        };
        let scale = scale_key(&key);
        quantised.insert(
            key,
            Quantised {
                q,
                dims,
                rows: [dims[0]],
                scale,
            },
        );
    }

    // Every stored tensor in key order (a source's own scales are rewritten with their weights),
    // the int8 ones with their scales right after them.
    let scales: BTreeSet<&str> = quantised.values().map(|q| q.scale.as_str()).collect();
    let mut order: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| !scales.contains(k.as_str()))
        .collect();
    if !has_head {
        order.push(names.lm_head());
        order.sort();
    }
    let mut tensors: Vec<(&str, RawTensor<'_>)> = Vec::with_capacity(order.len() + scales.len());
    for key in &order {
        match quantised.get(key) {
            Some(q) => {
                let weight = RawTensor {
                    dtype: "I8",
                    shape: &q.dims,
                    data: q.q.q_bytes(),
                };
                let scale = RawTensor {
                    dtype: "F32",
                    shape: &q.rows,
                    data: q.q.scale_bytes(),
                };
                tensors.push((key, weight));
                tensors.push((&q.scale, scale));
            }
            None => tensors.push((key, store.raw(key)?)),
        }
    }
    let weights = out_dir.join("model.safetensors");
    write_safetensors_raw(
        &weights,
        &tensors,
        &[("format", "pt"), ("quantization", QUANT_METHOD)],
    )?;

    // config.json with the quantisation recorded; the other files as they are.
    write_config(&config_path, &out_dir.join("config.json"))?;
    let mut copied = Vec::new();
    let entries = std::fs::read_dir(src_dir).map_err(|source| Error::Io {
        path: src_dir.into(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let skip = name == "config.json"
            || name.ends_with(".safetensors")
            || name == "model.safetensors.index.json";
        if skip || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), out_dir.join(&name)).map_err(|source| Error::Write {
            path: out_dir.join(&name),
            source,
        })?;
        copied.push(name);
    }
    copied.sort();
    let file_bytes = std::fs::metadata(&weights)
        .map_err(|source| Error::Io {
            path: weights.clone(),
            source,
        })?
        .len();
    Ok(QuantizeReport {
        weights,
        int8_tensors: quantised.len(),
        int8_params: quantised.values().map(|q| q.dims[0] * q.dims[1]).sum(),
        file_bytes,
        copied,
    })
}

/// One weight as written: its int8 values and scales, shapes and scale key.
struct Quantised {
    q: Int8Weight,
    dims: [usize; 2],
    rows: [usize; 1],
    scale: String,
}

/// Copies `config.json`, adding `quantization_config` (HF's field for quantised checkpoints).
fn write_config(src: &Path, dst: &Path) -> Result<()> {
    let text = std::fs::read_to_string(src).map_err(|source| Error::Io {
        path: src.into(),
        source,
    })?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| Error::ConfigJson {
            path: src.into(),
            source,
        })?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "quantization_config".into(),
            serde_json::json!({
                "quant_method": QUANT_METHOD,
                "bits": 8,
                "scheme": "symmetric, per output channel, f32 scales at <weight>_scale",
                "modules": "text_model linear layers (q/k/v/out_proj, fc1, fc2) and lm_head",
            }),
        );
    }
    let out = serde_json::to_string_pretty(&value).map_err(|source| Error::ConfigJson {
        path: dst.into(),
        source,
    })?;
    std::fs::write(dst, out + "\n").map_err(|source| Error::Write {
        path: dst.into(),
        source,
    })
}
