//! `Kosmos2ForConditionalGeneration::generate` against HF `generate` (transformers 5.24) on the three
//! fixture models: every case of `generation.json` (greedy with n-gram blocking 0 and 3, eos and
//! pad fill, min_new_tokens, beam search, the left-padded batch with HF's position quirk, text only),
//! processed scores from `scores.safetensors`, batch-independent rows with real-token positions, and
//! [`ImageSession`] prefix reuse giving the same outputs as a full prefill.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use kosmos2::generation::{GenerationConfig, GenerationOutput, Prompt, PromptBatch};
use kosmos2::{
    DType, Device, Error, ImageSession, Kosmos2Batch, Kosmos2ForConditionalGeneration, Tensor,
};
use serde_json::Value;
use support::{model_dir, Fixture, MODELS, TOL};

struct Model {
    name: &'static str,
    model: Kosmos2ForConditionalGeneration,
    pixels: Tensor,
    generation: Value,
    scores: Fixture,
}

fn load(name: &'static str) -> Model {
    let dir = model_dir(&common::fixtures_dir(), name);
    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let pixels = Fixture::open(&dir.join("reference.safetensors")).tensor("pixel_values");
    let generation =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation.json")).unwrap())
            .unwrap();
    let scores = Fixture::open(&dir.join("scores.safetensors"));
    Model {
        name,
        model,
        pixels,
        generation,
        scores,
    }
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("a matrix")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_u64().expect("uint") as u32)
                .collect()
        })
        .collect()
}

fn uint(v: &Value) -> usize {
    v.as_u64().expect("uint") as usize
}

impl Model {
    fn cases(&self) -> &[Value] {
        self.generation["cases"].as_array().unwrap()
    }

    fn case(&self, name: &str) -> &Value {
        self.cases()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{}: no case {name}", self.name))
    }

    /// The pixel rows of a case (`None` for text only).
    fn case_pixels(&self, case: &Value) -> Option<Tensor> {
        let rows = case["inputs"]["pixel_rows"].as_array()?;
        let parts: Vec<Tensor> = rows
            .iter()
            .map(|r| self.pixels.narrow(0, uint(r), 1).unwrap())
            .collect();
        Some(Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0).unwrap())
    }

    fn batch(&self, case: &Value) -> Kosmos2Batch {
        let inputs = &case["inputs"];
        let ids = rows_u32(&inputs["input_ids"]);
        let pm = &inputs["image_embeds_position_mask"];
        Kosmos2Batch {
            batch: ids.len(),
            seq_len: ids[0].len(),
            input_ids: ids.concat(),
            attention_mask: rows_u32(&inputs["attention_mask"]).concat(),
            image_embeds_position_mask: (!pm.is_null()).then(|| rows_u32(pm).concat()),
            pixel_values: self.case_pixels(case),
        }
    }
}

/// Every parameter of the case, passed explicitly (as the fixture generator passed them to HF).
fn config(case: &Value, hf_compat: bool) -> GenerationConfig {
    let p = &case["params"];
    assert_eq!(p["do_sample"], false);
    assert_eq!(p["early_stopping"], false);
    GenerationConfig {
        max_new_tokens: uint(&p["max_new_tokens"]),
        min_new_tokens: uint(&p["min_new_tokens"]),
        no_repeat_ngram_size: uint(&p["no_repeat_ngram_size"]),
        num_beams: uint(&p["num_beams"]),
        length_penalty: p["length_penalty"].as_f64().unwrap(),
        eos_token_id: vec![uint(&p["eos_token_id"]) as u32],
        pad_token_id: Some(uint(&p["pad_token_id"]) as u32),
        output_scores: true,
        hf_compat_positions: hf_compat,
        ..GenerationConfig::default()
    }
}

fn expected(case: &Value) -> Vec<Vec<u32>> {
    rows_u32(&case["sequences"])
}

fn is_padded(case: &Value) -> bool {
    rows_u32(&case["inputs"]["attention_mask"])
        .iter()
        .flatten()
        .any(|&m| m == 0)
}

