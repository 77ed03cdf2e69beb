//! End to end on tiny-realvocab (real tokenizer, 65037 ids): the real `Kosmos2Processor` builds
//! the prompts from the fixture's prompt strings and photos (the fixture's `pixel_values` stand in
//! for the photos' pixels, whose exactness is the processor's own contract), `generate` runs every
//! HF case, and `batch_decode` + `post_process_generation` give HF's strings and entities. Streaming
//! text through the processor's decode adds up to the final decode.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use kosmos2::generation::{FinishReason, GenerationConfig};
use kosmos2::{
    DType, Device, ImageSession, Kosmos2Batch, Kosmos2ForConditionalGeneration,
    ProcessorDetokenizer, Tensor,
};
use kosmos_processor::{
    post_process_generation, Kosmos2Processor, Padding, PaddingSide, ProcessOptions, ProcessorInput,
};
use serde_json::Value;
use support::{model_dir, Fixture};

struct Setup {
    model: Kosmos2ForConditionalGeneration,
    processor: Kosmos2Processor,
    generation: Value,
    pixels: Tensor,
    assets: PathBuf,
}

fn setup(test: &str) -> Option<Setup> {
    let assets = common::assets_dir(test)?;
    let dir = model_dir(&common::fixtures_dir(), "tiny-realvocab");
    let generation =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation.json")).unwrap())
            .unwrap();
    Some(Setup {
        model: Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap(),
        processor: Kosmos2Processor::from_dir(assets.join("kosmos-2-patch14-224")).unwrap(),
        pixels: Fixture::open(&dir.join("reference.safetensors")).tensor("pixel_values"),
        generation,
        assets,
    })
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn uint(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn config(case: &Value, hf_compat: bool) -> GenerationConfig {
    let p = &case["params"];
    GenerationConfig {
        max_new_tokens: uint(&p["max_new_tokens"]),
        min_new_tokens: uint(&p["min_new_tokens"]),
        no_repeat_ngram_size: uint(&p["no_repeat_ngram_size"]),
        num_beams: uint(&p["num_beams"]),
        length_penalty: p["length_penalty"].as_f64().unwrap(),
        eos_token_id: vec![uint(&p["eos_token_id"]) as u32],
        pad_token_id: Some(uint(&p["pad_token_id"]) as u32),
        hf_compat_positions: hf_compat,
        ..GenerationConfig::default()
    }
}

impl Setup {
    /// The processor's batch for a case, with the fixture's pixel rows.
    fn batch(&self, case: &Value) -> Kosmos2Batch {
        let meta = &self.generation["processor"];
        let name = case["name"].as_str().unwrap();
        let images = strs(&meta["image_files"]);
        let (prompts, rows, side): (Vec<String>, Option<Vec<usize>>, PaddingSide) = match name {
            "text_only" => (strs(&meta["text_only_prompts"]), None, PaddingSide::Right),
            "batch_left_pad" => (
                strs(&meta["left_pad_prompts"]),
                Some(vec![0, 1]),
                PaddingSide::Left,
            ),
            n if n.starts_with("batch_left_pad_row") => {
                let b: usize = n["batch_left_pad_row".len()..].parse().unwrap();
                (
                    vec![strs(&meta["left_pad_prompts"])[b].clone()],
                    Some(vec![b]),
                    PaddingSide::Left,
                )
            }
            _ => (
                strs(&meta["main_prompts"]),
                Some(vec![0, 1]),
                PaddingSide::Right,
            ),
        };
        let inputs: Vec<ProcessorInput> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let item = ProcessorInput::text(p.as_str());
                match &rows {
                    Some(r) => item.with_image(image(&self.assets, &images[r[i]])),
                    None => item,
                }
            })
            .collect();
        let mut processor = self.processor.clone();
        processor.set_padding_side(side);
        let opts = ProcessOptions {
            padding: Padding::Longest,
            ..Default::default()
        };
        let processed = processor.process(&inputs, &opts).unwrap();
        let mut batch = Kosmos2Batch::from_processor(&processed, &Device::Cpu).unwrap();
        assert_eq!(
            batch.input_ids,
            rows_u32(&case["inputs"]["input_ids"]).concat(),
            "{name}: processor ids equal HF's"
        );
        batch.pixel_values = rows.map(|r| {
            let parts: Vec<Tensor> = r
                .iter()
                .map(|&i| self.pixels.narrow(0, i, 1).unwrap())
                .collect();
            Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0).unwrap()
        });
        batch
    }
}

