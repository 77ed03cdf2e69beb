//! The KV-cache path over many steps: a bare greedy loop (prefill, then one token per step from
//! the cache) reproduces HF `generate` ids from the fixtures' `generation.json`, for the greedy
//! cases without logits processors. Also checks that [`PositionMode::RealTokens`] makes a
//! left-padded row's continuation equal its unpadded one, while [`PositionMode::HfCompat`]
//! reproduces HF's batched output with its decode-position quirk.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use kosmos2::{
    DType, Device, Kosmos2ForConditionalGeneration, Kosmos2ForwardOptions, Kosmos2Inputs,
    LmOptions, LogitsMode, PositionMode, Tensor, TextInputs,
};
use kosmos_tensor::ops;
use serde_json::Value;
use support::{model_dir, Fixture, MODELS};

struct Model {
    model: Kosmos2ForConditionalGeneration,
    pixels: Tensor,
    generation: Value,
}

fn load(name: &str) -> Model {
    let dir = model_dir(&common::fixtures_dir(), name);
    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let pixels = Fixture::open(&dir.join("reference.safetensors")).tensor("pixel_values");
    let generation =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation.json")).unwrap())
            .unwrap();
    Model {
        model,
        pixels,
        generation,
    }
}

fn matrix(v: &Value) -> (Vec<u32>, usize, usize) {
    let rows = v.as_array().expect("a matrix");
    let cols = rows[0].as_array().expect("a row").len();
    let flat = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
        })
        .collect();
    (flat, rows.len(), cols)
}

impl Model {
    fn case(&self, name: &str) -> &Value {
        self.generation["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no generation case {name}"))
    }

    /// Greedy decoding with a KV cache, HF style: finished rows get pad, every row's attention mask
    /// grows by one per step, stop when all rows are done or after `max_new_tokens`.
    fn greedy(&self, case: &Value, mode: PositionMode) -> Vec<Vec<u32>> {
        let inputs = &case["inputs"];
        let params = &case["params"];
        let (ids, b, t) = matrix(&inputs["input_ids"]);
        let (mut am, _, _) = matrix(&inputs["attention_mask"]);
        let max_new = params["max_new_tokens"].as_u64().unwrap() as usize;
        let (eos, pad) = (
            params["eos_token_id"].as_u64().unwrap() as u32,
            params["pad_token_id"].as_u64().unwrap() as u32,
        );
        let pixels = match inputs["pixel_rows"].as_array() {
            Some(rows) => {
                let parts: Vec<Tensor> = rows
                    .iter()
                    .map(|r| {
                        self.pixels
                            .narrow(0, r.as_u64().unwrap() as usize, 1)
                            .unwrap()
                    })
                    .collect();
                Some(Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0).unwrap())
            }
            None => None,
        };
        let pm = (!inputs["image_embeds_position_mask"].is_null())
            .then(|| matrix(&inputs["image_embeds_position_mask"]).0);
        let opts = Kosmos2ForwardOptions {
            position_mode: mode,
            ..Default::default()
        };
        let lm = LmOptions {
            logits: LogitsMode::Last,
            labels: None,
        };
        let mut seqs: Vec<Vec<u32>> = ids.chunks(t).map(|r| r.to_vec()).collect();
        let mut done = vec![false; b];
        let mut cache = Some(self.model.model.new_cache(b, t + max_new).unwrap());

        let text = TextInputs::from_ids(&ids, b, t)
            .unwrap()
            .with_attention_mask(&am);
        let mut inputs = Kosmos2Inputs::new(text);
        if let (Some(p), Some(m)) = (&pixels, &pm) {
            inputs = inputs.with_pixel_values(p, m);
        }
        let mut out = self
            .model
            .forward(&inputs, cache.take(), &opts, &lm)
            .unwrap();
        for _ in 0..max_new {
            let next = ops::argmax_last_dim(out.logits.as_ref().unwrap()).unwrap();
            let mut step = Vec::with_capacity(b);
            for (row, &tok) in next.iter().enumerate() {
                let tok = if done[row] { pad } else { tok };
                done[row] |= tok == eos;
                seqs[row].push(tok);
                step.push(tok);
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let cols = am.len() / b;
            am = am
                .chunks(cols)
                .flat_map(|r| r.iter().copied().chain([1]))
                .collect();
            let text = TextInputs::from_ids(&step, b, 1)
                .unwrap()
                .with_attention_mask(&am);
            out = self
                .model
                .forward(
                    &Kosmos2Inputs::new(text),
                    out.past_key_values.take(),
                    &opts,
                    &lm,
                )
                .unwrap();
        }
        seqs
    }
}

fn expected(case: &Value) -> Vec<Vec<u32>> {
    let (flat, b, cols) = matrix(&case["sequences"]);
    flat.chunks(cols).take(b).map(|r| r.to_vec()).collect()
}

#[test]
fn greedy_ids_equal_hf_generate() {
    for name in MODELS {
        let m = load(name);
        for case in [
            "greedy_ngram0",
            "text_only",
            "batch_left_pad",
            "batch_left_pad_row0",
            "batch_left_pad_row1",
        ] {
            let c = m.case(case);
            assert_eq!(c["params"]["no_repeat_ngram_size"], 0);
            assert_eq!(c["params"]["num_beams"], 1);
            assert_eq!(
                m.greedy(c, PositionMode::HfCompat),
                expected(c),
                "{name}/{case}"
            );
        }
    }
}

/// With positions counted over real tokens, each left-padded row continues exactly as it does
/// alone: its ids do not depend on its batch-mates.
#[test]
fn real_token_positions_make_rows_independent_of_padding() {
    for name in MODELS {
        let m = load(name);
        let batch = m.case("batch_left_pad");
        let got = m.greedy(batch, PositionMode::RealTokens);
        let pad = batch["params"]["pad_token_id"].as_u64().unwrap() as u32;
        let (am, _, t) = matrix(&batch["inputs"]["attention_mask"]);
        for (row, seq) in got.iter().enumerate() {
            let alone = expected(m.case(&format!("batch_left_pad_row{row}"))).remove(0);
            let pads = am[row * t..(row + 1) * t]
                .iter()
                .take_while(|&&x| x == 0)
                .count();
            let unpadded: Vec<u32> = seq[pads..].to_vec();
            // The batch may run longer than the row alone (it stops when every row is done); the
            // extra tokens are pads after the row's eos.
            assert_eq!(&unpadded[..alone.len()], &alone[..], "{name} row {row}");
            assert!(
                unpadded[alone.len()..].iter().all(|&x| x == pad),
                "{name} row {row}"
            );
        }
    }
}
