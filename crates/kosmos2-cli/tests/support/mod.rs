//! What the CLI and server tests share: the tiny real-vocabulary fixture model, the real
//! processor files and the shared photos. A test file includes it after `common`:
//! `mod support;` (each file adds its own `impl Env` methods).

#![allow(dead_code)]

pub mod http;

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

use crate::common;

/// Paths of one test's inputs.
pub struct Env {
    /// The shared assets folder.
    pub assets: PathBuf,
    /// `tests/fixtures/models/tiny-realvocab`.
    pub model: PathBuf,
    /// The real processor files (`<assets>/kosmos-2-patch14-224`).
    pub processor: PathBuf,
}

/// The inputs, or `None` (after a printed line) when the shared assets are missing outside CI.
pub fn env(test: &str) -> Option<Env> {
    let assets = common::assets_dir(test)?;
    Some(Env {
        model: common::fixtures_dir().join("models/tiny-realvocab"),
        processor: assets.join("kosmos-2-patch14-224"),
        assets,
    })
}

impl Env {
    /// The path of a shared photo, as a command-line argument.
    pub fn image(&self, name: &str) -> String {
        common::image_path(&self.assets, name)
            .to_string_lossy()
            .into_owned()
    }

    /// The model folder as a command-line argument.
    pub fn model_arg(&self) -> &str {
        self.model.to_str().expect("UTF-8 fixture path")
    }

    /// The processor folder as a command-line argument.
    pub fn processor_arg(&self) -> &str {
        self.processor.to_str().expect("UTF-8 assets path")
    }
}

/// The stdout of a run that must have succeeded (the exit code and stderr otherwise).
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// One HF generation case of the tiny real-vocabulary fixture (`generation.json`), by name.
pub fn case(name: &str) -> Value {
    let p = common::fixtures_dir().join("models/tiny-realvocab/generation.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone()
}
