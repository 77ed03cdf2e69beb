//! `--model ORG/NAME` through the hub: the real binary downloads the tiny real-vocabulary model
//! from a fake hub on loopback (`HF_ENDPOINT`) into a temporary `HF_HOME`, gives the same output
//! as `--model DIR`, then runs from the cache with the server gone (and with `HF_HUB_OFFLINE=1`);
//! sharded weights and a sentencepiece-only tokenizer; a token from `HF_TOKEN` or the token file;
//! and each hub error as one line with exit code 1.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod fake_hub;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fake_hub::{refused_endpoint, FakeHub, FakeRepo};
use serde_json::Value;

const COMMIT: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const SHARDED_COMMIT: &str = "5ba2ded05ba2ded05ba2ded05ba2ded05ba2ded0";

struct Fixture {
    tiny: PathBuf,
    processor: PathBuf,
    image: String,
}

fn fixture(test: &str) -> Option<Fixture> {
    let assets = common::assets_dir(test)?;
    Some(Fixture {
        tiny: common::fixtures_dir().join("models/tiny-realvocab"),
        processor: assets.join("kosmos-2-patch14-224"),
        image: common::image_path(&assets, "corgi.jpg")
            .to_string_lossy()
            .into_owned(),
    })
}

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()))
}

impl Fixture {
    /// The tiny model with the real tokenizer files, as one hub repo (single-file weights).
    fn repo(&self) -> FakeRepo {
        let mut files = BTreeMap::new();
        for f in ["config.json", "generation_config.json", "model.safetensors"] {
            files.insert(f.to_string(), read(&self.tiny, f));
        }
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "preprocessor_config.json",
            "special_tokens_map.json",
            "sentencepiece.bpe.model",
        ] {
            files.insert(f.to_string(), read(&self.processor, f));
        }
        FakeRepo {
            id: "kosmos2-rs/tiny-realvocab".to_string(),
            commit: COMMIT.to_string(),
            files,
        }
    }

    /// The same model with its weights in two shards and an index, the sentencepiece model as
    /// its only tokenizer file, and no special_tokens_map.json or generation_config.json.
    fn sharded_repo(&self) -> FakeRepo {
        let whole = read(&self.tiny, "model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&whole).unwrap();
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let half = tensors.len() / 2;
        let mut files = BTreeMap::new();
        let mut weight_map = serde_json::Map::new();
        for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
            let name = format!("model-{:05}-of-00002.safetensors", i + 1);
            for (k, _) in part {
                weight_map.insert(k.clone(), Value::String(name.clone()));
            }
            let bytes =
                safetensors::serialize(part.iter().map(|(k, v)| (k.as_str(), v)), None).unwrap();
            files.insert(name, bytes);
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        files.insert(
            "model.safetensors.index.json".to_string(),
            serde_json::to_vec(&index).unwrap(),
        );
        files.insert("config.json".to_string(), read(&self.tiny, "config.json"));
        for f in [
            "sentencepiece.bpe.model",
            "tokenizer_config.json",
            "preprocessor_config.json",
        ] {
            files.insert(f.to_string(), read(&self.processor, f));
        }
        FakeRepo {
            id: "kosmos2-rs/tiny-sharded".to_string(),
            commit: SHARDED_COMMIT.to_string(),
            files,
        }
    }
}

