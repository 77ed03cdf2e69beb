//! `GenerationConfig::from_model_dir*` on the real model's configs (shared assets) and on broken dirs.

#[path = "../../../tests/common/mod.rs"]
mod common;

use kosmos2::generation::{EarlyStopping, GenerationConfig, GenerationError, HfDefaults};

#[test]
fn real_model_defaults_per_transformers_version() {
    let Some(dir) = common::real_model_dir("real_model_defaults_per_transformers_version") else {
        return;
    };

    // 5.24 (what `generate()` does without arguments): greedy, no n-gram blocking, ids from text_config
    let v5 = GenerationConfig::from_model_dir(&dir).expect("5.24");
    assert_eq!(
        v5,
        GenerationConfig::from_model_dir_with(&dir, HfDefaults::Transformers5_24).expect("5.24")
    );
    assert_eq!(v5.no_repeat_ngram_size, 0);
    assert_eq!(v5.eos_token_id, vec![2]);
    assert_eq!(v5.pad_token_id, Some(1));
    assert_eq!(v5.bos_token_id, Some(0));
    assert!(!v5.do_sample);
    assert_eq!(v5.num_beams, 1);
    assert_eq!(v5, GenerationConfig::default());

    // 4.x: text_config's generation attributes applied, so 3-gram blocking (reference §6.4)
    let v4 = GenerationConfig::from_model_dir_with(&dir, HfDefaults::Transformers4).expect("4.x");
    assert_eq!(v4.no_repeat_ngram_size, 3);
    assert_eq!(v4.top_k, 50);
    assert_eq!(v4.early_stopping, EarlyStopping::Heuristic);
    assert_eq!(
        v4.max_new_tokens,
        GenerationConfig::default().max_new_tokens,
        "max_length is not copied"
    );
    assert_eq!(
        GenerationConfig {
            no_repeat_ngram_size: 0,
            ..v4.clone()
        },
        v5
    );

    // the hub generation_config.json
    let hub =
        GenerationConfig::from_model_dir_with(&dir, HfDefaults::GenerationConfigJson).expect("hub");
    assert_eq!(hub.no_repeat_ngram_size, 3);
    assert_eq!(hub.eos_token_id, vec![2]);
    assert!(hub.validate().is_ok());
}

#[test]
fn overrides_and_broken_model_dirs() {
    let root = common::repo_root()
        .join("target")
        .join("generation-config-test");
    let dir = root.join(format!("case-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    // missing config.json
    let err = GenerationConfig::from_model_dir(&dir).expect_err("no config.json");
    assert!(matches!(err, GenerationError::Io { .. }), "{err}");

    // text_config with other ids and generation fields; generation_config.json with beams
    std::fs::write(
        dir.join("config.json"),
        r#"{"text_config": {"eos_token_id": [2, 9], "pad_token_id": 3, "bos_token_id": null,
            "no_repeat_ngram_size": 2, "num_beams": 4, "max_length": 20}}"#,
    )
    .expect("write");
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"num_beams": 5, "early_stopping": "never"}"#,
    )
    .expect("write");
    let v5 = GenerationConfig::from_model_dir(&dir).expect("5.24");
    assert_eq!(
        (v5.eos_token_id.clone(), v5.pad_token_id, v5.bos_token_id),
        (vec![2, 9], Some(3), Some(0))
    );
    assert_eq!((v5.no_repeat_ngram_size, v5.num_beams), (0, 1));
    let v4 = GenerationConfig::from_model_dir_with(&dir, HfDefaults::Transformers4).expect("4.x");
    assert_eq!((v4.no_repeat_ngram_size, v4.num_beams), (2, 4));
    let hub =
        GenerationConfig::from_model_dir_with(&dir, HfDefaults::GenerationConfigJson).expect("hub");
    assert_eq!(
        (hub.num_beams, hub.early_stopping, hub.no_repeat_ngram_size),
        (5, EarlyStopping::Never, 0)
    );

    // malformed JSON and a wrongly typed field
    std::fs::write(dir.join("config.json"), "{not json").expect("write");
    let err = GenerationConfig::from_model_dir(&dir).expect_err("bad json");
    assert!(matches!(err, GenerationError::Json { .. }), "{err}");
    std::fs::write(
        dir.join("config.json"),
        r#"{"text_config": {"eos_token_id": "two"}}"#,
    )
    .expect("write");
    let err = GenerationConfig::from_model_dir(&dir).expect_err("bad field");
    assert!(matches!(err, GenerationError::InvalidConfig(_)), "{err}");

    std::fs::remove_dir_all(&dir).expect("cleanup");
}
