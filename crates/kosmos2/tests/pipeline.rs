//! The facade ([`Kosmos2`]) on tiny-realvocab with the real processor: each task's ids equal
//! `generate` on the processor's output for the same prompt (and HF's greedy ids where a fixture
//! case matches), pixel boxes are the normalised boxes × (W, H), bad inputs give typed errors.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use kosmos2::generation::GenerationConfig;
use kosmos2::task::TaskError;
use kosmos2::{
    CaptionStyle, DType, Device, Kosmos2, Kosmos2ForConditionalGeneration, PipelineError,
    RegionBox, Task,
};
use kosmos_processor::image::ImageError;
use kosmos_processor::{Kosmos2Processor, ProcessOptions, ProcessorInput};
use serde_json::Value;

fn tiny_dir() -> PathBuf {
    common::fixtures_dir().join("models").join("tiny-realvocab")
}

struct Setup {
    kosmos: Kosmos2,
    assets: PathBuf,
}

fn setup(test: &str, cfg: GenerationConfig) -> Option<Setup> {
    let assets = common::assets_dir(test)?;
    let kosmos = Kosmos2::builder(tiny_dir())
        .processor_dir(assets.join("kosmos-2-patch14-224"))
        .generation(cfg)
        .load()
        .unwrap();
    Some(Setup { kosmos, assets })
}

fn cfg16() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: 16,
        ..Kosmos2::default_generation()
    }
}

/// `generate` on `processor(text, image, bboxes)`: the path the CLI and the HF scripts take.
fn reference_ids(s: &Setup, task: &Task, image: &str) -> Vec<u32> {
    let p = task.prompt().unwrap();
    let mut input =
        ProcessorInput::text(p.text.clone()).with_image(common::image_path(&s.assets, image));
    if let Some(b) = p.boxes {
        input = input.with_boxes(b);
    }
    let processed = s
        .kosmos
        .processor()
        .process_single(&input, &ProcessOptions::default())
        .unwrap();
    let out = s
        .kosmos
        .model()
        .generate_processed(&processed, s.kosmos.generation())
        .unwrap();
    out.tokens(0).to_vec()
}

fn tasks() -> Vec<Task> {
    vec![
        Task::Caption(CaptionStyle::Brief),
        Task::Caption(CaptionStyle::Detailed),
        Task::Ground {
            phrase: "a snowman next to a fire".into(),
        },
        Task::Refer {
            bbox: RegionBox::Normalized([0.390625, 0.046875, 0.984375, 0.828125]),
        },
        Task::Vqa {
            question: "What is special about this image?".into(),
        },
    ]
}

#[test]
fn brief_caption_matches_hf_greedy_ngram3() {
    let Some(s) = setup("brief_caption_matches_hf_greedy_ngram3", cfg16()) else {
        return;
    };
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(tiny_dir().join("generation.json")).unwrap())
            .unwrap();
    let case = fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "greedy_ngram3")
        .unwrap();
    assert_eq!(case["params"]["no_repeat_ngram_size"], 3);
    assert_eq!(case["params"]["max_new_tokens"], 16);
    let images = fixture["processor"]["image_files"].as_array().unwrap();
    let prompts = fixture["processor"]["main_prompts"].as_array().unwrap();
    for (row, image) in images.iter().enumerate() {
        assert_eq!(prompts[row], "<grounding>An image of");
        let image = common::image_path(&s.assets, image.as_str().unwrap());
        let out = s.kosmos.caption(image, CaptionStyle::Brief).unwrap();
        let want: Vec<u32> = case["sequences"][row]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(out.token_ids, want, "row {row}");
        let decoded = case["decoded"][row].as_str().unwrap();
        assert!(decoded.ends_with(&out.text[out.text.len() - 10..]));
        assert_eq!(out.prompt_len, 71);
        assert_eq!(out.timing.new_tokens, 16);
        assert_eq!(out.finish_reason, "max_new_tokens");
    }
}

#[test]
fn every_task_matches_generate_one_shot_and_encoded() {
    let Some(s) = setup("every_task_matches_generate_one_shot_and_encoded", cfg16()) else {
        return;
    };
    let image = common::image_path(&s.assets, "snowman.jpg");
    let mut encoded = s.kosmos.encode(image.clone()).unwrap();
    assert_eq!(encoded.size(), [1024, 1024]);
    for task in tasks() {
        let want = reference_ids(&s, &task, "snowman.jpg");
        let one = s.kosmos.run(image.clone(), &task).unwrap();
        assert_eq!(one.token_ids, want, "{task:?}");
        assert_eq!(one.task, task.name());
        assert_eq!(one.prompt, task.prompt().unwrap().text);
        assert!(one.timing.image_encode_ms > 0.0 && one.timing.prefill_ms > 0.0);
        let again = encoded.run(&task).unwrap();
        assert_eq!(again.token_ids, want, "{task:?} on the encoded image");
        assert_eq!(again.text, one.text);
        assert_eq!(
            again.timing.image_encode_ms,
            encoded.encode_time().as_secs_f64() * 1e3
        );
    }
    // the typed calls are the tasks
    let typed = [
        s.kosmos.caption(image.clone(), CaptionStyle::Detailed),
        s.kosmos.ground(image.clone(), "a snowman next to a fire"),
        s.kosmos.refer(
            image.clone(),
            RegionBox::Normalized([0.390625, 0.046875, 0.984375, 0.828125]),
        ),
        s.kosmos
            .vqa(image.clone(), "What is special about this image?"),
    ];
    for (out, task) in typed.into_iter().zip(&tasks()[1..]) {
        assert_eq!(
            out.unwrap().token_ids,
            reference_ids(&s, task, "snowman.jpg")
        );
    }
    // bytes and a decoded image give the same output as the path
    let bytes = std::fs::read(&image).unwrap();
    let from_bytes = s.kosmos.caption(bytes, CaptionStyle::Brief).unwrap();
    let from_path = s.kosmos.caption(image, CaptionStyle::Brief).unwrap();
    assert_eq!(from_bytes.token_ids, from_path.token_ids);
}

