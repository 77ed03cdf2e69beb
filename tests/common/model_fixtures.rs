//! Parity helpers for the model crates' tests: the fixture models and their HF reference tensors.
//!
//! They need `kosmos-tensor`, so they live beside `mod.rs` rather than in it; a test includes both:
//!
//! ```ignore
//! #[path = "../../../tests/common/mod.rs"]
//! mod common;
//! #[path = "../../../tests/common/model_fixtures.rs"]
//! mod model_fixtures;
//! ```

#![allow(dead_code)]

use std::path::PathBuf;

use kosmos_tensor::{DType, Device, Tensor, WeightStore};

/// The fixture models of `tests/fixtures/models/` that every parity test covers.
pub const FIXTURE_MODELS: [&str; 3] = ["tiny", "tiny-wide", "tiny-realvocab"];

/// `tests/fixtures/models/<name>`, which must hold `model.safetensors`.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = crate::common::fixtures_dir().join("models").join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "missing fixture model {} (run `cargo xtask fixtures`)",
        dir.display()
    );
    dir
}

/// The `config.json` of a fixture model.
pub fn config_json(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A reference tensor at its stored shape, as f32.
pub fn reference(store: &WeightStore, name: &str) -> Tensor {
    let (shape, _) = store
        .info(name)
        .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"));
    store.get(name, &shape, DType::F32, &Device::Cpu).unwrap()
}

/// Asserts `got` matches `want` (same shape, relative error within `tol`, the shared metric of
/// `mod.rs`), prints the error and returns the relative error.
pub fn check(component: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{component}: shape");
    let p = crate::common::assert_parity(
        component,
        &got.to_vec_f32().unwrap(),
        &want.to_vec_f32().unwrap(),
        tol,
    );
    eprintln!(
        "{component}: max_abs {:.3e} max_rel {:.3e}",
        p.max_abs, p.max_rel
    );
    p.max_rel
}
