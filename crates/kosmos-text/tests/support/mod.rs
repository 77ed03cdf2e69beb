//! Reading the HF model fixtures (`tests/fixtures/models/<name>/`, see its README) in integration tests.
//! Shared by the kosmos-text and kosmos2 tests (`#[path]`-included).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kosmos_tensor::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

/// The three fixture checkpoints.
pub const MODELS: [&str; 3] = ["tiny", "tiny-wide", "tiny-realvocab"];

/// The parity tolerance: max |got - want| / max |want| per tensor (see `tests/common`).
pub const TOL: f64 = 1e-4;

/// `<fixtures>/models/<name>` (or `$KOSMOS2_MODEL_FIXTURES/<name>`). The fixtures are committed:
/// a missing directory is a broken checkout and fails the test.
pub fn model_dir(fixtures: &Path, name: &str) -> PathBuf {
    let root = match std::env::var_os("KOSMOS2_MODEL_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => fixtures.join("models"),
    };
    let dir = root.join(name);
    assert!(
        dir.join("config.json").is_file(),
        "model fixture {} is missing",
        dir.display()
    );
    dir
}

/// A fixture model's text config (`config.json`'s `text_config`) and its opened weights.
pub fn text_fixture(dir: &Path) -> (kosmos_text::Kosmos2TextConfig, kosmos_tensor::WeightStore) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = serde_json::from_value(json["text_config"].clone()).unwrap();
    let store = kosmos_tensor::WeightStore::open(&dir.join("model.safetensors")).unwrap();
    (cfg, store)
}

/// One `reference*.safetensors` file, read into memory.
pub struct Fixture {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Fixture {
    pub fn open(path: &Path) -> Fixture {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("bad safetensors {}: {e}", path.display()));
        Fixture {
            path: path.to_path_buf(),
            bytes,
        }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("checked in open")
    }

    pub fn has(&self, name: &str) -> bool {
        self.st().names().contains(&name)
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view(name).shape().to_vec()
    }

    fn view(&self, name: &str) -> safetensors::tensor::TensorView<'_> {
        self.st()
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: no tensor {name}: {e}", self.path.display()))
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let v = self.view(name);
        assert_eq!(v.dtype(), Dtype::F32, "{name} is not f32");
        v.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let v = self.view(name);
        assert_eq!(v.dtype(), Dtype::I64, "{name} is not i64");
        v.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()
    }

    /// An i64 tensor as u32 ids / 0-1 masks.
    pub fn u32(&self, name: &str) -> Vec<u32> {
        self.i64(name)
            .into_iter()
            .map(|x| u32::try_from(x).expect("non-negative id"))
            .collect()
    }

    pub fn tensor(&self, name: &str) -> Tensor {
        Tensor::from_vec(self.f32(name), &self.shape(name), &Device::Cpu).expect("tensor")
    }
}

/// `max |got - want| / max |want|`, with a NaN check.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut diff, mut scale) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        assert!(!g.is_nan(), "NaN in computed output");
        diff = diff.max((g as f64 - w as f64).abs());
        scale = scale.max((w as f64).abs());
    }
    diff / scale.max(f64::MIN_POSITIVE)
}
