//! Logits processors; mirrors HF `generation/logits_process.py` and the list built by
//! `GenerationMixin._get_logits_processor` (transformers 5.24).
//!
//! Each processor edits one row of next-token scores (`&mut [f32]`, one entry per vocabulary id) given
//! that row's token history. Banned tokens get `-inf`, as in HF. Arithmetic is f32 where torch computes in
//! f32 (temperature: `x / f32(t)`; repetition penalty: `x * f32(p)` or `x / f32(p)`), so the results are
//! bit-identical to HF's (checked against fixtures made by HF's own classes).

use super::config::GenerationConfig;

/// The token history of one row, as HF's `input_ids` row sees it.
#[derive(Debug, Clone, Copy)]
pub struct RowContext<'a> {
    /// The whole row so far: left pads, the prompt, then the generated tokens.
    pub ids: &'a [u32],
    /// How many left pads `ids` starts with.
    pub pad_len: usize,
    /// Length of the (padded) prompt; `ids.len() - prompt_len` tokens have been generated.
    pub prompt_len: usize,
}

impl<'a> RowContext<'a> {
    /// The row without its left pads.
    pub fn real_ids(&self) -> &'a [u32] {
        &self.ids[self.pad_len.min(self.ids.len())..]
    }

    /// How many tokens the row has generated.
    pub fn new_tokens(&self) -> usize {
        self.ids.len().saturating_sub(self.prompt_len)
    }
}

/// One HF logits processor.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsProcessor {
    /// HF `RepetitionPenaltyLogitsProcessor` with `prompt_ignore_length` = the left-pad count: every id
    /// present in the row (pads excluded) gets `s * p` if `s < 0`, else `s / p`.
    RepetitionPenalty {
        /// The penalty `p` (> 0).
        penalty: f32,
    },
    /// HF `NoRepeatNGramLogitsProcessor`: bans every token that completes an n-gram already in the row.
    NoRepeatNGram {
        /// n (≥ 1).
        ngram_size: usize,
        /// Whether the left pads belong to the history (HF: yes; batch-independent rows: no).
        include_pads: bool,
    },
    /// HF `MinNewTokensLengthLogitsProcessor` (and `MinLengthLogitsProcessor`, which generate derives from
    /// the same value): bans the eos ids while fewer than `min_new_tokens` tokens are generated.
    MinNewTokens {
        /// The minimum.
        min_new_tokens: usize,
        /// The ids banned until then.
        eos_token_ids: Vec<u32>,
    },
    /// HF `TemperatureLogitsWarper`: `s / temperature` in f32.
    Temperature {
        /// The temperature (> 0).
        temperature: f32,
    },
    /// HF `TopKLogitsWarper`: scores below the k-th largest become `-inf` (ties with it are kept).
    TopK {
        /// k, already raised to `min_tokens_to_keep` as HF does.
        top_k: usize,
    },
    /// HF `TopPLogitsWarper`: sorts ascending, removes the tokens whose cumulative probability is
    /// `<= 1 - top_p`, always keeping the `min_tokens_to_keep` most likely.
    TopP {
        /// The nucleus mass.
        top_p: f64,
        /// At least this many tokens survive.
        min_tokens_to_keep: usize,
    },
}

impl LogitsProcessor {
    /// Applies the processor to one row of scores.
    pub fn apply(&self, row: &RowContext<'_>, scores: &mut [f32]) {
        match self {
            LogitsProcessor::RepetitionPenalty { penalty } => {
                repetition_penalty(row.real_ids(), *penalty, scores)
            }
            LogitsProcessor::NoRepeatNGram {
                ngram_size,
                include_pads,
            } => {
                let ids = if *include_pads {
                    row.ids
                } else {
                    row.real_ids()
                };
                no_repeat_ngram(ids, *ngram_size, scores);
            }
            LogitsProcessor::MinNewTokens {
                min_new_tokens,
                eos_token_ids,
            } => {
                if row.new_tokens() < *min_new_tokens {
                    ban(eos_token_ids, scores);
                }
            }
            LogitsProcessor::Temperature { temperature } => {
                for s in scores.iter_mut() {
                    *s /= *temperature;
                }
            }
            LogitsProcessor::TopK { top_k } => top_k_filter(*top_k, scores),
            LogitsProcessor::TopP {
                top_p,
                min_tokens_to_keep,
            } => top_p_filter(*top_p, *min_tokens_to_keep, scores),
        }
    }
}

/// The processors `generate` applies, in HF 5.24's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogitsProcessorList {
    processors: Vec<LogitsProcessor>,
}

impl LogitsProcessorList {
    /// An explicit list (applied in order).
    pub fn new(processors: Vec<LogitsProcessor>) -> Self {
        Self { processors }
    }