fn check_beam_scores(label: &str, case: &Value, out: &GenerationOutput) {
    let want: Vec<f64> = case["sequences_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got = out.sequences_scores.as_ref().expect("beam scores");
    assert_eq!(got.len(), want.len(), "{label}");
    for (g, w) in got.iter().zip(&want) {
        let rel = (f64::from(*g) - w).abs() / w.abs().max(f64::MIN_POSITIVE);
        assert!(
            rel <= TOL,
            "{label}: sequences_scores {g} vs HF {w} (rel {rel:.2e})"
        );
    }
}

#[test]
fn every_generation_case_equals_hf() {
    for name in MODELS {
        let m = load(name);
        for case in m.cases() {
            let cname = case["name"].as_str().unwrap();
            let label = format!("{name}/{cname}");
            let batch = m.batch(case);
            let out = m.model.generate(&batch, &config(case, true)).unwrap();
            assert_eq!(
                out.sequences,
                expected(case),
                "{label} (hf_compat_positions)"
            );
            if case.get("sequences_scores").is_some() {
                check_beam_scores(&label, case, &out);
            }
            // Without padding the two position modes are the same computation.
            if !is_padded(case) {
                let out = m.model.generate(&batch, &config(case, false)).unwrap();
                assert_eq!(
                    out.sequences,
                    expected(case),
                    "{label} (real-token positions)"
                );
            }
        }
    }
}

/// With positions counted over real tokens, each row of the left-padded batch continues exactly
/// as the same prompt alone (HF's `batch_left_pad_row{b}`); with HF's quirk it does not have to
/// (tiny-wide's row 0 differs, see the fixture README).
#[test]
fn left_padded_rows_equal_their_unbatched_runs() {
    for name in MODELS {
        let m = load(name);
        let case = m.case("batch_left_pad");
        let cfg = config(case, false);
        let out = m.model.generate(&m.batch(case), &cfg).unwrap();
        if name == "tiny-wide" {
            // the fixture's "quirk" property: HF's batched row 0 differs from row 0 alone
            assert_ne!(
                out.sequences,
                expected(case),
                "{name}: the position mode matters"
            );
        }
        for row in 0..out.len() {
            let alone = expected(m.case(&format!("batch_left_pad_row{row}"))).remove(0);
            let mine = out.tokens(row);
            // `alone` may end with fill pads only if a batch-mate ran longer: it is a single row.
            assert_eq!(mine, &alone[..], "{name} row {row}");
            assert!(
                out.sequences[row][out.prompt_len + out.generated_lens[row]..]
                    .iter()
                    .all(|&t| t == 1),
                "{name} row {row}: fill"
            );
        }
    }
}

/// Checks processed scores: the banned (−inf) entries are the same, the finite ones agree within
/// `TOL` relative to the largest finite magnitude.
fn check_scores(label: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{label}");
    let mut scale = 0f64;
    let mut diff = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "{label}: NaN at {i}");
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{label}: entry {i}");
            continue;
        }
        scale = scale.max(f64::from(w).abs());
        diff = diff.max((f64::from(g) - f64::from(w)).abs());
    }
    let rel = diff / scale.max(f64::MIN_POSITIVE);
    assert!(rel <= TOL, "{label}: rel err {rel:.2e}");
}

#[test]
fn processed_scores_equal_hf() {
    for name in MODELS {
        let m = load(name);
        for cname in ["greedy_ngram3", "greedy_min_new"] {
            let case = m.case(cname);
            let out = m
                .model
                .generate(&m.batch(case), &config(case, true))
                .unwrap();
            let scores = out.scores.as_ref().expect("output_scores");
            assert!(scores.len() >= 3, "{name}/{cname}");
            for (step, step_scores) in scores.iter().enumerate().take(3) {
                let label = format!("{name}/{cname}/step{step}");
                let rows: Vec<&[f32]> = step_scores
                    .rows
                    .iter()
                    .map(|r| r.as_deref().expect("row running at step < 3"))
                    .collect();
                let key = format!("{cname}.step{step}");
                if m.scores.has(&key) {
                    check_scores(&label, &rows.concat(), &m.scores.f32(&key));
                } else {
                    // tiny-realvocab: the top 8 per row (descending)
                    let values = m.scores.f32(&format!("{key}.topk_values"));
                    let indices = m.scores.i64(&format!("{key}.topk_indices"));
                    for (r, row) in rows.iter().enumerate() {
                        let want_idx = &indices[r * 8..(r + 1) * 8];
                        let mut order: Vec<usize> = (0..row.len()).collect();
                        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                        let got_idx: Vec<i64> = order[..8].iter().map(|&i| i as i64).collect();
                        assert_eq!(got_idx, want_idx, "{label} row {r}: top-8 ids");
                        let got: Vec<f32> = order[..8].iter().map(|&i| row[i]).collect();
                        check_scores(&label, &got, &values[r * 8..(r + 1) * 8]);
                    }
                }
            }
        }
    }
}

