//! Greedy and beam search against HF `generate()` (transformers 5.24) on a deterministic toy LM: the
//! next-token logits are a fixed random table row chosen by (previous two ids, number of real tokens).
//! Fixture: tests/fixtures/generation/generation.json (xtask/reference/gen_generation.py).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::ops::ControlFlow;

use kosmos2::generation::{
    generate, generate_with, CausalLm, FinishReason, GenerationConfig, GenerationError,
    GenerationOutput, Logits, Prompt, PromptBatch,
};
use kosmos2::PositionMode;
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

#[derive(Debug, thiserror::Error)]
#[error("toy model failure at call {0}")]
struct ToyError(usize);

/// The toy LM of gen_generation.py: `table[(prev2 * 131 + prev1 * 31 + n_real * 7) % rows]`.
#[derive(Debug, Clone)]
struct ToyLm {
    table: Vec<Vec<f32>>,
    vocab: usize,
    /// Per cache row: the full history (pads included) and the real-token count.
    rows: Vec<(Vec<u32>, usize)>,
    /// Fail on this call number (1 = prefill), to test error propagation.
    fail_at: Option<usize>,
    calls: usize,
    /// The position mode of the last prefill.
    mode: Option<PositionMode>,
}

impl ToyLm {
    fn from_fixture(fx: &Value) -> Self {
        let toy = &fx["toy"];
        let table: Vec<Vec<f32>> = rows_u32(&toy["table"])
            .into_iter()
            .map(|r| r.into_iter().map(f32::from_bits).collect())
            .collect();
        let vocab = toy["vocab_size"].as_u64().expect("vocab") as usize;
        assert_eq!(
            table.len(),
            toy["table_rows"].as_u64().expect("rows") as usize
        );
        Self {
            table,
            vocab,
            rows: Vec::new(),
            fail_at: None,
            calls: 0,
            mode: None,
        }
    }

    fn logits(&self) -> Logits {
        let n = self.table.len();
        let mut data = Vec::with_capacity(self.rows.len() * self.vocab);
        for (ids, n_real) in &self.rows {
            let prev1 = ids[ids.len() - 1] as usize;
            let prev2 = if ids.len() >= 2 {
                ids[ids.len() - 2] as usize
            } else {
                0
            };
            data.extend_from_slice(&self.table[(prev2 * 131 + prev1 * 31 + n_real * 7) % n]);
        }
        Logits::new(data, self.vocab).expect("toy logits")
    }

    fn tick(&mut self) -> Result<(), ToyError> {
        self.calls += 1;
        match self.fail_at {
            Some(n) if n == self.calls => Err(ToyError(n)),
            _ => Ok(()),
        }
    }
}