    /// The list HF's `_get_logits_processor` builds for `cfg`: repetition penalty, no-repeat-ngram,
    /// min-new-tokens (only with an eos id), then — only when sampling — temperature, top-k and top-p.
    /// With beam sampling, top-k/top-p keep at least `len(eos) + 1` tokens (HF's rule).
    pub fn from_config(cfg: &GenerationConfig) -> Self {
        let mut p = Vec::new();
        if cfg.repetition_penalty != 1.0 {
            p.push(LogitsProcessor::RepetitionPenalty {
                penalty: cfg.repetition_penalty as f32,
            });
        }
        if cfg.no_repeat_ngram_size > 0 {
            p.push(LogitsProcessor::NoRepeatNGram {
                ngram_size: cfg.no_repeat_ngram_size,
                include_pads: cfg.hf_compat_positions,
            });
        }
        if cfg.min_new_tokens > 0 && !cfg.eos_token_id.is_empty() {
            p.push(LogitsProcessor::MinNewTokens {
                min_new_tokens: cfg.min_new_tokens,
                eos_token_ids: cfg.eos_token_id.clone(),
            });
        }
        if cfg.do_sample {
            let min_tokens_to_keep = if cfg.num_beams > 1 {
                if cfg.eos_token_id.is_empty() {
                    2
                } else {
                    cfg.eos_token_id.len() + 1
                }
            } else {
                1
            };
            if cfg.temperature != 1.0 {
                p.push(LogitsProcessor::Temperature {
                    temperature: cfg.temperature as f32,
                });
            }
            if cfg.top_k != 0 {
                p.push(LogitsProcessor::TopK {
                    top_k: cfg.top_k.max(min_tokens_to_keep),
                });
            }
            if cfg.top_p < 1.0 {
                p.push(LogitsProcessor::TopP {
                    top_p: cfg.top_p,
                    min_tokens_to_keep,
                });
            }
        }
        Self { processors: p }
    }

    /// The processors, in application order.
    pub fn processors(&self) -> &[LogitsProcessor] {
        &self.processors
    }

    /// True when no processor is active.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// Applies every processor, in order, to one row.
    pub fn process(&self, row: &RowContext<'_>, scores: &mut [f32]) {
        for p in &self.processors {
            p.apply(row, scores);
        }
    }
}