/// The image is encoded once per session; the `<s><image>…</image>` prefix cache is computed once per
/// image and copied into each prompt's cache. Outputs equal the full prefill's (and HF's) ids, and
/// the processed scores agree to float rounding.
#[test]
fn prefix_reuse_gives_the_same_outputs() {
    for name in MODELS {
        let m = load(name);
        let mut session = ImageSession::new(&m.model, &m.pixels).unwrap();
        let mut full = ImageSession::new(&m.model, &m.pixels)
            .unwrap()
            .with_prefix_reuse(false);
        for case in m.cases() {
            let cname = case["name"].as_str().unwrap();
            let Some(rows) = case["inputs"]["pixel_rows"].as_array() else {
                continue;
            };
            let label = format!("{name}/{cname}");
            let images: Vec<Option<usize>> = rows.iter().map(|r| Some(uint(r))).collect();
            let batch = m.batch(case);
            let (prompts, _) = batch.prompt_batch(1).unwrap();
            for hf_compat in [true, false] {
                let cfg = config(case, hf_compat);
                let reused = session.generate_batch(&prompts, &images, &cfg).unwrap();
                assert!(session.last_reused_prefix_len() > 0, "{label}: no reuse");
                let plain = full.generate_batch(&prompts, &images, &cfg).unwrap();
                assert_eq!(full.last_reused_prefix_len(), 0);
                assert_eq!(
                    reused.sequences, plain.sequences,
                    "{label} hf_compat={hf_compat}"
                );
                if hf_compat || !is_padded(case) {
                    assert_eq!(reused.sequences, expected(case), "{label}");
                }
                let (a, b) = (reused.scores.unwrap(), plain.scores.unwrap());
                for (step, (sa, sb)) in a.iter().zip(&b).enumerate() {
                    for (ra, rb) in sa.rows.iter().zip(&sb.rows) {
                        if let (Some(ra), Some(rb)) = (ra, rb) {
                            check_scores(&format!("{label} step {step}"), ra, rb);
                        }
                    }
                }
            }
        }
        // one stored prefix per image: the main and left-padded prompts share `<s><image>…</image>`
        assert_eq!(session.cached_prefixes(), 2, "{name}");
        let (hits, misses) = session.prefix_store().hits_and_misses();
        assert_eq!(misses, 2, "{name}");
        assert!(hits > misses, "{name}");
    }
}

/// Many prompts on one image: each prompt alone, the prompts batched, with and without reuse,
/// all give the same ids (real-token positions make the batch irrelevant).
#[test]
fn one_image_many_prompts() {
    let m = load("tiny");
    let case = m.case("greedy_ngram0");
    let ids = rows_u32(&case["inputs"]["input_ids"]).remove(0);
    let mask: Vec<bool> = rows_u32(&case["inputs"]["image_embeds_position_mask"])
        .remove(0)
        .iter()
        .map(|&x| x == 1)
        .collect();
    let image_end = mask.iter().rposition(|&x| x).unwrap() + 2;
    let texts: [&[u32]; 4] = [&[100, 101], &[150], &[200, 201, 202, 203], &[]];
    let prompts: Vec<Prompt> = texts
        .iter()
        .map(|t| {
            let mut input_ids = ids[..image_end].to_vec();
            input_ids.extend_from_slice(t);
            let mut m = mask[..image_end].to_vec();
            m.extend(std::iter::repeat_n(false, t.len()));
            Prompt {
                input_ids,
                image_embeds_position_mask: Some(m),
            }
        })
        .collect();
    let cfg = GenerationConfig {
        max_new_tokens: 8,
        no_repeat_ngram_size: 3,
        ..GenerationConfig::default()
    };
    let pixels = m.pixels.narrow(0, 0, 1).unwrap();
    let mut session = ImageSession::new(&m.model, &pixels).unwrap();
    let mut full = ImageSession::new(&m.model, &pixels)
        .unwrap()
        .with_prefix_reuse(false);
    let batched = session.generate(&prompts, &cfg).unwrap();
    // the empty-text prompt keeps one token of the image block to run at prefill
    assert_eq!(session.last_reused_prefix_len(), image_end - 1);
    assert_eq!(
        batched.sequences,
        full.generate(&prompts, &cfg).unwrap().sequences
    );
    for (r, p) in prompts.iter().enumerate() {
        let alone = session.generate(std::slice::from_ref(p), &cfg).unwrap();
        assert_eq!(
            session.last_reused_prefix_len(),
            image_end.min(p.input_ids.len() - 1)
        );
        assert_eq!(alone.tokens(0), batched.tokens(r), "prompt {r}");
        let plain = full.generate(std::slice::from_ref(p), &cfg).unwrap();
        assert_eq!(alone.sequences, plain.sequences, "prompt {r}");
    }
    assert_eq!(session.cached_prefixes(), 1);
    // beams on a session: same as without reuse
    let beams = GenerationConfig {
        num_beams: 3,
        ..cfg.clone()
    };
    assert_eq!(
        session.generate(&prompts[..2], &beams).unwrap().sequences,
        full.generate(&prompts[..2], &beams).unwrap().sequences
    );
}

