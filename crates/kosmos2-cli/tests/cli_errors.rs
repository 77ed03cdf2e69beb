//! Every error a newcomer can hit: one line on stderr that says what to do, exit code 1, no
//! backtrace, nothing on stdout.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::Command;

/// Runs the binary and returns its single stderr line, checking the error conventions.
fn error_line(args: &[&str]) -> String {
    // An empty HF cache, whatever the machine has, and no network (the hub path is tested
    // against a loopback server in cli_hub.rs).
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kosmos2"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("KOSMOS2_MODEL")
        .env_remove("HF_HOME")
        .env_remove("HF_ENDPOINT")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .expect("run kosmos2");
    let err = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout not empty");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

fn tiny() -> String {
    common::fixtures_dir()
        .join("models/tiny-realvocab")
        .to_string_lossy()
        .into_owned()
}

struct Paths {
    image: String,
    processor: String,
}

fn paths(test: &str) -> Option<Paths> {
    let assets = common::assets_dir(test)?;
    Some(Paths {
        image: common::image_path(&assets, "corgi.jpg")
            .to_string_lossy()
            .into_owned(),
        processor: assets
            .join("kosmos-2-patch14-224")
            .to_string_lossy()
            .into_owned(),
    })
}

fn contains(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "{p:?} not in {err:?}");
    }
}