/// Runs the binary with a clean hub environment plus `env`.
fn kosmos2(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kosmos2"));
    cmd.args(args);
    for k in [
        "RUST_BACKTRACE",
        "KOSMOS2_MODEL",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run kosmos2")
}

fn ok_json(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let mut v: Value = serde_json::from_str(stdout.lines().next().expect("one line"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    // Timings differ from run to run; everything else must be identical.
    if let Some(o) = v.as_object_mut() {
        o.remove("timing");
    }
    v
}

fn error_line(out: &Output) -> String {
    let err = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "stdout not empty: {err}");
    // The download announcement may precede an error found during the download (a missing
    // file); the error itself is one line.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("downloading "))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    println!("{}", lines[0]);
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    lines[0].to_string()
}

fn contains(s: &str, parts: &[&str]) {
    for p in parts {
        assert!(s.contains(p), "{p:?} not in {s:?}");
    }
}

const CAPTION: [&str; 6] = ["--json", "--ids", "--max-new-tokens", "4", "--threads", "1"];

#[test]
fn hub_download_matches_the_folder_then_runs_from_the_cache() {
    let Some(fx) = fixture("hub_download_matches_the_folder_then_runs_from_the_cache") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_string_lossy().into_owned();
    let mut hub = FakeHub::start(vec![fx.repo()]);
    let endpoint = hub.endpoint();

    let tiny = fx.tiny.to_string_lossy().into_owned();
    let processor = fx.processor.to_string_lossy().into_owned();
    let by_dir = ok_json(&kosmos2(
        &[
            &[
                "caption",
                &fx.image,
                "--model",
                &tiny,
                "--processor",
                &processor,
            ][..],
            &CAPTION,
        ]
        .concat(),
        &[("HF_HUB_OFFLINE", "1")],
    ));

    let hub_args = [
        &["caption", &fx.image, "--model", "kosmos2-rs/tiny-realvocab"][..],
        &CAPTION,
    ]
    .concat();
    let env = [
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_TOKEN", "hf_from_env"),
    ];
    let out = kosmos2(&hub_args, &env);
    let by_hub = ok_json(&out);
    assert_eq!(by_hub, by_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    contains(
        &stderr,
        &["downloading kosmos2-rs/tiny-realvocab from http://127.0.0.1"],
    );

    // The cache is laid out as huggingface_hub does it, and every hub request carried the token.
    let repo = home.path().join("hub/models--kosmos2-rs--tiny-realvocab");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    let snap = repo.join("snapshots").join(COMMIT);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert_eq!(read(&snap, f), fx.repo().files[f], "{f}");
    }
    // tokenizer.json is there, so the sentencepiece model is not fetched.
    assert!(!snap.join("sentencepiece.bpe.model").exists());
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.path.starts_with("/cdn/")), "{seen:?}");
    for s in seen.iter().filter(|s| s.path.contains("/resolve/")) {
        assert_eq!(s.auth.as_deref(), Some("Bearer hf_from_env"), "{}", s.path);
    }

    // The server is gone: a complete cache needs no network, with or without HF_HUB_OFFLINE.
    hub.stop();
    let n = seen.len();
    assert_eq!(ok_json(&kosmos2(&hub_args, &env)), by_dir);
    let offline = [
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    assert_eq!(ok_json(&kosmos2(&hub_args, &offline)), by_dir);
    // A pinned commit is found by its snapshot.
    let pinned = format!("kosmos2-rs/tiny-realvocab@{COMMIT}");
    let out = kosmos2(
        &[&["caption", &fx.image, "--model", &pinned][..], &CAPTION].concat(),
        &offline,
    );
    assert_eq!(ok_json(&out), by_dir);
    assert_eq!(hub.seen().len(), n);

    // `process` takes a hub id too (only the processor files are needed).
    let process = |model: &str| {
        let out = kosmos2(
            &[
                "process",
                "--model",
                model,
                "--text",
                "<grounding> A photo of",
            ],
            &offline,
        );
        ok_json(&out)
    };
    assert_eq!(process("kosmos2-rs/tiny-realvocab"), process(&processor));
}

#[test]
fn hub_sharded_weights_sentencepiece_and_the_token_file() {
    let Some(fx) = fixture("hub_sharded_weights_sentencepiece_and_the_token_file") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
    let home_s = home.path().to_string_lossy().into_owned();
    let hub = FakeHub::start(vec![fx.sharded_repo()]);
    let endpoint = hub.endpoint();
    let env = [
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];

    let tiny = fx.tiny.to_string_lossy().into_owned();
    let processor = fx.processor.to_string_lossy().into_owned();
    let by_dir = ok_json(&kosmos2(
        &[
            &[
                "caption",
                &fx.image,
                "--model",
                &tiny,
                "--processor",
                &processor,
            ][..],
            &CAPTION,
        ]
        .concat(),
        &[("HF_HUB_OFFLINE", "1")],
    ));

    // `process` needs only the processor files: no weights are fetched. The repo's only
    // tokenizer is the sentencepiece model, which must tokenize as tokenizer.json does.
    let text = "<grounding><phrase> a dog</phrase> on grass";
    let process = |model: &str, env: &[(&str, &str)]| {
        ok_json(&kosmos2(
            &["process", "--model", model, "--text", text],
            env,
        ))
    };
    assert_eq!(
        process("kosmos2-rs/tiny-sharded", &env),
        process(&processor, &[])
    );
    assert!(hub.seen().iter().all(|s| !s.path.contains(".safetensors")));
    let got = kosmos2(
        &[
            "postprocess",
            "--model",
            "kosmos2-rs/tiny-sharded",
            "--text",
            text,
        ],
        &[("HF_HOME", home_s.as_str()), ("HF_HUB_OFFLINE", "1")],
    );
    assert_eq!(
        ok_json(&got),
        ok_json(&kosmos2(&["postprocess", "--text", text], &[]))
    );

    let args = [
        &[
            "caption",
            &fx.image,
            "--model",
            "kosmos2-rs/tiny-sharded@main",
        ][..],
        &CAPTION,
    ]
    .concat();
    assert_eq!(ok_json(&kosmos2(&args, &env)), by_dir);

    let repo = home.path().join("hub/models--kosmos2-rs--tiny-sharded");
    let snap = repo.join("snapshots").join(SHARDED_COMMIT);
    for f in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "sentencepiece.bpe.model",
    ] {
        assert!(snap.join(f).is_file(), "{f}");
    }
    // The files the repo lacks are recorded, so the cache counts as complete.
    let no_exist = repo.join(".no_exist").join(SHARDED_COMMIT);
    for f in [
        "tokenizer.json",
        "special_tokens_map.json",
        "model.safetensors",
    ] {
        assert!(no_exist.join(f).is_file(), "{f}");
    }
    let seen = hub.seen();
    assert!(seen.iter().any(|s| s.path.contains("/resolve/")));
    for s in seen.iter().filter(|s| s.path.contains("/resolve/")) {
        assert_eq!(s.auth.as_deref(), Some("Bearer hf_from_file"), "{}", s.path);
    }
    drop(hub);
    let offline = [("HF_HOME", home_s.as_str()), ("HF_HUB_OFFLINE", "1")];
    assert_eq!(ok_json(&kosmos2(&args, &offline)), by_dir);
}