fn image(assets: &Path, name: &str) -> PathBuf {
    common::image_path(assets, name)
}

#[test]
fn processor_to_generate_to_grounded_text() {
    let Some(s) = setup("processor_to_generate_to_grounded_text") else {
        return;
    };
    for case in s.generation["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let batch = s.batch(case);
        let out = s.model.generate(&batch, &config(case, true)).unwrap();
        assert_eq!(out.sequences, rows_u32(&case["sequences"]), "{name}");
        let decoded = s.processor.batch_decode(&out.sequences, true);
        assert_eq!(decoded, strs(&case["decoded"]), "{name}: batch_decode");
        for (r, (text, want)) in decoded
            .iter()
            .zip(case["post_processed"].as_array().unwrap())
            .enumerate()
        {
            let raw = post_process_generation(text, false).unwrap();
            assert_eq!(
                raw.caption,
                want["cleanup_false"].as_str().unwrap(),
                "{name} row {r}"
            );
            assert!(raw.entities.is_empty());
            let g = post_process_generation(text, true).unwrap();
            assert_eq!(
                g.caption,
                want["caption"].as_str().unwrap(),
                "{name} row {r}"
            );
            let entities = want["entities"].as_array().unwrap();
            assert_eq!(g.entities.len(), entities.len(), "{name} row {r}");
            for (e, w) in g.entities.iter().zip(entities) {
                assert_eq!(e.phrase, w[0].as_str().unwrap());
                assert_eq!(
                    e.span,
                    (w[1][0].as_i64().unwrap(), w[1][1].as_i64().unwrap())
                );
                let boxes: Vec<[f64; 4]> = w[2]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        let v: Vec<f64> = b
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_f64().unwrap())
                            .collect();
                        [v[0], v[1], v[2], v[3]]
                    })
                    .collect();
                assert_eq!(e.boxes, boxes);
            }
        }
        // the one-call path from the processor output is the same computation
        if name == "greedy_ngram3" {
            let mut session =
                ImageSession::new(&s.model, batch.pixel_values.as_ref().unwrap()).unwrap();
            let (prompts, rows) = batch.prompt_batch(1).unwrap();
            let reused = session
                .generate_batch(&prompts, &rows, &config(case, true))
                .unwrap();
            assert_eq!(reused.sequences, out.sequences, "{name}: prefix reuse");
            assert_eq!(
                session.last_reused_prefix_len(),
                67,
                "<s><image> 64 × placeholder </image>"
            );
        }
    }
}

