//! The task subcommands (the binary) on the tiny real-vocabulary model with the real processor
//! and the shared photos: ids equal HF `generate`, folders, shards, resume, annotated PNGs.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::{case, env, stdout_ok as ok, Env};

impl Env {
    /// Runs `kosmos2 SUBCOMMAND ARGS... --model tiny-realvocab --processor real`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kosmos2"))
            .args(args)
            .args([
                "--model",
                self.model_arg(),
                "--processor",
                self.processor_arg(),
            ])
            .env_remove("RUST_BACKTRACE")
            .env_remove("KOSMOS2_MODEL")
            .output()
            .expect("run kosmos2")
    }
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Each row of the case must equal the CLI's record for that image, field by field.
fn assert_rows_equal_hf(case: &Value, records: &[Value], rows: &[usize]) {
    let name = case["name"].as_str().unwrap();
    for (rec, &row) in records.iter().zip(rows) {
        assert_eq!(
            rec["generated_ids"], case["sequences"][row],
            "{name} row {row}"
        );
        assert_eq!(rec["text"], case["decoded"][row], "{name} row {row}");
        let pp = &case["post_processed"][row];
        assert_eq!(rec["caption"], pp["caption"], "{name} row {row}");
        assert_eq!(rec["entities"], pp["entities"], "{name} row {row}");
    }
}

#[test]
fn caption_ids_equal_hf_generate_greedy_and_ngram() {
    let Some(e) = env("caption_ids_equal_hf_generate_greedy_and_ngram") else {
        return;
    };
    // One image at a time, and both in one batch (HF's own batch of two).
    for (case, ngram, batch) in [
        ("greedy_ngram0", "0", "1"),
        ("greedy_ngram3", "3", "1"),
        ("greedy_ngram3", "3", "2"),
    ] {
        let out = e.run(&[
            "caption",
            &e.image("snowman.jpg"),
            &e.image("two_dogs.jpg"),
            "--json",
            "--ids",
            "--max-new-tokens",
            "16",
            "--no-repeat-ngram-size",
            ngram,
            "--batch-size",
            batch,
        ]);
        let recs = json_lines(&ok(&out));
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["prompt"], "<grounding>An image of");
        assert_eq!(recs[0]["finish_reason"], "max_new_tokens");
        assert_eq!(recs[0]["timing"]["new_tokens"], 16);
        assert_eq!(
            recs[1]["timing"]["batch_size"],
            batch.parse::<u64>().unwrap()
        );
        assert_rows_equal_hf(&support::case(case), &recs, &[0, 1]);
    }
}

#[test]
fn beam_search_and_detailed_caption_equal_hf() {
    let Some(e) = env("beam_search_and_detailed_caption_equal_hf") else {
        return;
    };
    let out = e.run(&[
        "caption",
        &e.image("snowman.jpg"),
        &e.image("two_dogs.jpg"),
        "--json",
        "--ids",
        "--num-beams",
        "3",
        "--max-new-tokens",
        "12",
        "--no-repeat-ngram-size",
        "0",
    ]);
    assert_rows_equal_hf(&case("beam3"), &json_lines(&ok(&out)), &[0, 1]);

    // HF's row alone: the detailed prompt on two_dogs.jpg.
    let out = e.run(&[
        "caption",
        &e.image("two_dogs.jpg"),
        "--detailed",
        "--json",
        "--ids",
        "--max-new-tokens",
        "12",
        "--no-repeat-ngram-size",
        "0",
    ]);
    let recs = json_lines(&ok(&out));
    assert_eq!(
        recs[0]["prompt"],
        "<grounding> Describe this image in detail:"
    );
    assert_rows_equal_hf(&case("batch_left_pad_row1"), &recs, &[0]);
}