#[test]
fn hub_errors_are_one_line() {
    let Some(fx) = fixture("hub_errors_are_one_line") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_string_lossy().into_owned();
    let mut no_weights = fx.repo();
    no_weights.id = "kosmos2-rs/no-weights".to_string();
    no_weights.files.remove("model.safetensors");
    let hub = FakeHub::start(vec![fx.repo(), no_weights]);
    let endpoint = hub.endpoint();
    let env = [
        ("HF_HOME", home_s.as_str()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    let caption = |model: &str, env: &[(&str, &str)]| {
        error_line(&kosmos2(&["caption", &fx.image, "--model", model], env))
    };

    // No network: the message says how to do without it.
    let refused = refused_endpoint();
    let err = caption(
        "kosmos2-rs/tiny-realvocab",
        &[("HF_HOME", &home_s), ("HF_ENDPOINT", &refused)],
    );
    contains(
        &err,
        &[
            "cannot reach the Hugging Face hub",
            &refused,
            "--model DIR",
            "HF_ENDPOINT",
            "HF_HUB_OFFLINE",
        ],
    );
    // Nothing else on stderr: the download announcement waits for the hub's first answer.
    let out = kosmos2(
        &[
            "generate",
            &fx.image,
            "--prompt",
            "<grounding> A",
            "--model",
            "a/b",
        ],
        &[("HF_HOME", &home_s), ("HF_ENDPOINT", &refused)],
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let err = caption(
        "a/b",
        &[("HF_HOME", &home_s), ("HF_ENDPOINT", "hub.example")],
    );
    contains(
        &err,
        &["HF_ENDPOINT=\"hub.example\" is not an http:// or https:// URL"],
    );
    // The default model, too.
    let out = kosmos2(
        &["caption", &fx.image],
        &[("HF_HOME", &home_s), ("HF_ENDPOINT", &refused)],
    );
    contains(
        &error_line(&out),
        &[
            "microsoft/kosmos-2-patch14-224",
            "cannot reach",
            "--model DIR",
        ],
    );

    // Unknown repo (401 as the hub answers without a token) and unknown revision (404).
    let err = caption("someone/no-such-model", &env);
    contains(
        &err,
        &[
            "someone/no-such-model",
            "no such model on the hub",
            "HTTP 401",
            "HF_TOKEN",
        ],
    );
    let err = caption("kosmos2-rs/tiny-realvocab@v9", &env);
    contains(
        &err,
        &["kosmos2-rs/tiny-realvocab@v9", "HTTP 404", "revision"],
    );

    // A gated model without access, and an endpoint that is not a hub.
    let err = caption("someone/gated", &env);
    contains(
        &err,
        &["someone/gated", "refuses access (HTTP 403)", "HF_TOKEN"],
    );
    // A redirect without `Location` (hf-hub would panic on it): a one-line error, no panic.
    let err = caption("someone/no-location", &env);
    contains(&err, &["someone/no-location", "broke the hub client"]);
    let not_hub = format!("{endpoint}/not-a-hub");
    let err = caption(
        "kosmos2-rs/tiny-realvocab",
        &[("HF_HOME", &home_s), ("HF_ENDPOINT", &not_hub)],
    );
    contains(&err, &["does not answer like the Hugging Face hub"]);

    // A repo without safetensors weights.
    let err = caption("kosmos2-rs/no-weights", &env);
    contains(
        &err,
        &[
            "kosmos2-rs/no-weights on the hub has no model.safetensors",
            "safetensors",
        ],
    );

    // Offline without the model in the cache.
    let err = caption(
        "kosmos2-rs/tiny-realvocab",
        &[("HF_HOME", &home_s), ("HF_HUB_OFFLINE", "1")],
    );
    contains(
        &err,
        &[
            "HF_HUB_OFFLINE is set",
            "kosmos2-rs/tiny-realvocab",
            "not complete in the local Hugging Face cache",
            "--model DIR",
        ],
    );
    // A folder that does not exist and is no hub id.
    let err = caption("./no/such/dir", &env);
    contains(&err, &["./no/such/dir", "model directory not found"]);
    // Not a single request to the unknown-repo paths went anywhere but the fake hub.
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.path.starts_with("/someone/no-such-model/resolve/main/")));
}
