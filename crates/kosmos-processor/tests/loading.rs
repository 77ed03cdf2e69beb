//! `from_dir` errors: missing files, invalid JSON, a vocabulary that does not fit.

mod support;

use std::path::{Path, PathBuf};

use kosmos_processor::{Kosmos2Processor, ProcessorError};
use support::common;

/// A scratch processor directory with copies of the real files (removed on drop).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str, real: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("kosmos-load-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "preprocessor_config.json",
        ] {
            std::fs::copy(real.join(f), dir.join(f)).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn real_directory_loads() {
    let Some(dir) = common::real_model_dir("real_directory_loads") else {
        return;
    };
    let p = Kosmos2Processor::from_dir(&dir).unwrap();
    assert_eq!(p.tokenizer().vocab_size(), 65037);
    assert_eq!(p.tokenizer().patch_index_id(1023), Some(65036));
    assert!(p.tokenizer().config().clean_up_tokenization_spaces);
}

#[test]
fn missing_and_invalid_files_are_typed_errors() {
    let Some(real) = common::real_model_dir("missing_and_invalid_files") else {
        return;
    };
    let s = Scratch::new("missing", &real);
    std::fs::remove_file(s.0.join("preprocessor_config.json")).unwrap();
    let err = Kosmos2Processor::from_dir(&s.0).unwrap_err();
    assert!(
        matches!(&err, ProcessorError::MissingFile { path } if path.ends_with("preprocessor_config.json")),
        "{err}"
    );

    std::fs::write(s.0.join("preprocessor_config.json"), "{\"size\": ").unwrap();
    let err = Kosmos2Processor::from_dir(&s.0).unwrap_err();
    assert!(matches!(&err, ProcessorError::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("preprocessor_config.json"),
        "{err}"
    );

    std::fs::copy(
        real.join("preprocessor_config.json"),
        s.0.join("preprocessor_config.json"),
    )
    .unwrap();
    std::fs::write(s.0.join("tokenizer_config.json"), "[1, 2").unwrap();
    let err = Kosmos2Processor::from_dir(&s.0).unwrap_err();
    assert!(matches!(&err, ProcessorError::Json { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");

    std::fs::copy(
        real.join("tokenizer_config.json"),
        s.0.join("tokenizer_config.json"),
    )
    .unwrap();
    std::fs::write(s.0.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let err = Kosmos2Processor::from_dir(&s.0).unwrap_err();
    assert!(matches!(&err, ProcessorError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn vocabulary_without_patch_tokens_is_rejected() {
    let Some(real) = common::real_model_dir("vocabulary_without_patch_tokens") else {
        return;
    };
    let s = Scratch::new("vocab", &real);
    let text = std::fs::read_to_string(real.join("tokenizer.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let added = doc["added_tokens"].as_array_mut().unwrap();
    added.retain(|t| !t["content"].as_str().unwrap().starts_with("<patch_index_"));
    std::fs::write(s.0.join("tokenizer.json"), doc.to_string()).unwrap();
    let err = Kosmos2Processor::from_dir(&s.0).unwrap_err();
    assert!(matches!(&err, ProcessorError::Config { .. }), "{err}");
    assert!(err.to_string().contains("<patch_index_0000>"), "{err}");
}
