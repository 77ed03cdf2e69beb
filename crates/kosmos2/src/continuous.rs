//! Continuous batching: requests join a running decode batch at token boundaries and leave it when
//! they finish or are cancelled ([`ContinuousBatch`]).
//!
//! Mirrors the per-row part of HF `GenerationMixin._sample` (transformers 5.24): each row keeps its
//! own [`GenerationConfig`] (greedy or seeded sampling, temperature, top-k/top-p, repetition penalty,
//! n-gram blocking, min/max new tokens, eos ids), its own logits processors and its own sampler.
//!
//! A request is prefilled **alone** (its image encoded, its prompt run as a batch of one, no pads),
//! then its KV rows are appended to the running cache ([`KvCache::concat_rows`]). Rows of the cache
//! then have different lengths: the decoder writes each row's new key at that row's own slot, the
//! causal mask hides the unused slots of shorter rows, and [`PositionMode::RealTokens`] gives every
//! row its own real-token positions. So each row's tokens are the tokens it gets served alone (the
//! same prefill, the same positions, the same processors; sampling draws from stream 0 of the
//! request's seed, as a one-row `generate` does). A row that finishes or is cancelled leaves with
//! [`KvCache::select_rows`], which frees its rows.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny");
//! use kosmos2::generation::{GenerationConfig, Prompt};
//! use kosmos2::continuous::ContinuousBatch;
//! use kosmos2::{DType, Device, Kosmos2ForConditionalGeneration};
//!
//! let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32)?;
//! let mut batch = ContinuousBatch::new(&model);
//! let cfg = GenerationConfig { max_new_tokens: 4, eos_token_id: vec![], ..Default::default() };
//! let a = batch.join(&Prompt::text(vec![0, 70, 71]), None, &cfg)?; // prefilled, first token out
//! batch.step()?; // a's second token
//! let b = batch.join(&Prompt::text(vec![0, 80]), None, &cfg)?; // joins mid-decode
//! while !batch.is_empty() {
//!     for t in batch.step()? {
//!         assert!(t.id == a.id || t.id == b.id);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::time::{Duration, Instant};

use kosmos_tensor::Tensor;
use kosmos_text::{DecodeScratch, DecodeStep, KvCache, LogitsMode, PositionMode, TextInputs};

use crate::conditional::{Kosmos2ForConditionalGeneration, LmOptions};
use crate::error::{Error, Result};
use crate::generate::Kosmos2Lm;
use crate::generation::{
    argmax, CausalLm, FinishReason, GenerationConfig, GenerationError, Logits, LogitsProcessorList,
    Prompt, PromptBatch, RowContext, Sampler,
};
use crate::model::{Kosmos2ForwardOptions, Kosmos2Inputs};

/// Names one request's row in a [`ContinuousBatch`] (unique for the batch's lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(pub u64);

/// One new token of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowStep {
    /// The row.
    pub id: RowId,
    /// The token it generated.
    pub token: u32,
    /// `Some` when this was its last token (it has left the batch).
    pub finished: Option<FinishReason>,
}

/// What [`ContinuousBatch::join`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Joined {
    /// The new row.
    pub id: RowId,
    /// Its first token (from the prefill); when it is also its last, the row never joined.
    pub first: RowStep,
    /// Time spent encoding the image.
    pub encode: Duration,
    /// Time spent prefilling the prompt.
    pub prefill: Duration,
}

/// The state of one running row.
#[derive(Debug)]
struct Row {
    id: RowId,
    /// Prompt then generated tokens (no pads).
    seq: Vec<u32>,
    prompt_len: usize,
    max_new_tokens: usize,
    eos: Vec<u32>,
    do_sample: bool,
    procs: LogitsProcessorList,
    sampler: Sampler,
}

impl Row {
    fn generated(&self) -> usize {
        self.seq.len() - self.prompt_len
    }

