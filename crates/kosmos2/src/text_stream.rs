//! Streaming generated text: per-row [`TextStream`]s over the processor's decode (HF `TextStreamer`).

use std::ops::ControlFlow;

use kosmos_processor::Kosmos2Processor;

use crate::error::Result;
use crate::generate::{run_generation, Kosmos2Lm};
use crate::generation::{
    BoxError, Detokenize, FinishReason, GenerationConfig, GenerationError, GenerationOutput,
    PromptBatch, TextStream,
};

/// The processor's `decode(ids, skip_special_tokens = true)`, with the tokenizer's
/// `clean_up_tokenization_spaces` (on for KOSMOS-2), as HF's `TextStreamer` decodes. Tag and patch
/// tokens (`<phrase>`, `<patch_index_0044>`, …) are kept, as in `batch_decode`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessorDetokenizer<'a> {
    processor: &'a Kosmos2Processor,
}

impl<'a> ProcessorDetokenizer<'a> {
    /// Decodes with `processor`'s tokenizer.
    pub fn new(processor: &'a Kosmos2Processor) -> Self {
        Self { processor }
    }
}

impl Detokenize for ProcessorDetokenizer<'_> {
    fn decode(&self, ids: &[u32]) -> std::result::Result<String, BoxError> {
        Ok(self.processor.decode(ids, true))
    }
}

/// A piece of one row's generated text.
///
/// Every generated token gives one delta (its `text` is empty while the detokeniser holds text back);
/// a row's last delta has `finished` set and carries the rest of its text. A row stopped by the
/// callback gets a final delta with `token: None` after generation ends. Per row, the `text`s
/// concatenate to `decode(prompt + generated) − decode(prompt)`.
#[derive(Debug, Clone, Copy)]
pub struct TextDelta<'a> {
    /// The batch row.
    pub row: usize,
    /// The 0-based generation step of `token`.
    pub step: usize,
    /// The token just generated (`None` for the flush of a stopped row).
    pub token: Option<u32>,
    /// The newly decoded text (possibly empty).
    pub text: &'a str,
    /// `Some` on the row's last delta.
    pub finished: Option<FinishReason>,
}

/// Runs greedy/sampling generation on `lm`, feeding each row's tokens to a [`TextStream`] whose
/// context is the row's prompt, and reporting the increments to `on_text`.
pub(crate) fn stream_text<D, F>(
    lm: &mut Kosmos2Lm<'_>,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
    decoder: D,
    mut on_text: F,
) -> Result<GenerationOutput>
where
    D: Detokenize + Clone,
    F: FnMut(&TextDelta<'_>) -> ControlFlow<()>,
{
    let rows = batch.len();
    let mut streams = (0..rows)
        .map(|r| TextStream::with_context(decoder.clone(), batch.real_ids(r)))
        .collect::<std::result::Result<Vec<_>, GenerationError>>()?;
    let mut done = vec![false; rows];
    let mut failure: Option<GenerationError> = None;
    let mut last_step = 0;
    let mut cb = |ev: &crate::generation::StepEvent<'_>| {
        let mut flow = ControlFlow::Continue(());
        last_step = ev.step;
        for t in ev.tokens {
            let stream = &mut streams[t.row];
            let mut text = match stream.push(t.token) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            };
            if t.finished.is_some() {
                match stream.finish() {
                    Ok(p) => text.push_str(&p.unwrap_or_default()),
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                done[t.row] = true;
            }
            let delta = TextDelta {
                row: t.row,
                step: ev.step,
                token: Some(t.token),
                text: &text,
                finished: t.finished,
            };
            if on_text(&delta).is_break() {
                flow = ControlFlow::Break(());
            }
        }
        flow
    };
    let out = run_generation(lm, batch, cfg, Some(&mut cb))?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    for (r, stream) in streams.iter_mut().enumerate() {
        if done[r] {
            continue;
        }
        let text = stream.finish()?.unwrap_or_default();
        let delta = TextDelta {
            row: r,
            step: last_step,
            token: None,
            text: &text,
            finished: Some(
                out.finish_reasons
                    .get(r)
                    .copied()
                    .unwrap_or(FinishReason::Stopped),
            ),
        };
        // the flush is reported even after a Break: it completes the row's text
        let _ = on_text(&delta);
    }
    Ok(out)
}
