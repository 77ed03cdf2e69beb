//! Logits processors against HF transformers 5.24's own classes (fixture:
//! tests/fixtures/generation/generation.json, made by xtask/reference/gen_generation.py). Bit-exact.

#[path = "../../../tests/common/mod.rs"]
mod common;

use kosmos2::generation::{GenerationConfig, LogitsProcessor, LogitsProcessorList, RowContext};
use serde_json::Value;

fn fixture() -> Value {
    let path = common::fixtures_dir()
        .join("generation")
        .join("generation.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("generation.json parses")
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("uint") as u32)
        .collect()
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().expect("array").iter().map(u32s).collect()
}

fn rows_f32(v: &Value) -> Vec<Vec<f32>> {
    rows_u32(v)
        .into_iter()
        .map(|r| r.into_iter().map(f32::from_bits).collect())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("uint") as usize)
        .collect()
}

fn processor(kind: &str, p: &Value) -> LogitsProcessor {
    let f = |k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{kind}: {k}"));
    let u = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{kind}: {k}")) as usize;
    match kind {
        "repetition_penalty" => LogitsProcessor::RepetitionPenalty {
            penalty: f("penalty") as f32,
        },
        "no_repeat_ngram" => LogitsProcessor::NoRepeatNGram {
            ngram_size: u("ngram_size"),
            include_pads: true,
        },
        "min_new_tokens" => LogitsProcessor::MinNewTokens {
            min_new_tokens: u("min_new_tokens"),
            eos_token_ids: u32s(&p["eos_token_id"]),
        },
        "temperature" => LogitsProcessor::Temperature {
            temperature: f("temperature") as f32,
        },
        "top_k" => LogitsProcessor::TopK {
            top_k: u("top_k").max(u("min_tokens_to_keep")),
        },
        "top_p" => LogitsProcessor::TopP {
            top_p: f("top_p"),
            min_tokens_to_keep: u("min_tokens_to_keep"),
        },
        other => panic!("unknown processor kind {other}"),
    }
}

/// Applies `apply` to every row of a case and compares bit patterns with HF's output.
fn check_case(case: &Value, apply: impl Fn(&RowContext<'_>, &mut [f32])) -> usize {
    let name = case["name"].as_str().expect("name");
    let ids = rows_u32(&case["input_ids"]);
    let pads = usizes(&case["pad_lens"]);
    let prompt_len = case["prompt_len"].as_u64().expect("prompt_len") as usize;
    let scores = rows_f32(&case["scores"]);
    let expected = rows_u32(&case["expected"]);
    for (r, (mut row, want)) in scores.into_iter().zip(expected).enumerate() {
        let ctx = RowContext {
            ids: &ids[r],
            pad_len: pads[r],
            prompt_len,
        };
        apply(&ctx, &mut row);
        let got: Vec<u32> = row.iter().map(|x| x.to_bits()).collect();
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "{name} row {r}: first difference at vocab {i}: got {} want {}",
                f32::from_bits(got[i]),
                f32::from_bits(want[i])
            );
        }
    }
    ids.len()
}

#[test]
fn single_processors_match_hf_bit_for_bit() {
    let fx = fixture();
    let cases = fx["processors"].as_array().expect("processors");
    let mut kinds = std::collections::BTreeMap::new();
    for case in cases {
        let kind = case["kind"].as_str().expect("kind");
        let p = processor(kind, &case["params"]);
        let rows = check_case(case, |ctx, row| p.apply(ctx, row));
        *kinds.entry(kind.to_string()).or_insert(0) += rows;
    }
    for kind in [
        "repetition_penalty",
        "no_repeat_ngram",
        "min_new_tokens",
        "temperature",
        "top_k",
        "top_p",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) >= 6,
            "too few {kind} rows: {kinds:?}"
        );
    }
}

#[test]
fn processor_lists_match_hf_generate_order() {
    let fx = fixture();
    let cases = fx["pipelines"].as_array().expect("pipelines");
    assert!(cases.len() >= 5);
    for case in cases {
        let mut cfg: GenerationConfig =
            serde_json::from_value(case["params"].clone()).expect("params");
        cfg.hf_compat_positions = true; // HF's n-gram history includes the left pads
        let list = LogitsProcessorList::from_config(&cfg);
        // the same processors in the same order (HF adds MinLength and MinNewTokens, which coincide)
        let hf: Vec<&str> = case["processors"]
            .as_array()
            .expect("processors")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .filter(|n| *n != "MinLengthLogitsProcessor")
            .collect();
        let ours: Vec<&str> = list
            .processors()
            .iter()
            .map(|p| match p {
                LogitsProcessor::RepetitionPenalty { .. } => "RepetitionPenaltyLogitsProcessor",
                LogitsProcessor::NoRepeatNGram { .. } => "NoRepeatNGramLogitsProcessor",
                LogitsProcessor::MinNewTokens { .. } => "MinNewTokensLengthLogitsProcessor",
                LogitsProcessor::Temperature { .. } => "TemperatureLogitsWarper",
                LogitsProcessor::TopK { .. } => "TopKLogitsWarper",
                LogitsProcessor::TopP { .. } => "TopPLogitsWarper",
            })
            .collect();
        assert_eq!(ours, hf, "{}", case["name"]);
        check_case(case, |ctx, row| list.process(ctx, row));
    }
}
