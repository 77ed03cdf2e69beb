//! Loading a model directory: single file or sharded, tied or stored `lm_head`, and the typed error
//! listing missing and unexpected keys.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "forward/mod.rs"]
mod forward;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use forward::fixture_logits;
use kosmos2::{DType, Device, Error, Kosmos2ForConditionalGeneration, Kosmos2Model, Tensor};
use kosmos_tensor::{write_safetensors, WeightStore};
use support::{model_dir, Fixture};

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kosmos2-load-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every tensor of a fixture checkpoint, by name.
fn tensors(dir: &Path) -> Vec<(String, Tensor)> {
    let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
    store
        .keys()
        .into_iter()
        .map(|k| {
            let (shape, _) = store.info(&k).unwrap();
            let t = store
                .get(&k, &shape, DType::F32, &Device::Cpu)
                .unwrap()
                .contiguous()
                .unwrap();
            (k, t)
        })
        .collect()
}

fn write(path: &Path, tensors: &[(String, Tensor)]) {
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    write_safetensors(path, &refs).unwrap();
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let src = model_dir(&common::fixtures_dir(), "tiny-wide");
    let tmp = TempDir::new("sharded");
    std::fs::copy(src.join("config.json"), tmp.0.join("config.json")).unwrap();
    let all = tensors(&src);
    let (a, b) = all.split_at(all.len() / 2);
    write(&tmp.0.join("model-00001-of-00002.safetensors"), a);
    write(&tmp.0.join("model-00002-of-00002.safetensors"), b);
    let weight_map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|(k, _)| (k.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(
            b.iter()
                .map(|(k, _)| (k.clone(), "model-00002-of-00002.safetensors".into())),
        )
        .collect();
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
    std::fs::write(
        tmp.0.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let single = Kosmos2ForConditionalGeneration::load(&src, &Device::Cpu, DType::F32).unwrap();
    let sharded = Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32).unwrap();
    assert!(!sharded.is_tied());
    let fx = Fixture::open(&src.join("reference.safetensors"));
    assert_eq!(fixture_logits(&single, &fx), fixture_logits(&sharded, &fx));
}

#[test]
fn stored_lm_head_is_used_and_absent_one_is_tied() {
    // tiny drops the tied head; writing it (as a copy of embed_tokens) must give the same logits.
    let src = model_dir(&common::fixtures_dir(), "tiny");
    let tmp = TempDir::new("head");
    std::fs::copy(src.join("config.json"), tmp.0.join("config.json")).unwrap();
    let mut all = tensors(&src);
    let embed = all
        .iter()
        .find(|(k, _)| k == "text_model.model.embed_tokens.weight")
        .unwrap()
        .1
        .clone();
    all.push(("text_model.lm_head.weight".into(), embed));
    write(&tmp.0.join("model.safetensors"), &all);
    let tied = Kosmos2ForConditionalGeneration::load(&src, &Device::Cpu, DType::F32).unwrap();
    let stored = Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32).unwrap();
    assert!(tied.is_tied() && !stored.is_tied());
    let fx = Fixture::open(&src.join("reference.safetensors"));
    assert_eq!(fixture_logits(&tied, &fx), fixture_logits(&stored, &fx));
    // Kosmos2Model accepts a checkpoint with a head (and ignores it).
    assert!(Kosmos2Model::load(&tmp.0, &Device::Cpu, DType::F32).is_ok());
}

#[test]
fn missing_and_unexpected_keys_are_listed() {
    let src = model_dir(&common::fixtures_dir(), "tiny");
    let tmp = TempDir::new("keys");
    std::fs::copy(src.join("config.json"), tmp.0.join("config.json")).unwrap();
    let mut all = tensors(&src);
    let gone = [
        "text_model.model.layers.1.ffn.ffn_layernorm.bias",
        "vision_model.model.post_layernorm.weight",
    ];
    all.retain(|(k, _)| !gone.contains(&k.as_str()));
    let extra = Tensor::from_vec(vec![0.0; 4], &[4], &Device::Cpu).unwrap();
    all.push((
        "text_model.model.layers.1.ffn.extra.bias".into(),
        extra.clone(),
    ));
    // Computed buffers are tolerated.
    all.push(("vision_model.model.embeddings.position_ids".into(), extra));
    write(&tmp.0.join("model.safetensors"), &all);
    match Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32) {
        Err(Error::Weights {
            missing,
            unexpected,
        }) => {
            let mut want: Vec<String> = gone.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(missing, want);
            assert_eq!(unexpected, ["text_model.model.layers.1.ffn.extra.bias"]);
            let msg = Error::Weights {
                missing,
                unexpected,
            }
            .to_string();
            assert!(
                msg.contains("2 missing")
                    && msg.contains("ffn_layernorm.bias")
                    && msg.contains("1 unexpected")
            );
        }
        other => panic!("expected Error::Weights, got {other:?}"),
    }
}

#[test]
fn bad_directories_give_typed_errors() {
    let tmp = TempDir::new("bad");
    assert!(matches!(
        Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32),
        Err(Error::Io { .. })
    ));
    std::fs::write(tmp.0.join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32),
        Err(Error::ConfigJson { .. })
    ));
    std::fs::write(
        tmp.0.join("config.json"),
        r#"{"text_config": {"embed_dim": 30, "attention_heads": 4}}"#,
    )
    .unwrap();
    assert!(matches!(
        Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32),
        Err(Error::Text(kosmos2::text::Error::InvalidConfig(_)))
    ));
    std::fs::write(tmp.0.join("config.json"), "{}").unwrap();
    assert!(matches!(
        Kosmos2ForConditionalGeneration::load(&tmp.0, &Device::Cpu, DType::F32),
        Err(Error::Tensor(_))
    ));
}

#[test]
fn real_config_json_parses_to_the_preset() {
    let Some(dir) = common::real_model_dir("real_config_json_parses_to_the_preset") else {
        return;
    };
    let cfg = kosmos2::Kosmos2Config::from_file(&dir.join("config.json")).unwrap();
    assert_eq!(cfg, kosmos2::Kosmos2Config::kosmos2_patch14_224());
    assert_eq!(kosmos2::weights::expected_keys(&cfg, true).len(), 886);
}