#[test]
fn model_directory_errors() {
    let Some(p) = paths("model_directory_errors") else {
        return;
    };
    let err = error_line(&["caption", &p.image]);
    contains(
        &err,
        &[
            "HF_HUB_OFFLINE is set and microsoft/kosmos-2-patch14-224 is not complete in the local Hugging Face cache",
            "--model DIR",
        ],
    );
    let err = error_line(&["caption", &p.image, "--model", "someone/fine-tune"]);
    contains(
        &err,
        &["someone/fine-tune is not complete in the local Hugging Face cache"],
    );

    let err = error_line(&["caption", &p.image, "--model", "/no/such/model"]);
    contains(&err, &["/no/such/model", "model directory not found"]);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_string_lossy().into_owned();
    let err = error_line(&["caption", &p.image, "--model", &d]);
    contains(&err, &["config.json is missing"]);

    std::fs::copy(
        PathBuf::from(tiny()).join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let err = error_line(&["caption", &p.image, "--model", &d]);
    contains(&err, &["weights are missing", "model.safetensors"]);

    // A corrupt and a truncated safetensors file.
    std::fs::write(
        dir.path().join("model.safetensors"),
        "garbage, not safetensors",
    )
    .unwrap();
    let err = error_line(&[
        "caption",
        &p.image,
        "--model",
        &d,
        "--processor",
        &p.processor,
    ]);
    contains(&err, &["cannot load the model", "model.safetensors"]);
    let real = std::fs::read(PathBuf::from(tiny()).join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &real[..real.len() / 2],
    )
    .unwrap();
    let err = error_line(&[
        "caption",
        &p.image,
        "--model",
        &d,
        "--processor",
        &p.processor,
    ]);
    contains(&err, &["cannot load the model", "truncated"]);

    // The tiny model has no tokenizer files: the message says to pass --processor.
    let err = error_line(&["caption", &p.image, "--model", &tiny()]);
    contains(&err, &["--processor DIR", "tokenizer_config.json"]);

    let err = error_line(&["process", "--model", "/no/such/model", "--text", "hi"]);
    contains(&err, &["model directory not found"]);
}

#[test]
fn image_errors() {
    let Some(p) = paths("image_errors") else {
        return;
    };
    let m = ["--model", &tiny(), "--processor", &p.processor];
    let dir = tempfile::tempdir().unwrap();

    let missing = dir
        .path()
        .join("missing.jpg")
        .to_string_lossy()
        .into_owned();
    let mut a = vec!["caption", &missing];
    a.extend_from_slice(&m);
    contains(&error_line(&a), &["missing.jpg", "no such file or folder"]);

    let bad = dir.path().join("bad.jpg");
    std::fs::write(&bad, "this is text, not a JPEG").unwrap();
    let bad = bad.to_string_lossy().into_owned();
    let mut a = vec!["caption", &bad];
    a.extend_from_slice(&m);
    contains(
        &error_line(&a),
        &["bad.jpg", "unreadable or unsupported image"],
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let empty = empty.to_string_lossy().into_owned();
    let mut a = vec!["caption", &empty];
    a.extend_from_slice(&m);
    contains(&error_line(&a), &["no image found"]);

    let err = error_line(&[
        "process",
        "--model",
        &p.processor,
        "--text",
        "hi",
        "--image",
        &bad,
    ]);
    contains(&err, &["bad.jpg"]);
}

#[test]
fn box_errors() {
    let Some(p) = paths("box_errors") else {
        return;
    };
    let m = ["--model", &tiny(), "--processor", &p.processor];
    let run = |extra: &[&str]| {
        let mut a = vec!["refer", p.image.as_str()];
        a.extend_from_slice(extra);
        a.extend_from_slice(&m);
        error_line(&a)
    };
    contains(
        &run(&["--box", "1,2,3"]),
        &["--box", "four comma-separated numbers"],
    );
    contains(&run(&["--box", "0.5,0.1,0.4,0.9"]), &["x2 > x1"]);
    contains(&run(&["--box", "0.1,0.1,1.5,0.9"]), &["outside [0, 1]"]);
    contains(
        &run(&["--box", "0,0,5000,10", "--pixels"]),
        &["outside [0, 1]"],
    );

    let process = |text: &str, bboxes: &str| {
        error_line(&[
            "process",
            "--model",
            &p.processor,
            "--text",
            text,
            "--bboxes",
            bboxes,
        ])
    };
    contains(
        &process("<phrase> a</phrase> b", "[[0, 0, 1, 1]]"),
        &["4 floats", "write 0.0, not 0"],
    );
    contains(
        &process("<phrase> a</phrase> b", "[0.1"),
        &["not valid JSON"],
    );
    contains(
        &process("<phrase> a</phrase> b", "[null, null]"),
        &["1 <phrase>...</phrase> pairs but 2 box entries"],
    );
    contains(
        &process("<phrase> a</phrase> b", "[[0.9, 0.1, 0.1, 0.9]]"),
        &["x2 > x1"],
    );
}

#[test]
fn prompt_task_and_device_errors() {
    let Some(p) = paths("prompt_task_and_device_errors") else {
        return;
    };
    let m = ["--model", &tiny(), "--processor", &p.processor];
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&m);
        error_line(&a)
    };
    let long = "word ".repeat(2100);
    contains(
        &run(&["generate", &p.image, "--prompt", &long]),
        &["exceeds the model's 2048 positions"],
    );
    contains(
        &run(&["ground", &p.image, "--phrase", "  "]),
        &["phrase is empty"],
    );
    contains(
        &run(&["ground", &p.image, "--phrase", "a</phrase>b"]),
        &["must not contain"],
    );
    contains(
        &run(&["caption", &p.image, "--max-new-tokens", "0"]),
        &["max_new_tokens must be at least 1"],
    );
    contains(
        &run(&["caption", &p.image, "--stream", "--num-beams", "2"]),
        &["--stream"],
    );
    let other = p.image.replace("corgi.jpg", "snowman.jpg");
    contains(
        &run(&["caption", &p.image, &other, "--annotate", "/tmp/x.png"]),
        &["--draw OUT_DIR"],
    );
    contains(
        &run(&["caption", &p.image, "--device", "cuda"]),
        &["--device cuda is not available"],
    );
    contains(
        &run(&["caption", &p.image, "--batch-size", "0"]),
        &["--batch-size must be at least 1"],
    );
    contains(
        &run(&["caption", &p.image, "--stream", "--batch-size", "2"]),
        &["--stream prints one image at a time"],
    );
}
