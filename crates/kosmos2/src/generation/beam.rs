//! Beam search (and beam sampling); mirrors HF `GenerationMixin._beam_search` of transformers 5.24
//! (the vectorised rewrite of the former `BeamSearchScorer`), step for step and in f32:
//!
//! 1. every beam's logits → `log_softmax` → logits processors; add the beam's running score;
//! 2. per batch item, the best `K = max(2, 1 + n_eos) · num_beams` of the `num_beams · vocab` candidates
//!    (or `K` drawn without replacement when sampling);
//! 3. a candidate "hits" when its token is an eos id or it reaches `max_length`; the `num_beams` best
//!    non-hitting candidates (hitting ones get `-1e9`) are the next running beams;
//! 4. hitting candidates among the first `num_beams` become finished hypotheses with score
//!    `logprob / generated_len ^ length_penalty`; finished hypotheses and candidates are merged and the
//!    best `num_beams` kept (the `-1e9` offsets of HF included, applied in HF's order);
//! 5. the early-stop heuristic (`early_stopping` false / true / "never") and HF's three loop conditions.
//!
//! Ties between exactly equal scores are broken by the lower flat index (torch's `topk` order for ties
//! is unspecified). The best finished hypothesis of each item is returned, padded to a common length.

use std::time::Instant;

use super::config::{EarlyStopping, GenerationConfig};
use super::decode::{check_logits, model_err, position_mode};
use super::error::{GenerationError, Result};
use super::logits_process::{LogitsProcessorList, RowContext};
use super::model::{CausalLm, PromptBatch};
use super::output::{GenerationOutput, GenerationStats, StepScores};
use super::sampling::{log_softmax, Sampler};
use super::stopping::{FinishReason, StoppingCriteria};

/// HF's "very large negative value".
const NEG: f32 = -1.0e9;

/// torch's descending order (NaN first), ties by index: a total order on `(value, index)`.
fn desc(a: (f32, usize), b: (f32, usize)) -> std::cmp::Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal),
    };
    by_value.then(a.1.cmp(&b.1))
}

/// Indices of the `k` largest values, best first.
fn topk(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<(f32, usize)> = values.iter().copied().zip(0..).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |a, b| desc(*a, *b));
        idx.truncate(k);
    }
    idx.sort_by(|a, b| desc(*a, *b));
    idx.into_iter().map(|(_, i)| i).collect()
}

/// `0.0` or `-1e9`, as HF's `bool.to(float32) * -1e9`.
fn penalty(flag: bool) -> f32 {
    f32::from(u8::from(flag)) * NEG
}

#[derive(Debug, Clone)]
struct Hypothesis {
    seq: Vec<u32>,
    score: f32,
    finished: bool,
    gen_len: usize,
}

#[derive(Debug)]
struct Item {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    done: Vec<Hypothesis>,
    unsatisfied: bool,
}

#[derive(Debug)]
struct Candidate {
    seq: Vec<u32>,
    logprob: f32,
    beam: usize,
    hits: bool,
}

