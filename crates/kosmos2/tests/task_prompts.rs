//! The task prompts through the real processor, against HF's ids in the committed fixtures.

#[path = "../../../tests/common/mod.rs"]
mod common;

use kosmos2::task::{CaptionStyle, RegionBox, Task, TaskPrompt};
use kosmos_processor::{Kosmos2Processor, ProcessOptions, ProcessorInput};
use serde_json::Value;

fn read_json(rel: &str) -> Value {
    let path = common::fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id row")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// `expected.input_ids[0]` of the prompts.json case `name`.
fn case_ids(name: &str) -> Vec<u32> {
    let cases = read_json("processor/prompts.json");
    let case = cases["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    ids(&case["expected"]["input_ids"][0])
}

fn encode(
    p: &Kosmos2Processor,
    prompt: &TaskPrompt,
    image: Option<std::path::PathBuf>,
) -> Vec<u32> {
    let mut input = ProcessorInput::text(prompt.text.clone());
    if let Some(b) = &prompt.boxes {
        input = input.with_boxes(b.clone());
    }
    if let Some(i) = image {
        input = input.with_image(i);
    }
    let out = p
        .process_single(&input, &ProcessOptions::default())
        .unwrap_or_else(|e| panic!("process {:?}: {e}", prompt.text));
    out.input_ids[0].clone()
}

fn processor(test: &str) -> Option<(Kosmos2Processor, std::path::PathBuf)> {
    let assets = common::assets_dir(test)?;
    let p = Kosmos2Processor::from_dir(assets.join("kosmos-2-patch14-224")).expect("processor");
    Some((p, assets))
}

#[test]
fn brief_caption_matches_hf_ids() {
    let Some((p, assets)) = processor("brief_caption_matches_hf_ids") else {
        return;
    };
    let prompt = Task::Caption(CaptionStyle::Brief).prompt().unwrap();
    assert_eq!(encode(&p, &prompt, None), case_ids("grounding_an_image_of"));
    let img = common::image_path(&assets, "chelsea.png");
    assert_eq!(
        encode(&p, &prompt, Some(img)),
        case_ids("grounding_an_image_of+img")
    );
    // The card's spelling with a space tokenises alike (tasks-and-users.md).
    assert_eq!(
        case_ids("grounding_space"),
        case_ids("grounding_an_image_of")
    );
}

#[test]
fn detailed_caption_matches_hf_generation_inputs() {
    let Some((p, assets)) = processor("detailed_caption_matches_hf_generation_inputs") else {
        return;
    };
    // tiny-realvocab's left-padded batch: row 1 is the detailed prompt on two_dogs.jpg, made by
    // HF's real processor.
    let gen = read_json("models/tiny-realvocab/generation.json");
    assert_eq!(
        gen["processor"]["left_pad_prompts"][1],
        "<grounding> Describe this image in detail:"
    );
    let case = gen["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "batch_left_pad")
        .expect("batch_left_pad case");
    let row = ids(&case["inputs"]["input_ids"][1]);
    let mask = ids(&case["inputs"]["attention_mask"][1]);
    let want: Vec<u32> = row
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&t, _)| t)
        .collect();
    let prompt = Task::Caption(CaptionStyle::Detailed).prompt().unwrap();
    let img = common::image_path(&assets, "two_dogs.jpg");
    assert_eq!(encode(&p, &prompt, Some(img)), want);
    // Without the space it is the same token sequence (prompts.json `describe_detail`).
    assert_eq!(encode(&p, &prompt, None), case_ids("describe_detail"));
}

#[test]
fn refer_through_processor_equals_inline_patch_tokens() {
    let Some((p, _)) = processor("refer_through_processor_equals_inline_patch_tokens") else {
        return;
    };
    // The two spellings of tasks-and-users.md give the same ids.
    let task = Task::Refer {
        bbox: RegionBox::Normalized([0.390625, 0.046875, 0.984375, 0.828125]),
    };
    let via_boxes = encode(&p, &task.prompt().unwrap(), None);
    let inline = TaskPrompt {
        text: "<grounding><phrase> It</phrase><object><patch_index_0044><patch_index_0863></object> is"
            .into(),
        boxes: None,
    };
    assert_eq!(via_boxes, encode(&p, &inline, None));
    // And the pixel form of the same box.
    let px = Task::Refer {
        bbox: RegionBox::Pixels {
            bbox: [400.0, 36.0, 1008.0, 636.0],
            width: 1024,
            height: 768,
        },
    };
    assert_eq!(encode(&p, &px.prompt().unwrap(), None), via_boxes);
    let tok = p.tokenizer();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    assert!(via_boxes.contains(&id("<patch_index_0044>")));
    assert!(via_boxes.contains(&id("<patch_index_0863>")));
}

#[test]
fn ground_and_vqa_prompts_tokenise_as_the_tags_and_words() {
    let Some((p, _)) = processor("ground_and_vqa_prompts_tokenise_as_the_tags_and_words") else {
        return;
    };
    let tok = p.tokenizer();
    let id = |t: &str| tok.token_to_id(t).unwrap();
    // HF's prompts.json case `snowman_phrase` is the ground prompt followed by " is".
    let ground = Task::Ground {
        phrase: "a snowman".into(),
    }
    .prompt()
    .unwrap();
    let got = encode(&p, &ground, None);
    let want = case_ids("snowman_phrase");
    assert_eq!(got[..], want[..want.len() - 1]);
    assert_eq!(got[1], id("<grounding>"));
    assert_eq!(got[2], id("<phrase>"));
    assert_eq!(*got.last().unwrap(), id("</phrase>"));

    let vqa = Task::Vqa {
        question: "What is special about this image?".into(),
    }
    .prompt()
    .unwrap();
    let got = encode(&p, &vqa, None);
    assert_eq!(got[..2], [0, id("<grounding>")]);
    // Tags are added tokens, not special ones: decoding keeps them (as HF's does).
    assert_eq!(
        p.decode(&got, true),
        "<grounding> Question: What is special about this image? Answer:"
    );
    // Ungrounded prompts lose exactly the tag.
    let plain = encode(&p, &vqa.clone().without_grounding(), None);
    assert_eq!(plain[0], 0);
    assert_eq!(plain[1..], got[2..]);
}