    /// Processes `scores` (this row's logits), picks, records and returns the next token.
    fn pick(&mut self, scores: &mut [f32]) -> Result<RowStep> {
        let ctx = RowContext {
            ids: &self.seq,
            pad_len: 0,
            prompt_len: self.prompt_len,
        };
        self.procs.process(&ctx, scores);
        let token = if self.do_sample {
            self.sampler
                .sample(scores)
                .ok_or(GenerationError::NoValidToken {
                    row: 0,
                    step: self.generated(),
                })?
        } else {
            argmax(scores).unwrap_or(0)
        } as u32;
        self.seq.push(token);
        // HF's criteria: eos wins over the length limit.
        let finished = if self.eos.contains(&token) {
            Some(FinishReason::Eos)
        } else if self.generated() >= self.max_new_tokens {
            Some(FinishReason::MaxNewTokens)
        } else {
            None
        };
        Ok(RowStep {
            id: self.id,
            token,
            finished,
        })
    }
}

/// A decode batch that requests join and leave at token boundaries.
///
/// [`join`](Self::join) prefills a request alone and adds its row; [`step`](Self::step) decodes one
/// token for every row in one forward pass and drops the rows that finished;
/// [`leave`](Self::leave) drops rows whose client went away. Each row's tokens equal its tokens
/// served alone (module docs).
#[derive(Debug)]
pub struct ContinuousBatch<'m> {
    model: &'m Kosmos2ForConditionalGeneration,
    cache: Option<KvCache>,
    rows: Vec<Row>,
    next_id: u64,
    decode_steps: u64,
    /// The step's input ids, the decoder's intermediates and the logits, reused across steps.
    tokens: Vec<u32>,
    scratch: DecodeScratch,
    logits: Logits,
}

impl<'m> ContinuousBatch<'m> {
    /// An empty batch on `model`.
    pub fn new(model: &'m Kosmos2ForConditionalGeneration) -> Self {
        Self {
            model,
            cache: None,
            rows: Vec::new(),
            next_id: 0,
            decode_steps: 0,
            tokens: Vec::new(),
            scratch: DecodeScratch::default(),
            logits: Logits::default(),
        }
    }

    /// Running rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The running rows, in cache order.
    pub fn ids(&self) -> Vec<RowId> {
        self.rows.iter().map(|r| r.id).collect()
    }

    /// Tokens generated so far by a running row (`None` if it is not running).
    pub fn generated(&self, id: RowId) -> Option<&[u32]> {
        self.rows
            .iter()
            .find(|r| r.id == id)
            .map(|r| &r.seq[r.prompt_len..])
    }

    /// Decode steps run so far (forward passes after the prefills).
    pub fn decode_steps(&self) -> u64 {
        self.decode_steps
    }

    /// The KV cache of the running rows (`None` when the batch is empty).
    pub fn cache(&self) -> Option<&KvCache> {
        self.cache.as_ref()
    }

