//! The generation and run flags through the binary: `--min-new-tokens` and the end-of-text token
//! equal HF `generate`, `--sample` with its knobs is reproducible for a seed, `--dtype`,
//! `--threads`, a normalised `--box`, and the timing summary on stderr.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{case, env, Env};

impl Env {
    fn run_with(&self, model: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kosmos2"))
            .args(args)
            .arg("--model")
            .arg(model)
            .arg("--processor")
            .arg(&self.processor)
            .env_remove("RUST_BACKTRACE")
            .env_remove("KOSMOS2_MODEL")
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run kosmos2")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.model, args)
    }
}

fn records(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// HF pads a row that ended early with pad tokens (1) up to the batch's length; the CLI gives
/// each image its own sequence.
fn without_padding(seq: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = seq
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    while ids.last() == Some(&1) {
        ids.pop();
    }
    ids
}

/// HF's `greedy_eos` and `greedy_min_new` cases use end-of-text id 31312 (so that the tiny model
/// stops early): the same model with that id in its config.json gives the same ids, and
/// `--min-new-tokens 6` holds the end off as HF does.
#[test]
fn eos_and_min_new_tokens_equal_hf() {
    let Some(e) = env("eos_and_min_new_tokens_equal_hf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(e.model.join("config.json")).unwrap())
            .unwrap();
    config["text_config"]["eos_token_id"] = 31312.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for f in ["model.safetensors", "generation_config.json"] {
        std::fs::copy(e.model.join(f), dir.path().join(f)).unwrap();
    }
    for (name, min_new, row0_new) in [("greedy_eos", "0", 4), ("greedy_min_new", "6", 7)] {
        let c = case(name);
        let out = e.run_with(
            dir.path(),
            &[
                "caption",
                &e.image("snowman.jpg"),
                &e.image("two_dogs.jpg"),
                "--json",
                "--ids",
                "--max-new-tokens",
                "16",
                "--min-new-tokens",
                min_new,
                "--batch-size",
                "2",
            ],
        );
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        for (row, rec) in recs.iter().enumerate() {
            let got: Vec<u64> = serde_json::from_value(rec["generated_ids"].clone()).unwrap();
            assert_eq!(
                got,
                without_padding(&c["sequences"][row]),
                "{name} row {row}"
            );
        }
        assert_eq!(recs[0]["finish_reason"], "eos", "{name}");
        assert_eq!(recs[0]["timing"]["new_tokens"], row0_new, "{name}");
        assert_eq!(recs[1]["finish_reason"], "max_new_tokens", "{name}");
    }
}

/// Sampling: the same seed gives the same ids, other seeds other ids; the knobs are accepted.
#[test]
fn sampling_is_reproducible_for_a_seed() {
    let Some(e) = env("sampling_is_reproducible_for_a_seed") else {
        return;
    };
    let img = e.image("corgi.jpg");
    let sample = |seed: &str| -> Value {
        let out = e.run(&[
            "caption",
            &img,
            "--json",
            "--ids",
            "--max-new-tokens",
            "8",
            "--no-repeat-ngram-size",
            "0",
            "--sample",
            "--temperature",
            "1.5",
            "--top-k",
            "50",
            "--top-p",
            "0.98",
            "--seed",
            seed,
        ]);
        records(&out).remove(0)["generated_ids"].clone()
    };
    let first = sample("7");
    assert_eq!(sample("7"), first);
    let others: Vec<Value> = ["1", "2", "3"].iter().map(|s| sample(s)).collect();
    assert!(others.iter().any(|o| *o != first), "{first}");
    // Greedy decoding is the argmax path: sampling at a tiny temperature with top-k 1 is greedy.
    let greedy = records(&e.run(&[
        "caption",
        &img,
        "--json",
        "--ids",
        "--max-new-tokens",
        "8",
        "--no-repeat-ngram-size",
        "0",
    ]))
    .remove(0)["generated_ids"]
        .clone();
    let top1 = records(&e.run(&[
        "caption",
        &img,
        "--json",
        "--ids",
        "--max-new-tokens",
        "8",
        "--no-repeat-ngram-size",
        "0",
        "--sample",
        "--top-k",
        "1",
        "--seed",
        "5",
    ]))
    .remove(0)["generated_ids"]
        .clone();
    assert_eq!(top1, greedy);
}

/// `--threads 1` changes nothing; `--dtype bf16`/`f16` run the same prompt (reduced precision:
/// the ids are not compared); a normalised `--box`; the summary line on stderr.
#[test]
fn dtype_threads_box_and_the_timing_summary() {
    let Some(e) = env("dtype_threads_box_and_the_timing_summary") else {
        return;
    };
    let img = e.image("two_dogs.jpg");
    let base = [
        "refer",
        img.as_str(),
        "--box",
        "0.1,0.1,0.5,0.9",
        "--json",
        "--ids",
        "--max-new-tokens",
        "3",
        "--min-new-tokens",
        "3",
    ];
    let out = e.run(&base);
    let f32_rec = records(&out).remove(0);
    assert_eq!(f32_rec["bbox"], serde_json::json!([0.1, 0.1, 0.5, 0.9]));
    assert_eq!(f32_rec["entities"][0][0], "It");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stderr.lines().last().unwrap_or_default();
    for part in [
        "load ",
        "1 image in",
        "images/s",
        "encode",
        "prefill",
        "tokens/s",
    ] {
        assert!(summary.contains(part), "{part:?} not in {summary:?}");
    }

    let one_thread = records(&e.run(&[&base[..], &["--threads", "1"]].concat())).remove(0);
    assert_eq!(one_thread["generated_ids"], f32_rec["generated_ids"]);
    let prompt_len = f32_rec["generated_ids"].as_array().unwrap().len() - 3;
    for dtype in ["bf16", "f16"] {
        let rec = records(&e.run(&[&base[..], &["--dtype", dtype]].concat())).remove(0);
        let ids = rec["generated_ids"].as_array().unwrap();
        assert_eq!(ids.len(), prompt_len + 3, "{dtype}");
        assert_eq!(
            ids[..prompt_len],
            f32_rec["generated_ids"].as_array().unwrap()[..prompt_len]
        );
    }
}
