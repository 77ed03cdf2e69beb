//! Greedy and sampling decoding; mirrors HF `GenerationMixin._sample` (transformers 5.24).
//!
//! One difference in *how*, none in *what*: HF keeps running finished rows (feeding them pad tokens and
//! discarding the result); here they are dropped from the cache with [`CausalLm::reorder_cache`], so they
//! cost nothing. Their outputs are the same: HF's rows never influence each other.

use std::ops::ControlFlow;
use std::time::Instant;

use kosmos_text::PositionMode;

use super::config::GenerationConfig;
use super::error::{GenerationError, Result};
use super::logits_process::{LogitsProcessorList, RowContext};
use super::model::{CausalLm, Logits, PromptBatch};
use super::output::{GenerationOutput, GenerationStats, RowToken, StepEvent, StepScores};
use super::sampling::{argmax, Sampler};
use super::stopping::{FinishReason, StoppingCriteria};

/// The per-step callback type.
pub(crate) type OnStep<'a> = &'a mut dyn FnMut(&StepEvent<'_>) -> ControlFlow<()>;

pub(crate) fn model_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> GenerationError {
    GenerationError::Model(Box::new(e))
}

pub(crate) fn check_logits(logits: &Logits, rows: usize, vocab: usize) -> Result<()> {
    if logits.vocab() != vocab {
        return Err(GenerationError::ModelOutput {
            what: "vocab size",
            expected: vocab,
            got: logits.vocab(),
        });
    }
    if logits.rows() != rows {
        return Err(GenerationError::ModelOutput {
            what: "logits rows",
            expected: rows,
            got: logits.rows(),
        });
    }
    Ok(())
}

pub(crate) fn position_mode(cfg: &GenerationConfig) -> PositionMode {
    if cfg.hf_compat_positions {
        PositionMode::HfCompat
    } else {
        PositionMode::RealTokens
    }
}

/// Greedy (`do_sample = false`) or multinomial sampling, one token per running row per step.
pub(crate) fn decode<M: CausalLm>(
    model: &mut M,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    procs: &LogitsProcessorList,
    mut on_step: Option<OnStep<'_>>,
) -> Result<GenerationOutput> {
    let rows = batch.len();
    let prompt_len = batch.prompt_len();
    let vocab = model.vocab_size();
    let pad = cfg
        .resolved_pad_token_id()
        .ok_or_else(|| GenerationError::InvalidConfig("no pad_token_id and no eos id".into()))?;
    let stop = StoppingCriteria::new(prompt_len, cfg.max_new_tokens, &cfg.eos_token_id);

    let mut seqs: Vec<Vec<u32>> = batch
        .input_ids()
        .iter()
        .map(|r| {
            let mut v = Vec::with_capacity(prompt_len + cfg.max_new_tokens);
            v.extend_from_slice(r);
            v
        })
        .collect();
    let mut finish: Vec<Option<FinishReason>> = vec![None; rows];
    let mut alive: Vec<usize> = (0..rows).collect();
    let mut samplers: Vec<Sampler> = if cfg.do_sample {
        (0..rows)
            .map(|r| Sampler::new(cfg.seed, r as u64))
            .collect()
    } else {
        Vec::new()
    };
    let mut all_scores = cfg.output_scores.then(Vec::new);
    let mut stats = GenerationStats::default();

    let t0 = Instant::now();
    let mut logits = model
        .prefill(batch, position_mode(cfg))
        .map_err(model_err)?;
    stats.prefill = t0.elapsed();
    let t1 = Instant::now();

    let mut events = Vec::with_capacity(rows);
    // Reused every step (with `step_into` the model reuses `logits` too): no allocation per token.
    let mut keep: Vec<usize> = Vec::with_capacity(rows);
    let mut tokens: Vec<u32> = Vec::with_capacity(rows);
    for step in 0.. {
        check_logits(&logits, alive.len(), vocab)?;
        let mut step_scores = all_scores.as_ref().map(|_| vec![None; rows]);
        events.clear();
        for (i, &r) in alive.iter().enumerate() {
            let Some(scores) = logits.row_mut(i) else {
                return Err(GenerationError::ModelOutput {
                    what: "logits rows",
                    expected: alive.len(),
                    got: i,
                });
            };
            let ctx = RowContext {
                ids: &seqs[r],
                pad_len: batch.pad_len(r),
                prompt_len,
            };
            procs.process(&ctx, scores);
            let token = if cfg.do_sample {
                samplers[r]
                    .sample(scores)
                    .ok_or(GenerationError::NoValidToken { row: r, step })?
            } else {
                argmax(scores).unwrap_or(0)
            } as u32;
            if let Some(s) = step_scores.as_mut() {
                s[r] = Some(scores.to_vec());
            }
            seqs[r].push(token);
            finish[r] = stop.check(&seqs[r]);
            events.push(RowToken {
                row: r,
                token,
                finished: finish[r],
            });
        }
        if let (Some(all), Some(s)) = (all_scores.as_mut(), step_scores) {
            all.push(StepScores { rows: s });
        }
        if let Some(cb) = on_step.as_mut() {
            if cb(&StepEvent {
                step,
                tokens: &events,
            })
            .is_break()
            {
                for &r in &alive {
                    finish[r].get_or_insert(FinishReason::Stopped);
                }
            }
        }
        keep.clear();
        keep.extend((0..alive.len()).filter(|&i| finish[alive[i]].is_none()));
        if keep.is_empty() {
            break;
        }
        if keep.len() < alive.len() {
            model.reorder_cache(&keep).map_err(model_err)?;
            for (i, &k) in keep.iter().enumerate() {
                alive[i] = alive[k];
            }
            alive.truncate(keep.len());
        }
        tokens.clear();
        tokens.extend(alive.iter().map(|&r| seqs[r][seqs[r].len() - 1]));
        model.step_into(&tokens, &mut logits).map_err(model_err)?;
        stats.decode_steps += 1;
        stats.decode_tokens += tokens.len();
    }
    stats.decode = t1.elapsed();

    let total = seqs.iter().map(Vec::len).max().unwrap_or(prompt_len);
    let generated_lens: Vec<usize> = seqs.iter().map(|s| s.len() - prompt_len).collect();
    stats.new_tokens = generated_lens.iter().sum();
    for s in &mut seqs {
        s.resize(total, pad);
    }
    Ok(GenerationOutput {
        sequences: seqs,
        prompt_len,
        pad_lens: batch.pad_lens().to_vec(),
        generated_lens,
        finish_reasons: finish
            .into_iter()
            .map(|f| f.unwrap_or(FinishReason::MaxNewTokens))
            .collect(),
        scores: all_scores,
        sequences_scores: None,
        stats,
    })
}