    /// Prefills one request alone (`pixel_values` `[1, 3, S, S]` when the prompt has image
    /// positions), picks its first token and, unless that token ends it, adds its row to the batch.
    /// `cfg` must be greedy or sampling (`num_beams = 1`).
    pub fn join(
        &mut self,
        prompt: &Prompt,
        pixel_values: Option<&Tensor>,
        cfg: &GenerationConfig,
    ) -> Result<Joined> {
        cfg.validate()?;
        if cfg.num_beams > 1 {
            return Err(Error::InvalidInput(
                "continuous batching generates greedily or by sampling: num_beams must be 1".into(),
            ));
        }
        let t0 = Instant::now();
        let embeds = match pixel_values {
            Some(p) => {
                if p.dims().first() != Some(&1) {
                    return Err(Error::InvalidInput(format!(
                        "one request takes one image, got pixel_values of shape {:?}",
                        p.dims()
                    )));
                }
                Some(
                    self.model
                        .model
                        .get_image_features(p, &Kosmos2ForwardOptions::default())?
                        .image_embeds,
                )
            }
            None => None,
        };
        let encode = t0.elapsed();
        let t1 = Instant::now();
        let pad = Kosmos2Lm::pad_id(self.model)?;
        let batch = PromptBatch::new(vec![prompt.clone()], pad)?;
        let mut lm = Kosmos2Lm::new(self.model).with_max_new_tokens(cfg.max_new_tokens);
        if let Some(e) = embeds {
            lm = lm.with_images(e, vec![Some(0)]);
        }
        let mut logits = lm.prefill(&batch, PositionMode::RealTokens)?;
        let prefill = t1.elapsed();
        let id = RowId(self.next_id);
        self.next_id += 1;
        let mut row = Row {
            id,
            seq: prompt.input_ids.clone(),
            prompt_len: prompt.input_ids.len(),
            max_new_tokens: cfg.max_new_tokens,
            eos: cfg.eos_token_id.clone(),
            do_sample: cfg.do_sample,
            procs: LogitsProcessorList::from_config(cfg),
            // A one-row `generate` draws from stream 0 of the seed.
            sampler: Sampler::new(cfg.seed, 0),
        };
        row.seq.reserve(cfg.max_new_tokens);
        let scores = logits
            .row_mut(0)
            .ok_or_else(|| Error::InvalidInput("the prefill returned no logits".into()))?;
        let first = row.pick(scores)?;
        if first.finished.is_none() {
            let new = lm
                .cache()
                .ok_or_else(|| Error::InvalidInput("the prefill kept no cache".into()))?;
            let mut cache = match self.cache.take() {
                None => new.clone(),
                Some(old) => KvCache::concat_rows(&[&old, new])?,
            };
            self.rows.push(row);
            // Room for every row's remaining tokens: no growth copy while decoding.
            let need = self
                .rows
                .iter()
                .zip(cache.seq_lens())
                .map(|(r, &len)| len + (r.max_new_tokens - r.generated()))
                .max()
                .unwrap_or(0);
            cache.reserve(need)?;
            self.cache = Some(cache);
        }
        Ok(Joined {
            id,
            first,
            encode,
            prefill,
        })
    }

    /// Decodes one token for every running row (one forward pass), returns them in row order and
    /// drops the rows that finished. An empty batch returns no token.
    pub fn step(&mut self) -> Result<Vec<RowStep>> {
        if self.cache.is_none() {
            return Ok(Vec::new());
        }
        self.tokens.clear();
        self.tokens
            .extend(self.rows.iter().map(|r| r.seq.last().copied().unwrap_or(0)));
        let n = self.tokens.len();
        let vocab = self.model.lm_head.dims()[0];
        let text_model = &self.model.model.text_model;
        if text_model.supports_decode_step() {
            // The allocation-free step, as `Kosmos2Lm::step_into` runs it for `generate`.
            let step = DecodeStep::new(&self.tokens).with_position_mode(PositionMode::RealTokens);
            if let Some(cache) = self.cache.as_mut() {
                text_model.decode_step(
                    &step,
                    cache,
                    Some(&self.model.lm_head),
                    &mut self.scratch,
                )?;
            }
            self.logits.overwrite(self.scratch.logits(), vocab)?;
        } else {
            // Replaced decoder blocks: the general forward pass.
            let text = TextInputs::from_ids(&self.tokens, n, 1)?;
            let opts = Kosmos2ForwardOptions {
                position_mode: PositionMode::RealTokens,
                ..Default::default()
            };
            let lm = LmOptions {
                logits: LogitsMode::Last,
                labels: None,
            };
            let out =
                self.model
                    .forward(&Kosmos2Inputs::new(text), self.cache.take(), &opts, &lm)?;
            self.cache = out.past_key_values;
            let logits = out
                .logits
                .ok_or_else(|| Error::InvalidInput("the forward pass returned no logits".into()))?;
            self.logits = Logits::new(logits.to_vec_f32()?, vocab)?;
        }
        self.decode_steps += 1;
        let logits = &mut self.logits;
        if logits.rows() != n {
            return Err(Error::InvalidInput(format!(
                "{} logits rows for {n} batch rows",
                logits.rows()
            )));
        }
        let mut steps = Vec::with_capacity(n);
        for (i, row) in self.rows.iter_mut().enumerate() {
            let scores = logits
                .row_mut(i)
                .ok_or_else(|| Error::InvalidInput(format!("no logits for row {i}")))?;
            steps.push(row.pick(scores)?);
        }
        let done: Vec<RowId> = steps
            .iter()
            .filter(|s| s.finished.is_some())
            .map(|s| s.id)
            .collect();
        self.leave(&done)?;
        Ok(steps)
    }