/// Streams each case's text through the processor's decode: per row, the increments concatenate to
/// the decode of prompt + generated tokens minus the decode of the prompt, with one delta per token.
#[test]
fn streamed_text_adds_up_to_the_final_decode() {
    let Some(s) = setup("streamed_text_adds_up_to_the_final_decode") else {
        return;
    };
    let decoder = ProcessorDetokenizer::new(&s.processor);
    for name in ["greedy_ngram3", "greedy_eos", "batch_left_pad", "text_only"] {
        let case = s.generation["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        let batch = s.batch(case);
        let mut texts = vec![String::new(); batch.batch];
        let mut deltas = vec![0usize; batch.batch];
        let mut finished = vec![None; batch.batch];
        let out = s
            .model
            .generate_text_stream(&batch, &config(case, true), decoder, |d| {
                assert!(finished[d.row].is_none(), "{name}: a delta after the last");
                texts[d.row].push_str(d.text);
                deltas[d.row] += usize::from(d.token.is_some());
                finished[d.row] = d.finished;
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(out.sequences, rows_u32(&case["sequences"]), "{name}");
        for r in 0..batch.batch {
            let prompt = &out.sequences[r][out.pad_lens[r]..out.prompt_len];
            let before = s.processor.decode(prompt, true);
            let all = s.processor.decode(out.tokens(r), true);
            assert_eq!(format!("{before}{}", texts[r]), all, "{name} row {r}");
            assert_eq!(deltas[r], out.generated_lens[r], "{name} row {r}");
            assert_eq!(finished[r], Some(out.finish_reasons[r]), "{name} row {r}");
        }
    }
}

/// Breaking out of the stream stops every row; each still gets a final flush.
#[test]
fn breaking_the_stream_stops_and_flushes() {
    let Some(s) = setup("breaking_the_stream_stops_and_flushes") else {
        return;
    };
    let case = &s.generation["cases"][0];
    let batch = s.batch(case);
    let mut texts = vec![String::new(); 2];
    let mut flushes = 0;
    let out = s
        .model
        .generate_text_stream(
            &batch,
            &config(case, true),
            ProcessorDetokenizer::new(&s.processor),
            |d| {
                texts[d.row].push_str(d.text);
                flushes += usize::from(d.token.is_none());
                if d.step == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
    assert_eq!(flushes, 2);
    assert_eq!(out.finish_reasons, vec![FinishReason::Stopped; 2]);
    assert_eq!(out.generated_lens, vec![3, 3]);
    for (r, text) in texts.iter().enumerate() {
        let prompt = &out.sequences[r][..out.prompt_len];
        let before = s.processor.decode(prompt, true);
        assert_eq!(
            format!("{before}{text}"),
            s.processor.decode(out.tokens(r), true)
        );
    }
}

/// The golden snowman ids of HF's integration test (reference §11): streamed after the prompt
/// through the processor's decode (tags, patch tokens, clean-up), the text adds up to the full
/// decode and post-processes to the reference caption and boxes.
#[test]
fn golden_ids_stream_through_the_processor_decode() {
    use kosmos2::generation::TextStream;
    let Some(s) = setup("golden_ids_stream_through_the_processor_decode") else {
        return;
    };
    let mut ids = vec![0, 64003];
    ids.extend(4..=67);
    ids.extend([
        64004, 64012, 712, 1648, 9, 64007, 10, 43867, 64008, 64009, 64057, 64876, 64010, 5950, 597,
        32, 64007, 10, 646, 64008, 64009, 64018, 64924, 64010, 4, 2,
    ]);
    let prompt_len = 2 + 64 + 1 + 4; // <s><image> … </image><grounding> An image of
    let decoder = ProcessorDetokenizer::new(&s.processor);
    let mut stream = TextStream::with_context(decoder, &ids[..prompt_len]).unwrap();
    let mut pieces = Vec::new();
    for &t in &ids[prompt_len..] {
        pieces.extend(stream.push(t).unwrap());
    }
    pieces.extend(stream.finish().unwrap());
    let full = s.processor.decode(&ids, true);
    let prompt = s.processor.decode(&ids[..prompt_len], true);
    assert_eq!(format!("{prompt}{}", pieces.concat()), full);
    assert_eq!(pieces[0], "<phrase>");
    let g = post_process_generation(&full, true).unwrap();
    assert_eq!(
        g.caption,
        "An image of a snowman warming himself by a fire."
    );
    assert_eq!(g.entities[0].phrase, "a snowman");
    assert_eq!(g.entities[0].span, (12, 21));
    assert_eq!(
        g.entities[1].boxes,
        vec![[0.171875, 0.015625, 0.484375, 0.890625]]
    );
}
