//! `kosmos2 quantize` and `--dtype int8` / `int8-bf16` through the binary: the quantised folder is
//! a complete model folder whose captions equal the source's at `--dtype int8` (load-time
//! quantisation is the same arithmetic; at bf16 it equals `--dtype int8-bf16`), and bad arguments
//! fail with one line.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{env, stdout_ok as ok};

fn kosmos2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kosmos2"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("KOSMOS2_MODEL")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run kosmos2")
}

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kosmos2-cli-q-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn caption(model: &Path, processor: &Path, image: &str, dtype: &str) -> Value {
    let out = kosmos2(&[
        "caption",
        image,
        "--model",
        model.to_str().unwrap(),
        "--processor",
        processor.to_str().unwrap(),
        "--dtype",
        dtype,
        "--json",
        "--ids",
        "--max-new-tokens",
        "12",
    ]);
    serde_json::from_str(ok(&out).trim()).unwrap()
}

#[test]
fn quantized_folder_captions_like_dtype_int8() {
    let Some(e) = env("quantized_folder_captions_like_dtype_int8") else {
        return;
    };
    let out_dir = temp("ok");
    let out = kosmos2(&[
        "quantize",
        "--model",
        e.model_arg(),
        "--output",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(ok(&out).trim(), out_dir.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quantised 13 weights"), "{stderr}");
    // Every non-weights file of the source folder is there (the fixture's reference tensors are
    // `.safetensors` files, which are not copied).
    for entry in std::fs::read_dir(&e.model).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let copied = out_dir.join(&name).is_file();
        assert_eq!(
            copied,
            !name.ends_with(".safetensors") || name == "model.safetensors",
            "{name}"
        );
    }

    let img = e.image("snowman.jpg");
    let int8 = caption(&e.model, &e.processor, &img, "int8");
    let saved = caption(&out_dir, &e.processor, &img, "f32");
    let saved_int8 = caption(&out_dir, &e.processor, &img, "int8");
    assert_eq!(saved["generated_ids"], int8["generated_ids"]);
    assert_eq!(saved_int8["generated_ids"], int8["generated_ids"]);
    assert_eq!(saved["text"], int8["text"]);
    // `--dtype int8-bf16`: the same int8 weights, the rest in bf16 (as the file loaded at bf16).
    let int8_bf16 = caption(&e.model, &e.processor, &img, "int8-bf16");
    let saved_bf16 = caption(&out_dir, &e.processor, &img, "bf16");
    assert_eq!(saved_bf16["generated_ids"], int8_bf16["generated_ids"]);
    assert!(int8_bf16["generated_ids"].is_array(), "{int8_bf16}");
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn quantize_errors_are_one_line() {
    let Some(e) = env("quantize_errors_are_one_line") else {
        return;
    };
    let missing = temp("missing-src");
    let cases: [(Vec<&str>, &str); 3] = [
        (
            vec![
                "quantize",
                "--model",
                e.model_arg(),
                "--output",
                e.model_arg(),
            ],
            "source directory",
        ),
        (
            vec![
                "quantize",
                "--model",
                missing.to_str().unwrap(),
                "--output",
                "/tmp/unused",
            ],
            "",
        ),
        (vec!["quantize", "--model", e.model_arg()], "--output"),
    ];
    for (args, needle) in cases {
        let out = kosmos2(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