/// Runs beam search (`cfg.num_beams > 1`).
pub(crate) fn beam_search<M: CausalLm>(
    model: &mut M,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    procs: &LogitsProcessorList,
) -> Result<GenerationOutput> {
    let nb = cfg.num_beams;
    let items = batch.len();
    let prompt_len = batch.prompt_len();
    let vocab = model.vocab_size();
    let eos = &cfg.eos_token_id;
    let k = 2usize.max(1 + eos.len()) * nb;
    let stop = StoppingCriteria::new(prompt_len, cfg.max_new_tokens, eos);
    let max_length = stop.max_length();
    let pad = cfg
        .resolved_pad_token_id()
        .ok_or_else(|| GenerationError::InvalidConfig("no pad_token_id and no eos id".into()))?;
    // HF: `pad_token_id or eos_token_id[0]` (a pad id of 0 is falsy in Python)
    let fill = match eos.first() {
        Some(&e) if pad == 0 => e,
        _ => pad,
    };
    let lp = cfg.length_penalty;
    let len_pen = |n: usize| (n as f64).powf(lp) as f32;

    let mut state: Vec<Item> = batch
        .input_ids()
        .iter()
        .map(|row| Item {
            running: vec![row.clone(); nb],
            running_scores: (0..nb).map(|j| if j == 0 { 0.0 } else { NEG }).collect(),
            done: vec![
                Hypothesis {
                    seq: row.clone(),
                    score: NEG,
                    finished: false,
                    gen_len: 0,
                };
                nb
            ],
            unsatisfied: true,
        })
        .collect();
    let mut samplers: Vec<Sampler> = if cfg.do_sample {
        (0..items)
            .map(|i| Sampler::new(cfg.seed, i as u64))
            .collect()
    } else {
        Vec::new()
    };
    let mut all_scores = cfg.output_scores.then(Vec::new);
    let mut stats = GenerationStats::default();

    let t0 = Instant::now();
    let prefill = model
        .prefill(batch, position_mode(cfg))
        .map_err(model_err)?;
    stats.prefill = t0.elapsed();
    let t1 = Instant::now();
    check_logits(&prefill, items, vocab)?;
    let expand: Vec<usize> = (0..items)
        .flat_map(|i| std::iter::repeat_n(i, nb))
        .collect();
    model.reorder_cache(&expand).map_err(model_err)?;
    let mut flat: Vec<f32> = Vec::with_capacity(items * nb * vocab);
    for &i in &expand {
        flat.extend_from_slice(prefill.row(i).unwrap_or(&[]));
    }

    let mut cur_len = prompt_len;
    for step in 0.. {
        if flat.len() != items * nb * vocab {
            return Err(GenerationError::ModelOutput {
                what: "logits values (batch × num_beams × vocab)",
                expected: items * nb * vocab,
                got: flat.len(),
            });
        }
        let mut step_scores = all_scores.as_ref().map(|_| Vec::with_capacity(items * nb));
        let mut sources = Vec::with_capacity(items * nb);
        let mut all_hit = true;
        for (i, item) in state.iter_mut().enumerate() {
            // a. log-probs, processors, accumulated scores
            let mut acc = vec![0f32; nb * vocab];
            for j in 0..nb {
                let row = &mut flat[(i * nb + j) * vocab..(i * nb + j + 1) * vocab];
                log_softmax(row);
                let ctx = RowContext {
                    ids: &item.running[j],
                    pad_len: batch.pad_len(i),
                    prompt_len,
                };
                procs.process(&ctx, row);
                if let Some(s) = step_scores.as_mut() {
                    s.push(Some(row.to_vec()));
                }
                for (a, &x) in acc[j * vocab..(j + 1) * vocab].iter_mut().zip(row.iter()) {
                    *a = x + item.running_scores[j];
                }
            }
            // b. top-K continuations
            let picked: Vec<usize> = if cfg.do_sample {
                let drawn = samplers[i]
                    .sample_without_replacement(&acc, k)
                    .ok_or(GenerationError::NoValidToken { row: i, step })?;
                let mut by_score: Vec<(f32, usize)> = drawn.iter().map(|&f| (acc[f], f)).collect();
                by_score.sort_by(|a, b| desc((a.0, 0), (b.0, 0)));
                by_score.into_iter().map(|(_, f)| f).collect()
            } else {
                topk(&acc, k)
            };
            let cands: Vec<Candidate> = picked
                .iter()
                .map(|&f| {
                    let (beam, token) = (f / vocab, (f % vocab) as u32);
                    let mut seq = Vec::with_capacity(cur_len + 1);
                    seq.extend_from_slice(&item.running[beam]);
                    seq.push(token);
                    Candidate {
                        seq,
                        logprob: acc[f],
                        beam,
                        hits: cur_len + 1 >= max_length || stop.is_eos(token),
                    }
                })
                .collect();
            all_hit &= cands.iter().all(|c| c.hits);
            // c. next running beams: the best non-finished candidates
            let running_vals: Vec<f32> =
                cands.iter().map(|c| c.logprob + penalty(c.hits)).collect();
            let next = topk(&running_vals, nb);
            item.running = next.iter().map(|&c| cands[c].seq.clone()).collect();
            item.running_scores = next.iter().map(|&c| running_vals[c]).collect();
            sources.extend(next.iter().map(|&c| i * nb + cands[c].beam));
            // d. finished hypotheses
            let denom = len_pen(cur_len + 1 - prompt_len);
            let full = item.done.iter().all(|h| h.finished)
                && cfg.early_stopping == EarlyStopping::Enabled;
            let mut merged: Vec<Hypothesis> = std::mem::take(&mut item.done);
            for (c, cand) in cands.into_iter().enumerate() {
                let did_finish = cand.hits && c < nb;
                let mut score = cand.logprob / denom;
                score += penalty(full);
                score += penalty(!item.unsatisfied);
                score += penalty(!did_finish);
                merged.push(Hypothesis {
                    seq: cand.seq,
                    score,
                    finished: did_finish,
                    gen_len: cur_len + 1 - prompt_len,
                });
            }
            let merged_scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
            item.done = topk(&merged_scores, nb)
                .into_iter()
                .map(|m| merged[m].clone())
                .collect();
        }
        if let (Some(all), Some(rows)) = (all_scores.as_mut(), step_scores) {
            all.push(StepScores { rows });
        }
        model.reorder_cache(&sources).map_err(model_err)?;
        cur_len += 1;

        // e. early-stop heuristic and HF's loop conditions
        for item in &mut state {
            let best_len = if cfg.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_length - prompt_len
            } else {
                cur_len - prompt_len
            };
            let best_running = item.running_scores[0] / len_pen(best_len);
            let worst = item
                .done
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let can_improve = item
                .done
                .iter()
                .any(|h| best_running > if h.finished { worst } else { NEG });
            item.unsatisfied &= can_improve;
        }
        let improvement_possible = state.iter().any(|it| it.unsatisfied);
        let all_finished = state.iter().all(|it| it.done.iter().all(|h| h.finished));
        let exists_open_beam = !(all_finished && cfg.early_stopping == EarlyStopping::Enabled);
        if !(improvement_possible && exists_open_beam && !all_hit) {
            break;
        }
        let tokens: Vec<u32> = state
            .iter()
            .flat_map(|it| it.running.iter().map(|s| s[s.len() - 1]))
            .collect();
        let logits = model.step(&tokens).map_err(model_err)?;
        check_logits(&logits, items * nb, vocab)?;
        stats.decode_steps += 1;
        stats.decode_tokens += tokens.len();
        flat = logits.into_vec();
    }
    stats.decode = t1.elapsed();

    let out_gen = state.iter().map(|it| it.done[0].gen_len).max().unwrap_or(0);
    let mut sequences = Vec::with_capacity(items);
    let mut generated_lens = Vec::with_capacity(items);
    let mut finish_reasons = Vec::with_capacity(items);
    let mut sequences_scores = Vec::with_capacity(items);
    for it in &state {
        let best = &it.done[0];
        let mut seq = best.seq.clone();
        seq.resize(prompt_len + out_gen, fill);
        let ended_eos = best.gen_len > 0 && best.seq.last().is_some_and(|&t| stop.is_eos(t));
        finish_reasons.push(if ended_eos {
            FinishReason::Eos
        } else {
            FinishReason::MaxNewTokens
        });
        generated_lens.push(best.gen_len);
        sequences_scores.push(best.score);
        sequences.push(seq);
    }
    stats.new_tokens = generated_lens.iter().sum();
    Ok(GenerationOutput {
        sequences,
        prompt_len,
        pad_lens: batch.pad_lens().to_vec(),
        generated_lens,
        finish_reasons,
        scores: all_scores,
        sequences_scores: Some(sequences_scores),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_is_sorted_with_index_ties() {
        assert_eq!(topk(&[1.0, 3.0, 3.0, 2.0, 3.0], 4), vec![1, 2, 4, 3]);
        assert_eq!(topk(&[f32::NEG_INFINITY, 0.5, f32::NAN], 2), vec![2, 1]);
        assert_eq!(topk(&[1.0], 3), vec![0]);
        assert_eq!(penalty(true), NEG);
        assert_eq!(penalty(false), 0.0);
    }
}
