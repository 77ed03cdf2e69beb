//! Text generation: HF `GenerationMixin.generate` (transformers **5.24**) over any [`CausalLm`].
//!
//! | HF                                             | here                                         |
//! |------------------------------------------------|----------------------------------------------|
//! | `GenerationConfig`                             | [`GenerationConfig`] ([`HfDefaults`] says whose defaults) |
//! | `_get_logits_processor` and its processors     | [`LogitsProcessorList`], [`LogitsProcessor`]  |
//! | `_sample` (greedy and multinomial)             | [`generate`] with `num_beams = 1`             |
//! | `_beam_search` (and beam sampling)             | [`generate`] with `num_beams > 1`             |
//! | `MaxLengthCriteria`, `EosTokenCriteria`        | [`FinishReason`]                              |
//! | `TextStreamer`                                 | [`generate_with`] + [`TextStream`]            |
//!
//! What is identical to HF: token ids for greedy and beam search (the processors are bit-exact, checked
//! against fixtures made by HF's own classes and by HF `generate` on a toy model), left padding, pad-filled
//! finished rows, `sequences` including the prompt, `scores`/`sequences_scores`. What is not: sampling
//! draws (torch's RNG is replaced by a seeded ChaCha8 per row; the distribution is HF's), and by default
//! the decode positions of left-padded rows: a row's output does not depend on its batch-mates unless
//! [`GenerationConfig::hf_compat_positions`] asks for HF's quirk (reference §4.2).
//!
//! ```
//! use kosmos2::generation::{generate, CausalLm, GenerationConfig, Logits, PromptBatch, Prompt};
//! use kosmos2::PositionMode;
//!
//! /// A toy LM whose next token is always `last + 1`, until 9 which is followed by eos (2).
//! #[derive(Debug, Default)]
//! struct Counter { last: Vec<u32> }
//! impl Counter {
//!     fn logits(&self) -> Logits {
//!         let data = self.last.iter().flat_map(|&t| {
//!             let next = if t >= 9 { 2 } else { t + 1 };
//!             (0..12).map(move |v| if v == next { 1.0 } else { 0.0 })
//!         });
//!         Logits::new(data.collect(), 12).unwrap()
//!     }
//! }
//! impl CausalLm for Counter {
//!     type Error = std::convert::Infallible;
//!     fn vocab_size(&self) -> usize { 12 }
//!     fn prefill(&mut self, b: &PromptBatch, _: PositionMode) -> Result<Logits, Self::Error> {
//!         self.last = b.input_ids().iter().map(|r| r[r.len() - 1]).collect();
//!         Ok(self.logits())
//!     }
//!     fn step(&mut self, tokens: &[u32]) -> Result<Logits, Self::Error> {
//!         self.last = tokens.to_vec();
//!         Ok(self.logits())
//!     }
//!     fn reorder_cache(&mut self, rows: &[usize]) -> Result<(), Self::Error> {
//!         self.last = rows.iter().map(|&r| self.last[r]).collect();
//!         Ok(())
//!     }
//! }
//!
//! let batch = PromptBatch::new(vec![Prompt::text(vec![0, 6]), Prompt::text(vec![0, 3, 4])], 1).unwrap();
//! let cfg = GenerationConfig { max_new_tokens: 5, ..GenerationConfig::default() };
//! let out = generate(&mut Counter::default(), &batch, &cfg).unwrap();
//! assert_eq!(out.sequences[0], vec![1, 0, 6, 7, 8, 9, 2, 1]); // eos, then pad fill
//! assert_eq!(out.new_tokens(1), &[5, 6, 7, 8, 9]);            // stopped by max_new_tokens
//! ```

mod beam;
mod config;
mod decode;
mod error;
mod logits_process;
mod model;
mod output;
mod sampling;
mod stopping;
mod stream;

use std::ops::ControlFlow;

pub use config::{EarlyStopping, GenerationConfig, HfDefaults};
pub use error::{BoxError, GenerationError, Result};
pub use logits_process::{LogitsProcessor, LogitsProcessorList, RowContext};
pub use model::{CausalLm, Logits, Prompt, PromptBatch};
pub use output::{GenerationOutput, GenerationStats, RowToken, StepEvent, StepScores};
pub use sampling::{argmax, log_softmax, Sampler};
pub use stopping::FinishReason;
pub use stream::{Detokenize, TextStream, DEFAULT_HOLDBACK};

/// Generates continuations of every prompt of `batch` (greedy, sampling or beam search, as `cfg` says).
pub fn generate<M: CausalLm>(
    model: &mut M,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
) -> Result<GenerationOutput> {
    run(model, batch, cfg, None)
}

/// [`generate`] with a callback after every step (greedy and sampling only), e.g. to feed a
/// [`TextStream`] per row. Returning [`ControlFlow::Break`] stops every row ([`FinishReason::Stopped`]).
pub fn generate_with<M, F>(
    model: &mut M,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    mut on_step: F,
) -> Result<GenerationOutput>
where
    M: CausalLm,
    F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
{
    if cfg.num_beams > 1 {
        return Err(GenerationError::StreamingWithBeams);
    }
    run(model, batch, cfg, Some(&mut on_step))
}

fn run<M: CausalLm>(
    model: &mut M,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    on_step: Option<decode::OnStep<'_>>,
) -> Result<GenerationOutput> {
    cfg.validate()?;
    if batch.is_empty() {
        return Err(GenerationError::InvalidBatch(
            "the batch has no prompt".into(),
        ));
    }
    let procs = LogitsProcessorList::from_config(cfg);
    if cfg.num_beams > 1 {
        beam::beam_search(model, batch, cfg, &procs)
    } else {
        decode::decode(model, batch, cfg, &procs, on_step)
    }
}