#[test]
fn bad_inputs_are_typed_errors() {
    let m = load("tiny");
    let case = m.case("greedy_ngram0");
    let cfg = config(case, false);
    // two rows with image positions, one image
    let mut batch = m.batch(case);
    batch.pixel_values = Some(m.pixels.narrow(0, 0, 1).unwrap());
    assert!(matches!(
        m.model.generate(&batch, &cfg),
        Err(Error::InvalidInput(_))
    ));
    // an attention mask with a hole
    let mut batch = m.batch(case);
    batch.attention_mask[3] = 0;
    assert!(matches!(
        m.model.generate(&batch, &cfg),
        Err(Error::InvalidInput(_))
    ));
    // a session row pointing past the images, and a row with positions but no image
    let (prompts, _) = m.batch(case).prompt_batch(1).unwrap();
    let mut session = ImageSession::new(&m.model, &m.pixels).unwrap();
    for images in [vec![Some(0), Some(5)], vec![Some(0), None], vec![Some(0)]] {
        assert!(
            matches!(
                session.generate_batch(&prompts, &images, &cfg),
                Err(Error::InvalidInput(_))
            ),
            "{images:?}"
        );
    }
    // a text-only row given an image
    let text = PromptBatch::new(vec![Prompt::text(vec![0, 9, 10])], 1).unwrap();
    assert!(session.generate_batch(&text, &[Some(0)], &cfg).is_err());
    // generation config errors come through
    let bad = GenerationConfig {
        max_new_tokens: 0,
        ..cfg
    };
    assert!(matches!(
        m.model.generate(&m.batch(case), &bad),
        Err(Error::Generation(_))
    ));
}

/// A right-padded batch (the processor's default side) is re-padded on the left: its rows give the
/// same tokens as the left-padded batch; the step callback sees every generated token once.
#[test]
fn right_padding_is_repadded_and_the_step_callback_sees_every_token() {
    use std::ops::ControlFlow;
    let m = load("tiny-wide");
    let case = m.case("batch_left_pad");
    let left = m.batch(case);
    let cfg = config(case, false);
    let want = m.model.generate(&left, &cfg).unwrap();
    let mut right = left.clone();
    let t = left.seq_len;
    let move_pads = |v: &mut Vec<u32>, fill: u32| {
        for r in 0..left.batch {
            let pads = left.attention_mask[r * t..(r + 1) * t]
                .iter()
                .take_while(|&&x| x == 0)
                .count();
            let row = &mut v[r * t..(r + 1) * t];
            row.rotate_left(pads);
            row[t - pads..].fill(fill);
        }
    };
    move_pads(&mut right.input_ids, 1);
    move_pads(&mut right.attention_mask, 0);
    move_pads(right.image_embeds_position_mask.as_mut().unwrap(), 0);
    assert_ne!(right.input_ids, left.input_ids);
    let mut seen = vec![Vec::new(); left.batch];
    let got = m
        .model
        .generate_with(&right, &cfg, |ev| {
            for t in ev.tokens {
                seen[t.row].push(t.token);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got.sequences, want.sequences);
    for (r, s) in seen.iter().enumerate() {
        assert_eq!(s.as_slice(), got.new_tokens(r), "row {r}");
    }
}