fn ban(ids: &[u32], scores: &mut [f32]) {
    for &id in ids {
        if let Some(s) = scores.get_mut(id as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

thread_local! {
    /// The "already penalised" flags of [`repetition_penalty`], kept per thread so a decode step
    /// allocates nothing (all false between calls).
    static SEEN: std::cell::RefCell<Vec<bool>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Ids outside the vocabulary are ignored (HF clamps them to a spare column it drops).
fn repetition_penalty(ids: &[u32], penalty: f32, scores: &mut [f32]) {
    SEEN.with_borrow_mut(|seen| {
        if seen.len() < scores.len() {
            seen.resize(scores.len(), false);
        }
        for &id in ids {
            let i = id as usize;
            if i < scores.len() && !seen[i] {
                seen[i] = true;
                let s = scores[i];
                scores[i] = if s < 0.0 { s * penalty } else { s / penalty };
            }
        }
        for &id in ids {
            if let Some(f) = seen.get_mut(id as usize) {
                *f = false;
            }
        }
    });
}

/// HF 5.24's formulation: the last `n - 1` ids are the prefix; every window of `n` ids whose first
/// `n - 1` equal it bans its last id. Nothing is banned before the row holds `n` ids.
fn no_repeat_ngram(ids: &[u32], n: usize, scores: &mut [f32]) {
    if n == 0 || ids.len() < n {
        return;
    }
    let prefix = &ids[ids.len() + 1 - n..];
    for w in ids.windows(n) {
        if w[..n - 1] == *prefix {
            if let Some(s) = scores.get_mut(w[n - 1] as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// torch's order for `topk`/`sort`: NaN above everything.
fn desc_nan_first(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

fn top_k_filter(top_k: usize, scores: &mut [f32]) {
    let k = top_k.min(scores.len());
    if k == 0 {
        return;
    }
    let mut sorted = scores.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| desc_nan_first(*a, *b));
    let kth = *kth;
    for s in scores.iter_mut() {
        if *s < kth {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// HF's algorithm with a stable ascending sort (ties ordered by id). torch's CPU sort is unstable
/// (x86-simd-sort on AVX2/AVX-512), so HF's own choice among exactly tied scores at the threshold depends on
/// the machine; everywhere else the results are identical. Probabilities are computed in f64; the threshold
/// is `f32(1 - top_p)` as torch compares against an f32 tensor.
fn top_p_filter(top_p: f64, min_tokens_to_keep: usize, scores: &mut [f32]) {
    let n = scores.len();
    if n == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..n).collect();
    // ascending, NaN last, ties by index (stable sort)
    order.sort_by(|&a, &b| desc_nan_first(scores[b], scores[a]));
    let max = order
        .iter()
        .rev()
        .map(|&i| scores[i])
        .find(|v| !v.is_nan())
        .unwrap_or(f32::NAN) as f64;
    let exps: Vec<f64> = order
        .iter()
        .map(|&i| (scores[i] as f64 - max).exp())
        .collect();
    let total: f64 = exps.iter().sum();
    let threshold = (1.0 - top_p) as f32 as f64;
    let keep_from = n.saturating_sub(min_tokens_to_keep);
    let mut cum = 0.0f64;
    let mut remove = vec![false; n];
    for (pos, (&i, e)) in order.iter().zip(&exps).enumerate() {
        cum += e / total;
        if pos < keep_from && cum <= threshold {
            remove[i] = true;
        }
    }
    for (s, r) in scores.iter_mut().zip(remove) {
        if r {
            *s = f32::NEG_INFINITY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_bans_the_continuations_of_the_current_prefix() {
        // trigrams: (5,6,7) (6,7,5) (7,5,6); prefix (5,6) -> ban 7
        let ids = [5, 6, 7, 5, 6];
        let mut s = vec![0.0f32; 10];
        no_repeat_ngram(&ids, 3, &mut s);
        let banned: Vec<usize> = (0..10).filter(|&i| s[i] == f32::NEG_INFINITY).collect();
        assert_eq!(banned, vec![7]);
        // unigram blocking bans every id present
        let mut s = vec![0.0f32; 10];
        no_repeat_ngram(&ids, 1, &mut s);
        assert_eq!((0..10).filter(|&i| s[i].is_infinite()).count(), 3);
    }

    #[test]
    fn ngram_without_pads_ignores_the_pad_region() {
        // two left pads, then 5 and two generated pad-id tokens: the prefix (1, 1) matches the window
        // (1, 1, 5) only when the pads count (HF), which then bans 5
        let ids = [1, 1, 5, 1, 1];
        let row = RowContext {
            ids: &ids,
            pad_len: 2,
            prompt_len: 3,
        };
        for (include_pads, banned) in [(true, vec![5usize]), (false, vec![])] {
            let p = LogitsProcessor::NoRepeatNGram {
                ngram_size: 3,
                include_pads,
            };
            let mut s = vec![0.0f32; 8];
            p.apply(&row, &mut s);
            let got: Vec<usize> = (0..8).filter(|&i| s[i].is_infinite()).collect();
            assert_eq!(got, banned, "include_pads = {include_pads}");
        }
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_value() {
        let mut s = vec![1.0, 3.0, 3.0, 2.0, 3.0, 0.0];
        top_k_filter(2, &mut s);
        assert_eq!(
            s,
            vec![
                f32::NEG_INFINITY,
                3.0,
                3.0,
                f32::NEG_INFINITY,
                3.0,
                f32::NEG_INFINITY
            ]
        );
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_min_tokens() {
        // probs ∝ e^[0, 1, 2, 3] = 0.032, 0.087, 0.237, 0.644
        let base = vec![0.0f32, 1.0, 2.0, 3.0];
        let mut s = base.clone();
        top_p_filter(0.5, 1, &mut s);
        assert_eq!(&s[..3], &[f32::NEG_INFINITY; 3]);
        let mut s = base.clone();
        top_p_filter(0.85, 1, &mut s);
        assert_eq!(&s[..2], &[f32::NEG_INFINITY; 2]);
        assert_eq!(&s[2..], &[2.0, 3.0]);
        let mut s = base;
        top_p_filter(0.0, 2, &mut s);
        assert_eq!(s, vec![f32::NEG_INFINITY, f32::NEG_INFINITY, 2.0, 3.0]);
    }

    #[test]
    fn list_order_follows_hf() {
        let cfg = GenerationConfig {
            do_sample: true,
            temperature: 0.5,
            top_k: 1,
            top_p: 0.9,
            repetition_penalty: 1.1,
            no_repeat_ngram_size: 2,
            min_new_tokens: 3,
            num_beams: 2,
            eos_token_id: vec![2, 3],
            ..GenerationConfig::default()
        };
        let list = LogitsProcessorList::from_config(&cfg);
        let names: Vec<&str> = list
            .processors()
            .iter()
            .map(|p| match p {
                LogitsProcessor::RepetitionPenalty { .. } => "rep",
                LogitsProcessor::NoRepeatNGram { .. } => "ngram",
                LogitsProcessor::MinNewTokens { .. } => "min_new",
                LogitsProcessor::Temperature { .. } => "temp",
                LogitsProcessor::TopK { .. } => "top_k",
                LogitsProcessor::TopP { .. } => "top_p",
            })
            .collect();
        assert_eq!(names, ["rep", "ngram", "min_new", "temp", "top_k", "top_p"]);
        // beam sampling keeps len(eos) + 1 tokens
        assert_eq!(list.processors()[4], LogitsProcessor::TopK { top_k: 3 });
        // greedy: no warpers at all
        let greedy = LogitsProcessorList::from_config(&GenerationConfig::default());
        assert!(greedy.is_empty());
    }
}
