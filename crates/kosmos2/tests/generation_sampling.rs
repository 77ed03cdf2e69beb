//! Sampling: reproducible for a seed, and distributed as HF's processed softmax (torch's RNG cannot be
//! matched, so the distribution is tested instead of the draws).

use kosmos2::generation::{generate, CausalLm, GenerationConfig, Logits, Prompt, PromptBatch};
use kosmos2::PositionMode;

/// A model whose next-token logits never change.
#[derive(Debug)]
struct ConstLm {
    logits: Vec<f32>,
    rows: usize,
}

impl ConstLm {
    fn new(logits: &[f32]) -> Self {
        Self {
            logits: logits.to_vec(),
            rows: 0,
        }
    }
    fn out(&self) -> Logits {
        Logits::new(self.logits.repeat(self.rows), self.logits.len()).expect("logits")
    }
}

impl CausalLm for ConstLm {
    type Error = std::convert::Infallible;
    fn vocab_size(&self) -> usize {
        self.logits.len()
    }
    fn prefill(&mut self, batch: &PromptBatch, _: PositionMode) -> Result<Logits, Self::Error> {
        self.rows = batch.len();
        Ok(self.out())
    }
    fn step(&mut self, tokens: &[u32]) -> Result<Logits, Self::Error> {
        self.rows = tokens.len();
        Ok(self.out())
    }
    fn reorder_cache(&mut self, rows: &[usize]) -> Result<(), Self::Error> {
        self.rows = rows.len();
        Ok(())
    }
}

const LOGITS: [f32; 10] = [2.0, 1.5, 1.2, 1.0, 0.4, 0.0, -0.3, -1.0, -2.0, 3.0];

fn sampling_config(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        do_sample: true,
        temperature: 0.8,
        top_k: 6,
        top_p: 0.9,
        max_new_tokens,
        eos_token_id: vec![],
        pad_token_id: Some(1),
        seed: 1234,
        ..GenerationConfig::default()
    }
}

/// The target distribution, computed independently in f64: softmax(l / T), keep the 6 best, then drop the
/// least likely tokens whose cumulative mass (ascending) is <= 1 - top_p, renormalise.
fn expected_distribution() -> Vec<f64> {
    let scaled: Vec<f64> = LOGITS.iter().map(|&l| l as f64 / 0.8).collect();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]));
    let kept: Vec<usize> = order[..6].to_vec(); // descending
    let z: f64 = kept.iter().map(|&i| scaled[i].exp()).sum();
    let mut asc = kept.clone();
    asc.reverse();
    let mut cum = 0.0;
    let mut nucleus = Vec::new();
    for &i in &asc {
        cum += scaled[i].exp() / z;
        if cum > 0.1 {
            nucleus.push(i);
        } else {
            // make sure the case is not at the boundary
            assert!(0.1 - cum > 1e-3, "boundary case: {cum}");
        }
    }
    let zn: f64 = nucleus.iter().map(|&i| scaled[i].exp()).sum();
    let mut p = vec![0.0; scaled.len()];
    for &i in &nucleus {
        p[i] = scaled[i].exp() / zn;
    }
    p
}

#[test]
fn samples_follow_the_processed_distribution() {
    let n = 20_000;
    let batch = PromptBatch::new(vec![Prompt::text(vec![0, 5])], 1).expect("batch");
    let out = generate(&mut ConstLm::new(&LOGITS), &batch, &sampling_config(n)).expect("generate");
    let tokens = out.new_tokens(0);
    assert_eq!(tokens.len(), n);
    let mut counts = vec![0usize; LOGITS.len()];
    for &t in tokens {
        counts[t as usize] += 1;
    }
    let p = expected_distribution();
    let kept = p.iter().filter(|&&x| x > 0.0).count();
    assert!(
        (3..6).contains(&kept),
        "top-k and top-p must both cut: {p:?}"
    );
    let mut chi2 = 0.0;
    let mut tv = 0.0;
    for (i, (&c, &pi)) in counts.iter().zip(&p).enumerate() {
        if pi == 0.0 {
            assert_eq!(c, 0, "token {i} is filtered out but was sampled");
            continue;
        }
        let e = pi * n as f64;
        chi2 += (c as f64 - e).powi(2) / e;
        tv += (c as f64 / n as f64 - pi).abs() / 2.0;
    }
    // chi-square with kept - 1 <= 4 degrees of freedom: P(chi2 > 23.5) < 1e-4
    assert!(
        chi2 < 23.5,
        "chi2 = {chi2}, counts {counts:?}, expected {p:?}"
    );
    assert!(tv < 0.01, "total variation {tv}");
}

#[test]
fn sampling_is_reproducible_per_seed_and_row() {
    let prompts = || vec![Prompt::text(vec![0, 5, 6]), Prompt::text(vec![0, 5, 6])];
    let batch = PromptBatch::new(prompts(), 1).expect("batch");
    let cfg = GenerationConfig {
        top_k: 0,
        top_p: 1.0,
        temperature: 1.5,
        ..sampling_config(40)
    };
    let run = |cfg: &GenerationConfig, b: &PromptBatch| {
        generate(&mut ConstLm::new(&LOGITS), b, cfg).expect("generate")
    };
    let a = run(&cfg, &batch);
    assert_eq!(
        a.sequences,
        run(&cfg, &batch).sequences,
        "same seed, same draws"
    );
    assert_ne!(
        a.new_tokens(0),
        a.new_tokens(1),
        "each row has its own stream"
    );
    let other = GenerationConfig {
        seed: cfg.seed + 1,
        ..cfg.clone()
    };
    assert_ne!(
        a.sequences,
        run(&other, &batch).sequences,
        "another seed, other draws"
    );
    // row 0 of a batch draws from stream 0, like a single prompt
    let alone = PromptBatch::new(vec![prompts().remove(0)], 1).expect("batch");
    assert_eq!(run(&cfg, &alone).new_tokens(0), a.new_tokens(0));
}

#[test]
fn beam_sampling_is_reproducible() {
    let batch = PromptBatch::new(
        vec![Prompt::text(vec![0, 5]), Prompt::text(vec![0, 7, 8])],
        1,
    )
    .expect("batch");
    let cfg = GenerationConfig {
        num_beams: 3,
        eos_token_id: vec![9],
        top_k: 5,
        top_p: 1.0,
        ..sampling_config(12)
    };
    let a = generate(&mut ConstLm::new(&LOGITS), &batch, &cfg).expect("beam sample");
    let b = generate(&mut ConstLm::new(&LOGITS), &batch, &cfg).expect("beam sample");
    assert_eq!(a.sequences, b.sequences);
    assert_eq!(a.sequences_scores, b.sequences_scores);
    for r in 0..2 {
        // top_k 5 with beams keeps max(5, len(eos) + 1) tokens: only the 5 best ids can appear
        assert!(
            a.new_tokens(r)
                .iter()
                .all(|&t| [9, 0, 1, 2, 3].contains(&t)),
            "{:?}",
            a.new_tokens(r)
        );
    }
}