#[test]
fn every_task_builds_its_prompt() {
    let Some(e) = env("every_task_builds_its_prompt") else {
        return;
    };
    let img = e.image("two_dogs.jpg"); // 1200 x 602
    let common_args = ["--json", "--max-new-tokens", "3"];
    let run = |args: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(&common_args);
        json_lines(&ok(&e.run(&a))).remove(0)
    };
    let r = run(&["ground", &img, "--phrase", "a dog"]);
    assert_eq!(r["task"], "ground");
    assert_eq!(r["prompt"], "<grounding><phrase> a dog</phrase>");
    // The prompt's phrase has no box yet; the caption starts with it.
    assert!(r["caption"].as_str().unwrap().starts_with("a dog"), "{r}");

    let r = run(&["refer", &img, "--box", "120,60,600,542", "--pixels"]);
    assert_eq!(r["task"], "refer");
    assert_eq!(r["prompt"], "<grounding><phrase> It</phrase> is");
    assert_eq!(
        r["bbox"],
        json!([120.0 / 1200.0, 60.0 / 602.0, 600.0 / 1200.0, 542.0 / 602.0])
    );
    // The input box comes back as the phrase "It" with its patch-rounded box.
    assert_eq!(r["entities"][0][0], "It");
    assert_eq!(r["objects"][0]["color"], "#e6194b");

    let r = run(&["vqa", &img, "--question", "What is in the grass?"]);
    assert_eq!(
        r["prompt"],
        "<grounding> Question: What is in the grass? Answer:"
    );
    assert!(r["caption"]
        .as_str()
        .unwrap()
        .starts_with("Question: What is in the grass? Answer:"));
    assert!(r["answer"].is_string(), "{r}");

    let r = run(&["generate", &img, "--prompt", "<grounding> A photo of"]);
    assert_eq!(r["task"], "generate");
    assert!(r["generated_ids"].as_array().unwrap().len() > 70);
    for k in ["text", "caption", "entities", "timing"] {
        assert!(r.get(k).is_some(), "{k} missing from {r}");
    }
    for k in [
        "image_encode_ms",
        "prefill_ms",
        "decode_ms",
        "decode_tokens_per_s",
    ] {
        assert!(r["timing"][k].as_f64().unwrap() >= 0.0, "{k}");
    }

    // Readable output: the caption, then one line per box.
    let out = ok(&e.run(&[
        "generate",
        &img,
        "--prompt",
        "<grounding><phrase> It</phrase><object><patch_index_0044><patch_index_0863></object> is",
        "--max-new-tokens",
        "2",
    ]));
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("It is"), "{out}");
    assert!(lines.next().unwrap().contains("#e6194b \"It\""), "{out}");
}