    /// Drops rows (a cancelled request): their KV rows are freed. Unknown ids are ignored.
    pub fn leave(&mut self, ids: &[RowId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let keep: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !ids.contains(&self.rows[i].id))
            .collect();
        if keep.len() == self.rows.len() {
            return Ok(());
        }
        let mut old = std::mem::take(&mut self.rows);
        if keep.is_empty() {
            self.cache = None;
            return Ok(());
        }
        if let Some(c) = self.cache.take() {
            self.cache = Some(c.select_rows(&keep)?);
        }
        let mut kept = Vec::with_capacity(keep.len());
        for (i, row) in old.drain(..).enumerate() {
            if keep.contains(&i) {
                kept.push(row);
            }
        }
        self.rows = kept;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::generate;
    use kosmos_tensor::{DType, Device};

    fn tiny() -> Kosmos2ForConditionalGeneration {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/tiny");
        Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap()
    }

    /// tiny's image block: <s> 298 (<image>), 4 placeholders 4..=7, 299 (</image>), then text.
    fn image_prompt(text: &[u32]) -> Prompt {
        let mut ids = vec![0, 298, 4, 5, 6, 7, 299];
        ids.extend_from_slice(text);
        let mask = (0..ids.len()).map(|i| (2..6).contains(&i)).collect();
        Prompt {
            input_ids: ids,
            image_embeds_position_mask: Some(mask),
        }
    }

    fn pixels(seed: u32) -> Tensor {
        let data: Vec<f32> = (0..3 * 28 * 28)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(data, &[1, 3, 28, 28], &Device::Cpu).unwrap()
    }

    /// The generated tokens of one request served alone by `generate`.
    fn alone(
        model: &Kosmos2ForConditionalGeneration,
        prompt: &Prompt,
        px: &Tensor,
        cfg: &GenerationConfig,
    ) -> Vec<u32> {
        let embeds = model
            .model
            .get_image_features(px, &Kosmos2ForwardOptions::default())
            .unwrap()
            .image_embeds;
        let mut lm = Kosmos2Lm::new(model).with_images(embeds, vec![Some(0)]);
        let batch = PromptBatch::new(vec![prompt.clone()], 1).unwrap();
        let out = generate(&mut lm, &batch, cfg).unwrap();
        let n = out.generated_lens[0];
        out.new_tokens(0)[..n].to_vec()
    }

    #[test]
    fn joined_rows_equal_their_solo_runs() {
        let model = tiny();
        let base = GenerationConfig {
            eos_token_id: vec![],
            ..Default::default()
        };
        let requests = [
            (
                image_prompt(&[20, 21]),
                pixels(1),
                GenerationConfig {
                    max_new_tokens: 12,
                    ..base.clone()
                },
            ),
            (
                image_prompt(&[30]),
                pixels(2),
                GenerationConfig {
                    max_new_tokens: 5,
                    no_repeat_ngram_size: 2,
                    ..base.clone()
                },
            ),
            (
                image_prompt(&[40, 41, 42, 43]),
                pixels(3),
                GenerationConfig {
                    max_new_tokens: 9,
                    do_sample: true,
                    temperature: 0.7,
                    top_p: 0.9,
                    seed: 11,
                    ..base.clone()
                },
            ),
            (
                image_prompt(&[50]),
                pixels(4),
                GenerationConfig {
                    max_new_tokens: 7,
                    do_sample: true,
                    seed: 3,
                    repetition_penalty: 1.3,
                    ..base.clone()
                },
            ),
        ];
        let want: Vec<Vec<u32>> = requests
            .iter()
            .map(|(p, px, cfg)| alone(&model, p, px, cfg))
            .collect();
        // Request k joins after 2k decode steps; every row is collected as it goes.
        let mut batch = ContinuousBatch::new(&model);
        let mut got: Vec<Vec<u32>> = vec![Vec::new(); requests.len()];
        let mut ids = Vec::new();
        let mut next = 0;
        let mut widest = 0;
        for step in 0..200 {
            if next < requests.len() && step == 2 * next {
                let (p, px, cfg) = &requests[next];
                let j = batch.join(p, Some(px), cfg).unwrap();
                ids.push(j.id);
                got[next].push(j.first.token);
                next += 1;
            }
            widest = widest.max(batch.len());
            for t in batch.step().unwrap() {
                let k = ids.iter().position(|&i| i == t.id).unwrap();
                got[k].push(t.token);
                if t.finished.is_some() {
                    assert!(batch.generated(t.id).is_none(), "a finished row leaves");
                }
            }
            if next == requests.len() && batch.is_empty() {
                break;
            }
        }
        assert!(widest >= 3, "rows ran together (widest batch {widest})");
        assert!(batch.cache().is_none());
        assert_eq!(got, want);
    }

    #[test]
    fn a_row_that_leaves_frees_its_cache_rows_and_the_others_go_on() {
        let model = tiny();
        let cfg = GenerationConfig {
            max_new_tokens: 10,
            eos_token_id: vec![],
            ..Default::default()
        };
        let (pa, pb) = (image_prompt(&[20]), image_prompt(&[31, 32]));
        let want_b = alone(&model, &pb, &pixels(6), &cfg);
        let mut batch = ContinuousBatch::new(&model);
        let a = batch.join(&pa, Some(&pixels(5)), &cfg).unwrap();
        let b = batch.join(&pb, Some(&pixels(6)), &cfg).unwrap();
        let mut got_b = vec![b.first.token];
        for t in batch.step().unwrap() {
            if t.id == b.id {
                got_b.push(t.token);
            }
        }
        assert_eq!(batch.cache().map(KvCache::batch), Some(2));
        batch.leave(&[a.id]).unwrap();
        assert_eq!(batch.ids(), vec![b.id]);
        assert_eq!(batch.cache().map(KvCache::batch), Some(1));
        while !batch.is_empty() {
            got_b.extend(batch.step().unwrap().iter().map(|t| t.token));
        }
        assert_eq!(got_b, want_b);
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let model = tiny();
        let mut batch = ContinuousBatch::new(&model);
        let beams = GenerationConfig {
            num_beams: 2,
            ..Default::default()
        };
        let p = Prompt::text(vec![0, 5]);
        assert!(matches!(
            batch.join(&p, None, &beams),
            Err(Error::InvalidInput(_))
        ));
        let zero = GenerationConfig {
            max_new_tokens: 0,
            ..Default::default()
        };
        assert!(batch.join(&p, None, &zero).is_err());
        let two = Tensor::zeros(&[2, 3, 28, 28], DType::F32, &Device::Cpu).unwrap();
        assert!(batch
            .join(
                &image_prompt(&[9]),
                Some(&two),
                &GenerationConfig::default()
            )
            .is_err());
        assert!(batch.is_empty() && batch.step().unwrap().is_empty());
    }
}