impl CausalLm for ToyLm {
    type Error = ToyError;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn prefill(
        &mut self,
        batch: &PromptBatch,
        positions: PositionMode,
    ) -> Result<Logits, ToyError> {
        self.tick()?;
        self.mode = Some(positions);
        self.rows = (0..batch.len())
            .map(|r| (batch.input_ids()[r].clone(), batch.real_ids(r).len()))
            .collect();
        Ok(self.logits())
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Logits, ToyError> {
        self.tick()?;
        assert_eq!(tokens.len(), self.rows.len(), "one token per cache row");
        for ((ids, n_real), &t) in self.rows.iter_mut().zip(tokens) {
            ids.push(t);
            *n_real += 1;
        }
        Ok(self.logits())
    }

    fn reorder_cache(&mut self, rows: &[usize]) -> Result<(), ToyError> {
        assert!(!rows.is_empty());
        self.rows = rows.iter().map(|&r| self.rows[r].clone()).collect();
        Ok(())
    }
}

fn config(case: &Value) -> GenerationConfig {
    let mut cfg: GenerationConfig = serde_json::from_value(case["params"].clone()).expect("params");
    cfg.output_scores = true;
    cfg.hf_compat_positions = true; // HF's n-gram history includes the left pads
    cfg
}

fn batch(case: &Value) -> PromptBatch {
    PromptBatch::from_padded(
        rows_u32(&case["input_ids"]),
        &rows_u32(&case["attention_mask"]),
        None,
        1,
    )
    .expect("fixture batch")
}

fn cases(fx: &Value, beams: bool) -> Vec<&Value> {
    fx["generate"]
        .as_array()
        .expect("generate")
        .iter()
        .filter(|c| (c["params"]["num_beams"].as_u64().expect("num_beams") > 1) == beams)
        .collect()
}

#[test]
fn greedy_matches_hf_sequences_and_scores() {
    let fx = fixture();
    let greedy = cases(&fx, false);
    assert!(greedy.len() >= 10);
    let mut compared_rows = 0;
    for case in greedy {
        let name = case["name"].as_str().expect("name");
        let mut model = ToyLm::from_fixture(&fx);
        let out = generate(&mut model, &batch(case), &config(case)).expect(name);
        assert_eq!(
            out.sequences,
            rows_u32(&case["sequences"]),
            "{name}: sequences"
        );
        // scores: HF keeps scoring finished rows; we do not compute them (None)
        let hf_scores = case["scores"].as_array().expect("scores");
        let ours = out.scores.as_ref().expect("output_scores");
        assert_eq!(ours.len(), hf_scores.len(), "{name}: steps");
        for (step, (mine, theirs)) in ours.iter().zip(hf_scores).enumerate() {
            for (r, want) in rows_u32(theirs).into_iter().enumerate() {
                let running = step < out.generated_lens[r];
                match &mine.rows[r] {
                    Some(got) => {
                        assert!(
                            running,
                            "{name}: scores for finished row {r} at step {step}"
                        );
                        let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(got, want, "{name}: scores of row {r} at step {step}");
                        compared_rows += 1;
                    }
                    None => assert!(!running, "{name}: missing scores of row {r} at step {step}"),
                }
            }
        }
    }
    assert!(compared_rows > 250, "{compared_rows}");
}

#[test]
fn beam_search_matches_hf() {
    let fx = fixture();
    let beam = cases(&fx, true);
    assert!(beam.len() >= 100);
    let mut max_score_err = 0f32;
    for case in beam {
        let name = case["name"].as_str().expect("name");
        let mut model = ToyLm::from_fixture(&fx);
        let out = generate(&mut model, &batch(case), &config(case)).expect(name);
        assert_eq!(
            out.sequences,
            rows_u32(&case["sequences"]),
            "{name}: sequences"
        );
        let want: Vec<f32> = u32s(&case["sequences_scores"])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let got = out.sequences_scores.as_ref().expect("beam scores");
        for (g, w) in got.iter().zip(&want) {
            // log_softmax sums in a different order than torch: a few ulp
            let err = (g - w).abs() / w.abs().max(1.0);
            max_score_err = max_score_err.max(err);
            assert!(err < 1e-5, "{name}: sequence score {g} vs HF {w}");
        }
    }
    eprintln!("beam sequences_scores: max relative error {max_score_err:.2e}");
}

/// The rows of a batch, each generated alone (no pads): new tokens must equal the batched run's.
fn assert_rows_independent(
    fx: &Value,
    case: &Value,
    batched: &GenerationOutput,
    cfg: &GenerationConfig,
) {
    let name = case["name"].as_str().expect("name");
    let b = batch(case);
    for r in 0..b.len() {
        let alone = PromptBatch::new(vec![Prompt::text(b.real_ids(r).to_vec())], 1).expect("row");
        let mut model = ToyLm::from_fixture(fx);
        let out = generate(&mut model, &alone, cfg).expect(name);
        assert_eq!(
            out.new_tokens(0),
            batched.new_tokens(r),
            "{name}: row {r} alone vs batched"
        );
        assert_eq!(out.tokens(0), batched.tokens(r), "{name}: row {r} tokens");
        assert_eq!(
            out.finish_reasons[0], batched.finish_reasons[r],
            "{name}: row {r} finish"
        );
    }
}

#[test]
fn a_row_does_not_depend_on_its_batch_mates() {
    let fx = fixture();
    for case in fx["generate"].as_array().expect("generate") {
        let mut cfg = config(case);
        cfg.hf_compat_positions = false;
        cfg.output_scores = false;
        let mut model = ToyLm::from_fixture(&fx);
        let out = generate(&mut model, &batch(case), &cfg).expect("batched");
        assert_eq!(model.mode, Some(PositionMode::RealTokens));
        assert_rows_independent(&fx, case, &out, &cfg);
    }
}

#[test]
fn finished_rows_are_dropped_and_pad_filled() {
    let fx = fixture();
    let case = cases(&fx, false)
        .into_iter()
        .find(|c| c["name"] == "greedy_multi_eos")
        .expect("case");
    let mut model = ToyLm::from_fixture(&fx);
    let out = generate(&mut model, &batch(case), &config(case)).expect("generate");
    assert_eq!(model.mode, Some(PositionMode::HfCompat));
    // rows stopped at different steps: at least one early eos, filled with pad afterwards
    let lens = &out.generated_lens;
    assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");
    for (r, &len) in lens.iter().enumerate() {
        let fill = &out.sequences[r][out.prompt_len + len..];
        assert!(fill.iter().all(|&t| t == 1), "row {r} fill {fill:?}");
        if out.finish_reasons[r] == FinishReason::Eos {
            assert!([2, 7, 19].contains(out.new_tokens(r).last().expect("token")));
        }
    }
    // the finished rows cost no forward: the model's last step had fewer rows
    assert!(model.rows.len() < out.len());
    assert_eq!(out.stats.new_tokens, lens.iter().sum::<usize>());
    assert_eq!(
        out.stats.decode_steps,
        lens.iter().max().copied().unwrap_or(0) - 1
    );
}

#[test]
fn step_callback_streams_every_token_and_can_stop() {
    let fx = fixture();
    let case = cases(&fx, false)
        .into_iter()
        .find(|c| c["name"] == "greedy_three")
        .expect("case");
    let cfg = config(case);
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 3];
    let mut model = ToyLm::from_fixture(&fx);
    let out = generate_with(&mut model, &batch(case), &cfg, |ev| {
        for t in ev.tokens {
            seen[t.row].push(t.token);
        }
        ControlFlow::Continue(())
    })
    .expect("generate_with");
    for (r, tokens) in seen.iter().enumerate() {
        assert_eq!(tokens.as_slice(), out.new_tokens(r));
    }