/// The annotated PNG has each box's colour on its edges.
#[test]
fn annotated_png_has_the_box_colours_on_the_edges() {
    let Some(e) = env("annotated_png_has_the_box_colours_on_the_edges") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("out/snowman.png");
    let prompt = "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>\
                  <patch_index_0863></object> warming himself by<phrase> a fire</phrase><object>\
                  <patch_index_0005><patch_index_0911></object>";
    let out = e.run(&[
        "generate",
        &e.image("snowman.jpg"),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "1",
        "--json",
        "--annotate",
        &png.to_string_lossy(),
    ]);
    let r = json_lines(&ok(&out)).remove(0);
    assert_eq!(r["annotated"], png.to_string_lossy().as_ref());
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1024, 1024));
    let objects = r["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    let mut colours = Vec::new();
    for o in objects {
        let hex = o["color"].as_str().unwrap();
        let c = u32::from_str_radix(&hex[1..], 16).unwrap();
        let rgb = [(c >> 16) as u8, (c >> 8) as u8, c as u8];
        colours.push(rgb);
        let b: Vec<u32> = o["pixel_boxes"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let (x1, y1, x2, y2) = (b[0], b[1], b[2], b[3]);
        let (mx, my) = ((x1 + x2) / 2, (y1 + y2) / 2);
        for (x, y) in [(x1, my), (x2 - 1, my), (mx, y2 - 1), (x2 - 3, y1)] {
            assert_eq!(img.get_pixel(x, y).0, rgb, "{hex} at ({x}, {y})");
        }
    }
    assert_ne!(colours[0], colours[1]);
    // Far from every box the photo is untouched (not the box colours).
    let p = img.get_pixel(1020, 1020).0;
    assert!(!colours.contains(&p));
}

fn link_images(e: &Env, dir: &Path) {
    for (name, rel) in [
        ("snowman.jpg", "a.jpg"),
        ("two_dogs.jpg", "sub/b.jpg"),
        ("corgi.jpg", "sub/c.jpg"),
    ] {
        let dst = dir.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(e.image(name), &dst).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

/// A folder in JSON Lines, split in shards, resumed, with annotated images.
#[test]
fn folder_shards_resume_and_draw() {
    let Some(e) = env("folder_shards_resume_and_draw") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    link_images(&e, &imgs);
    let out_file = tmp.path().join("captions.jsonl");
    let draw = tmp.path().join("drawn");
    let (folder, out_s, draw_s) = (
        imgs.to_string_lossy().into_owned(),
        out_file.to_string_lossy().into_owned(),
        draw.to_string_lossy().into_owned(),
    );
    let base = ["--max-new-tokens", "2", "-o", &out_s];

    // Shard 1 of 2: images 1 (sub/b.jpg) only.
    let mut a = vec!["caption", &folder, "--shard", "1/2", "--draw", &draw_s];
    a.extend_from_slice(&base);
    let out = e.run(&a);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 1/2: 1 of 3 images"));
    let recs = json_lines(&std::fs::read_to_string(&out_file).unwrap());
    assert_eq!(recs.len(), 1);
    assert!(recs[0]["image"].as_str().unwrap().ends_with("sub/b.jpg"));
    assert!(draw.join("sub__b.png").is_file());

    // Without --resume an existing output is refused.
    let mut a = vec!["caption", &folder];
    a.extend_from_slice(&base);
    let out = e.run(&a);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // --resume does the other two.
    a.push("--resume");
    let out = e.run(&a);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("resume: 1 of 3 images already in"));
    let recs = json_lines(&std::fs::read_to_string(&out_file).unwrap());
    let mut images: Vec<&str> = recs.iter().map(|r| r["image"].as_str().unwrap()).collect();
    images.sort();
    assert_eq!(images.len(), 3);
    assert!(images[0].ends_with("a.jpg") && images[2].ends_with("sub/c.jpg"));

    // Nothing left.
    let out = e.run(&a);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
    assert_eq!(
        json_lines(&std::fs::read_to_string(&out_file).unwrap()).len(),
        3
    );

    // A glob.
    let pattern = format!("{}/sub/*.jpg", imgs.display());
    let out = ok(&e.run(&["caption", &pattern, "--json", "--max-new-tokens", "1"]));
    assert_eq!(json_lines(&out).len(), 2);
}

/// A broken image in a folder is recorded and the others still run; the exit code says so.
#[test]
fn a_broken_image_in_a_folder_does_not_stop_the_job() {
    let Some(e) = env("a_broken_image_in_a_folder_does_not_stop_the_job") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(e.image("corgi.jpg"), tmp.path().join("a.jpg")).unwrap();
    std::fs::write(tmp.path().join("b.png"), "not a png").unwrap();
    let folder = tmp.path().to_string_lossy().into_owned();
    std::fs::copy(e.image("snowman.jpg"), tmp.path().join("c.jpg")).unwrap();
    let out = e.run(&[
        "caption",
        &folder,
        "--json",
        "--max-new-tokens",
        "1",
        "--batch-size",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let recs = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(recs.len(), 3);
    // The broken image is reported first (when its batch is prepared), the others after.
    assert!(recs[1]["caption"].is_string() && recs[2]["caption"].is_string());
    assert_eq!(recs[1]["timing"]["batch_size"], 2);
    assert!(recs[0]["error"]
        .as_str()
        .unwrap()
        .contains("unreadable or unsupported image"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("b.png") && err.contains("1 failed"), "{err}");
}

/// `--stream` prints the new text as it comes; it equals the end of the final text.
#[test]
fn stream_prints_the_continuation() {
    let Some(e) = env("stream_prints_the_continuation") else {
        return;
    };
    let out = e.run(&[
        "caption",
        &e.image("snowman.jpg"),
        "--stream",
        "--json",
        "--max-new-tokens",
        "6",
    ]);
    let rec = json_lines(&ok(&out)).remove(0);
    let err = String::from_utf8(out.stderr).unwrap();
    let streamed = err.lines().next().unwrap();
    assert!(!streamed.trim().is_empty());
    assert!(
        rec["text"].as_str().unwrap().ends_with(streamed),
        "{streamed:?} vs {}",
        rec["text"]
    );
}

/// Without `--model`, the default hub id is found in the local HF cache (symlinked snapshot, as
/// `huggingface_hub` lays it out), and gives the same result as the folder itself.
#[test]
fn default_model_from_the_local_hf_cache() {
    let Some(e) = env("default_model_from_the_local_hf_cache") else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--microsoft--kosmos-2-patch14-224");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    let files = [
        (Path::new(&e.model), "config.json"),
        (Path::new(&e.model), "generation_config.json"),
        (Path::new(&e.model), "model.safetensors"),
        (Path::new(&e.processor), "tokenizer.json"),
        (Path::new(&e.processor), "tokenizer_config.json"),
        (Path::new(&e.processor), "preprocessor_config.json"),
        (Path::new(&e.processor), "special_tokens_map.json"),
    ];
    for (dir, f) in files {
        let src = std::fs::canonicalize(dir.join(f)).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&src, snap.join(f)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&src, snap.join(f)).unwrap();
    }
    let img = e.image("corgi.jpg");
    let run = |extra: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_kosmos2"))
            .args(["caption", &img, "--json", "--ids", "--max-new-tokens", "3"])
            .args(extra)
            .env_remove("KOSMOS2_MODEL")
            .env_remove("HF_HOME")
            .env_remove("HF_HUB_OFFLINE")
            // A complete cache needs no network: a hub that refuses connections proves it.
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("HF_HUB_CACHE", cache.path())
            .output()
            .expect("run kosmos2");
        json_lines(&ok(&out)).remove(0)
    };
    let by_default = run(&[]);
    let by_id = run(&["--model", "microsoft/kosmos-2-patch14-224"]);
    let by_dir = run(&["--model", e.model_arg(), "--processor", e.processor_arg()]);
    assert_eq!(by_default["generated_ids"], by_dir["generated_ids"]);
    assert_eq!(by_id["generated_ids"], by_dir["generated_ids"]);
}