#[test]
fn refer_box_gives_pixel_boxes_of_the_original_size() {
    let cfg = GenerationConfig {
        max_new_tokens: 4,
        ..Kosmos2::default_generation()
    };
    let Some(s) = setup("refer_box_gives_pixel_boxes_of_the_original_size", cfg) else {
        return;
    };
    // two_dogs.jpg is not square: the pixel box scales x by W and y by H
    let image = common::image_path(&s.assets, "two_dogs.jpg");
    let rgb =
        kosmos_processor::image::load_rgb(&image.clone().into(), &Default::default()).unwrap();
    let (w, h) = rgb.dimensions();
    assert_ne!(w, h);
    let bbox = RegionBox::Pixels {
        bbox: [
            0.25 * f64::from(w),
            0.1 * f64::from(h),
            0.75 * f64::from(w),
            0.9 * f64::from(h),
        ],
        width: w,
        height: h,
    };
    let out = s.kosmos.refer(image, bbox).unwrap();
    assert_eq!(out.image_size, [w, h]);
    let it = &out.entities[0];
    assert_eq!(out.find(" It "), Some(it));
    assert_eq!(out.find("no such phrase"), Some(it)); // the first entity with a box
    assert_eq!(it.phrase, "It");
    assert_eq!(it.span, (0, 2));
    assert_eq!(it.byte_span, Some((0, 2)));
    assert!(out.text.starts_with("It is"));
    // the box comes back as the centres-of-patches box of its patch indices
    assert_eq!(it.boxes.len(), 1);
    for e in &out.entities {
        for (b, p) in e.boxes.iter().zip(&e.pixel_boxes) {
            let want = [
                (b[0] * f64::from(w)) as u32,
                (b[1] * f64::from(h)) as u32,
                (b[2] * f64::from(w)) as u32,
                (b[3] * f64::from(h)) as u32,
            ];
            assert_eq!(*p, want);
        }
    }
    let b = it.boxes[0];
    assert!(
        (b[0] - 0.25).abs() < 1.0 / 32.0 && (b[3] - 0.9).abs() < 1.0 / 32.0,
        "{b:?}"
    );
    // serialises with every field
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["entities"][0]["phrase"], "It");
    assert!(json["entities"][0]["pixel_boxes"][0].is_array());
    assert!(json["timing"]["decode_tokens_per_s"].is_number());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let cfg = GenerationConfig {
        max_new_tokens: 2,
        ..Kosmos2::default_generation()
    };
    let Some(s) = setup("bad_inputs_are_typed_errors", cfg) else {
        return;
    };
    let missing = s.assets.join("images").join("no_such_image.jpg");
    let err = s
        .kosmos
        .caption(missing.clone(), CaptionStyle::Brief)
        .unwrap_err();
    assert!(
        matches!(&err, PipelineError::Image(ImageError::Io { path, .. }) if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_image.jpg"), "{err}");
    assert!(matches!(
        s.kosmos.encode(b"not an image".to_vec()).unwrap_err(),
        PipelineError::Image(ImageError::UnknownFormat)
    ));

    let image = common::image_path(&s.assets, "snowman.jpg");
    let err = s
        .kosmos
        .refer(image.clone(), RegionBox::Normalized([0.5, 0.1, 0.4, 0.9]))
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::Task(TaskError::Box { .. })),
        "{err:?}"
    );
    let err = s
        .kosmos
        .refer(
            image.clone(),
            RegionBox::Pixels {
                bbox: [0.0, 0.0, 2000.0, 10.0],
                width: 1024,
                height: 1024,
            },
        )
        .unwrap_err();
    assert!(matches!(err, PipelineError::Task(TaskError::Box { .. })));
    assert!(matches!(
        s.kosmos.ground(image.clone(), "  ").unwrap_err(),
        PipelineError::Task(TaskError::Empty { what: "phrase" })
    ));
    let mut enc = s.kosmos.encode(image).unwrap();
    assert!(matches!(
        enc.vqa("a</phrase>").unwrap_err(),
        PipelineError::Task(TaskError::Reserved { .. })
    ));
}

#[test]
fn too_long_and_missing_processor_files() {
    // tiny-realvocab has no tokenizer: loading its processor from the model dir fails, typed
    let err = Kosmos2::load(tiny_dir()).unwrap_err();
    assert!(matches!(err, PipelineError::Processor(_)), "{err:?}");

    let Some(assets) = common::assets_dir("too_long_and_missing_processor_files") else {
        return;
    };
    let model =
        Kosmos2ForConditionalGeneration::load(tiny_dir(), &Device::Cpu, DType::F32).unwrap();
    let processor = Kosmos2Processor::from_dir(assets.join("kosmos-2-patch14-224")).unwrap();
    let kosmos = Kosmos2::from_parts(model, processor).with_generation(GenerationConfig {
        max_new_tokens: 2048,
        ..Kosmos2::default_generation()
    });
    let err = kosmos
        .caption(
            common::image_path(&assets, "snowman.jpg"),
            CaptionStyle::Brief,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::TooLong {
                prompt_len: 71,
                max_new_tokens: 2048,
                limit: 2048
            }
        ),
        "{err:?}"
    );
}