    let mut model = ToyLm::from_fixture(&fx);
    let stopped = generate_with(&mut model, &batch(case), &cfg, |ev| {
        if ev.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("stopped");
    for r in 0..3 {
        assert_eq!(
            stopped.new_tokens(r),
            &out.new_tokens(r)[..3.min(out.generated_lens[r])]
        );
        if out.generated_lens[r] > 3 {
            assert_eq!(stopped.finish_reasons[r], FinishReason::Stopped);
        }
    }

    let beam_cfg = GenerationConfig {
        num_beams: 2,
        ..cfg
    };
    let err = generate_with(&mut model, &batch(case), &beam_cfg, |_| {
        ControlFlow::Continue(())
    });
    assert!(matches!(err, Err(GenerationError::StreamingWithBeams)));
}

#[test]
fn model_failures_and_bad_outputs_are_typed_errors() {
    let fx = fixture();
    let case = cases(&fx, false)
        .into_iter()
        .find(|c| c["name"] == "greedy_ragged")
        .expect("case");
    for (fail_at, beams) in [(1, 1), (3, 1), (1, 3), (4, 3)] {
        let mut model = ToyLm::from_fixture(&fx);
        model.fail_at = Some(fail_at);
        let cfg = GenerationConfig {
            num_beams: beams,
            ..config(case)
        };
        let err = generate(&mut model, &batch(case), &cfg).expect_err("must fail");
        assert!(matches!(err, GenerationError::Model(_)), "{err}");
        assert!(
            err.to_string().contains(&format!("call {fail_at}")),
            "{err}"
        );
    }

    /// Returns one row too few.
    #[derive(Debug)]
    struct Short;
    impl CausalLm for Short {
        type Error = std::convert::Infallible;
        fn vocab_size(&self) -> usize {
            4
        }
        fn prefill(&mut self, _: &PromptBatch, _: PositionMode) -> Result<Logits, Self::Error> {
            Ok(Logits::new(vec![0.0; 4], 4).expect("logits"))
        }
        fn step(&mut self, _: &[u32]) -> Result<Logits, Self::Error> {
            Ok(Logits::new(vec![0.0; 4], 4).expect("logits"))
        }
        fn reorder_cache(&mut self, _: &[usize]) -> Result<(), Self::Error> {
            Ok(())
        }
    }
    let two = PromptBatch::new(vec![Prompt::text(vec![0, 3]), Prompt::text(vec![0, 3])], 1)
        .expect("batch");
    for beams in [1, 2] {
        let cfg = GenerationConfig {
            num_beams: beams,
            ..GenerationConfig::default()
        };
        let err = generate(&mut Short, &two, &cfg).expect_err("short logits");
        assert!(matches!(err, GenerationError::ModelOutput { .. }), "{err}");
    }
    let bad = GenerationConfig {
        max_new_tokens: 0,
        ..GenerationConfig::default()
    };
    assert!(matches!(
        generate(&mut Short, &two, &bad),
        Err(GenerationError::InvalidConfig(_))
    ));
}
