//! `kosmos2 process` and `kosmos2 postprocess` (the binary) against HF's processor fixtures and
//! the library.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use kosmos_processor::{ImageInput, Kosmos2Processor, ProcessOptions, ProcessorInput};
use serde_json::Value;

fn kosmos2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kosmos2"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run kosmos2")
}

fn json_stdout(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    assert_eq!(s.lines().count(), 1, "one JSON object on one line");
    serde_json::from_str(&s).expect("JSON stdout")
}

fn fixture(rel: &str) -> Value {
    let p = common::fixtures_dir().join(rel);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("fixture JSON")
}

fn image_arg(assets: &Path, name: &str) -> String {
    match name.strip_prefix("generated/") {
        Some(rest) => common::fixtures_dir()
            .join("processor/generated")
            .join(rest)
            .to_string_lossy()
            .into_owned(),
        None => common::image_path(assets, name)
            .to_string_lossy()
            .into_owned(),
    }
}

/// Single-string prompts.json cases whose options the CLI has (a sample: every 15th, plus every
/// other case with boxes and an image).
#[test]
fn process_matches_hf_prompt_fixtures() {
    let Some(assets) = common::assets_dir("process_matches_hf_prompt_fixtures") else {
        return;
    };
    let model = assets.join("kosmos-2-patch14-224");
    let model = model.to_string_lossy();
    let cases = fixture("processor/prompts.json");
    let mut checked = 0;
    for (i, c) in cases["cases"].as_array().unwrap().iter().enumerate() {
        let kwargs = c["kwargs"].as_object().unwrap();
        if c["single"] != true
            || kwargs
                .keys()
                .any(|k| k != "add_special_tokens" && k != "add_eos_token")
        {
            continue;
        }
        // A NUL cannot be passed on a command line.
        if c["text"].as_str().is_some_and(|t| t.contains('\0')) {
            continue;
        }
        let with_boxes_and_image = !c["bboxes"].is_null() && !c["images"].is_null();
        if i % 15 != 0 && !(with_boxes_and_image && i % 2 == 0) {
            continue;
        }
        let mut args = vec!["process".to_string(), "--model".into(), model.to_string()];
        args.extend(["--text".into(), c["text"].as_str().unwrap().to_string()]);
        if let Some(img) = c["images"].as_array() {
            args.extend([
                "--image".into(),
                image_arg(&assets, img[0].as_str().unwrap()),
            ]);
        }
        if !c["bboxes"].is_null() {
            args.extend(["--bboxes".into(), c["bboxes"].to_string()]);
        }
        if kwargs.get("add_eos_token") == Some(&Value::Bool(true)) {
            args.push("--add-eos-token".into());
        }
        if kwargs.get("add_special_tokens") == Some(&Value::Bool(false)) {
            args.push("--no-special-tokens".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = json_stdout(&kosmos2(&argv));
        let name = c["name"].as_str().unwrap();
        let exp = &c["expected"];
        assert_eq!(got["input_ids"], exp["input_ids"][0], "{name}");
        assert_eq!(got["attention_mask"], exp["attention_mask"][0], "{name}");
        if c["images"].is_null() {
            assert!(got.get("image_embeds_position_mask").is_none(), "{name}");
            assert!(got.get("pixel_values").is_none(), "{name}");
        } else {
            assert_eq!(
                got["image_embeds_position_mask"], exp["image_embeds_position_mask"][0],
                "{name}"
            );
            assert_eq!(
                got["pixel_values_shape"],
                serde_json::json!([1, 3, 224, 224])
            );
            assert_eq!(got["pixel_values"].as_array().unwrap().len(), 3 * 224 * 224);
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} cases checked");
}

/// Pixel values on stdout are HF's f32 values bit for bit, and the library's.
#[test]
fn process_pixel_values_are_hf_and_library_exact() {
    let Some(assets) = common::assets_dir("process_pixel_values_are_hf_and_library_exact") else {
        return;
    };
    let model = assets.join("kosmos-2-patch14-224");
    let img = common::image_path(&assets, "two_dogs.jpg");
    let got = json_stdout(&kosmos2(&[
        "process",
        "--model",
        &model.to_string_lossy(),
        "--text",
        "<grounding>An image of",
        "--image",
        &img.to_string_lossy(),
    ]));
    let px: Vec<f32> = got["pixel_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();

    let bytes = std::fs::read(common::fixtures_dir().join("processor/pixels.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("two_dogs.jpg").unwrap();
    let want: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(px.len(), want.len());
    assert!(
        px.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "pixel_values differ from HF's"
    );

    let p = Kosmos2Processor::from_dir(&model).unwrap();
    let lib = p
        .process_single(
            &ProcessorInput::text("<grounding>An image of").with_image(ImageInput::Path(img)),
            &ProcessOptions::default(),
        )
        .unwrap();
    let lib_px: Vec<f32> = lib.pixel_values.unwrap().array().iter().copied().collect();
    assert_eq!(px, lib_px);
    assert_eq!(got["input_ids"], serde_json::json!(lib.input_ids[0]));
}

/// Box inputs HF rejects are rejected with a one-line message and exit code 1.
#[test]
fn process_rejects_what_hf_rejects() {
    let Some(model) = common::real_model_dir("process_rejects_what_hf_rejects") else {
        return;
    };
    let model = model.to_string_lossy();
    let errors = fixture("processor/errors.json");
    let mut checked = 0;
    for r in errors["rejected"].as_array().unwrap() {
        let representable = r["call"] == "processor"
            && r["single"] == true
            && r["text"].is_string()
            && r["images"].is_null()
            && !r["bboxes"].is_null()
            && !r["bboxes"].to_string().contains('"')
            // JSON cannot tell HF's empty tuple (a bad box) from an empty list (no box).
            && !r["bboxes_repr"].as_str().unwrap_or("").contains("()");
        if !representable {
            continue;
        }
        let out = kosmos2(&[
            "process",
            "--model",
            &model,
            "--text",
            r["text"].as_str().unwrap(),
            "--bboxes",
            &r["bboxes"].to_string(),
        ]);
        let name = r["name"].as_str().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.starts_with("error: "), "{name}: {err}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} rejections checked");
}

/// `postprocess` equals HF's `post_process_generation` on the fixtures' texts (every 3rd
/// generated case and every hand-written one, skipping those HF itself raises on).
#[test]
fn postprocess_matches_hf() {
    let pp = fixture("processor/postprocess.json");
    let mut checked = 0;
    for (i, g) in pp["generation"].as_array().unwrap().iter().enumerate() {
        let name = g["name"].as_str().unwrap();
        if i % 3 != 0 && !name.starts_with("hand:") {
            continue;
        }
        let text = g["text"].as_str().unwrap();
        let raw = json_stdout(&kosmos2(&["postprocess", "--text", text, "--no-cleanup"]));
        assert_eq!(raw, serde_json::json!({"text": g["caption"]}), "{name}");
        if g.get("entities").is_none_or(Value::is_null) {
            continue;
        }
        let got = json_stdout(&kosmos2(&["postprocess", "--text", text]));
        assert_eq!(got["caption"], g["clean_text"], "{name}");
        assert_eq!(got["entities"], g["entities"], "{name}");
        checked += 1;
    }
    assert!(checked >= 200, "only {checked} cases checked");
}

#[test]
fn postprocess_with_the_real_model_dir() {
    let Some(model) = common::real_model_dir("postprocess_with_the_real_model_dir") else {
        return;
    };
    let text = "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>\
                <patch_index_0863></object>.";
    let got = json_stdout(&kosmos2(&[
        "postprocess",
        "--text",
        text,
        "--model",
        &model.to_string_lossy(),
    ]));
    let lib = kosmos_processor::post_process_generation(text, true).unwrap();
    assert_eq!(got["caption"], lib.caption);
    assert_eq!(
        got["entities"],
        serde_json::to_value(&lib.entities).unwrap()
    );
    assert_eq!(got["entities"][0][2][0][0], 0.390625);
}
