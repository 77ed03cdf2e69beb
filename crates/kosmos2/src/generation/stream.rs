//! Incremental detokenisation for streaming (the role of candle's `TokenOutputStream` and HF's
//! `TextStreamer`), generic over the decoder.
//!
//! Each [`TextStream::push`] decodes the whole token list (context included) and releases only the text
//! on which the last `holdback + 1` decodes agree, minus any trailing U+FFFD. This makes the stream exact
//! for every decoder whose output can change at most `holdback` tokens back:
//! - **multi-token characters** (byte-fallback pieces) decode to U+FFFD until complete and are released
//!   only once whole;
//! - **the leading-space rule** ("the first token loses its leading `▁` space") is applied by the decoder
//!   to the true first token of the list, so a continuation keeps its space: pass the prompt as
//!   context with [`TextStream::with_context`];
//! - **tag and patch tokens** (`<phrase>`, `<patch_index_0044>`, …) are added tokens that decode verbatim
//!   with no space between neighbours: they need nothing special;
//! - **HF's `clean_up_tokenization_spaces`** (on in KOSMOS-2's `tokenizer_config.json`) rewrites text up
//!   to three tokens back (`"▁n" "'" "t"` → `"n't"` removes the space of the first): the default
//!   hold-back of [`DEFAULT_HOLDBACK`] tokens absorbs it. A prefix-stable decoder (the plain `tokenizers`
//!   Metaspace decoder) is exact with a hold-back of 0.
//!
//! The guarantee: `decode(context) + concat(increments) == decode(context + tokens)`, where the last
//! increment is the one [`TextStream::finish`] returns. A decoder that rewrites text further back than the
//! hold-back gives [`GenerationError::StreamRewrite`] instead of a wrong stream. Cost: one full decode per
//! token, negligible next to a model step at KOSMOS-2's lengths (a few hundred tokens).

use std::collections::VecDeque;

use super::error::{BoxError, GenerationError, Result};

/// Tokens of hold-back by default: enough for HF's clean-up rules (see the module docs).
pub const DEFAULT_HOLDBACK: usize = 3;

/// Turns token ids into text (for KOSMOS-2, the processor's tokenizer decode with
/// `skip_special_tokens = true`). Implemented for every `Fn(&[u32]) -> Result<String, BoxError>`.
pub trait Detokenize {
    /// Decodes `ids` as one sequence.
    fn decode(&self, ids: &[u32]) -> std::result::Result<String, BoxError>;
}

impl<F> Detokenize for F
where
    F: Fn(&[u32]) -> std::result::Result<String, BoxError>,
{
    fn decode(&self, ids: &[u32]) -> std::result::Result<String, BoxError> {
        self(ids)
    }
}

/// The incremental detokeniser.
///
/// ```
/// use kosmos2::generation::{BoxError, TextStream};
/// // a toy decoder: ids are bytes, decoded lossily (so a split UTF-8 char shows as U+FFFD)
/// let decode = |ids: &[u32]| -> Result<String, BoxError> {
///     Ok(String::from_utf8_lossy(&ids.iter().map(|&i| i as u8).collect::<Vec<_>>()).into_owned())
/// };
/// let mut stream = TextStream::new(decode).with_holdback(0);
/// let mut out = String::new();
/// for &b in "née €".as_bytes() {
///     if let Some(piece) = stream.push(u32::from(b)).unwrap() {
///         assert!(!piece.contains('\u{FFFD}'));
///         out.push_str(&piece);
///     }
/// }
/// out.push_str(&stream.finish().unwrap().unwrap_or_default());
/// assert_eq!(out, "née €");
/// assert_eq!(stream.text(), "née €");
/// ```
#[derive(Debug, Clone)]
pub struct TextStream<D> {
    decoder: D,
    ids: Vec<u32>,
    context_len: usize,
    /// Byte length of the context's text (where the emitted text starts in `released`).
    context_text_len: usize,
    /// The full text released so far (the context's text, then every increment).
    released: String,
    /// The last `holdback` full decodes, oldest first (starts with the context's text).
    recent: VecDeque<String>,
    holdback: usize,
}

impl<D: Detokenize> TextStream<D> {
    /// A stream with no context: the first pushed token is the start of the text.
    pub fn new(decoder: D) -> Self {
        Self {
            decoder,
            ids: Vec::new(),
            context_len: 0,
            context_text_len: 0,
            released: String::new(),
            recent: VecDeque::from([String::new()]),
            holdback: DEFAULT_HOLDBACK,
        }
    }

    /// A stream that continues `context` (typically the prompt): its text is never emitted, and the
    /// pushed tokens decode as its continuation (keeping their leading space).
    pub fn with_context(decoder: D, context: &[u32]) -> Result<Self> {
        let text = decoder
            .decode(context)
            .map_err(GenerationError::Detokenize)?;
        Ok(Self {
            decoder,
            ids: context.to_vec(),
            context_len: context.len(),
            context_text_len: text.len(),
            released: text.clone(),
            recent: VecDeque::from([text]),
            holdback: DEFAULT_HOLDBACK,
        })
    }

    /// Sets how many tokens back the decoder may still change the text (default [`DEFAULT_HOLDBACK`]);
    /// 0 releases everything but a trailing U+FFFD at once.
    pub fn with_holdback(mut self, tokens: usize) -> Self {
        self.holdback = tokens;
        while self.recent.len() > tokens.max(1) {
            self.recent.pop_front();
        }
        self
    }

    /// Adds one token; returns the newly stable text, if any.
    pub fn push(&mut self, token: u32) -> Result<Option<String>> {
        self.ids.push(token);
        let text = self
            .decoder
            .decode(&self.ids)
            .map_err(GenerationError::Detokenize)?;
        let mut stable = if self.holdback == 0 {
            text.len()
        } else {
            self.recent
                .iter()
                .map(|old| common_prefix(old, &text))
                .min()
                .unwrap_or(0)
        };
        while text[..stable].ends_with('\u{FFFD}') {
            stable -= '\u{FFFD}'.len_utf8();
        }
        let piece = self.release(&text, stable)?;
        self.recent.push_back(text);
        while self.recent.len() > self.holdback.max(1) {
            self.recent.pop_front();
        }
        Ok(piece)
    }

    /// Ends the stream: returns whatever is not released yet (including a trailing U+FFFD the decoder
    /// really produced).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self
            .decoder
            .decode(&self.ids)
            .map_err(GenerationError::Detokenize)?;
        let piece = self.release(&text, text.len())?;
        self.recent.push_back(text);
        while self.recent.len() > self.holdback.max(1) {
            self.recent.pop_front();
        }
        Ok(piece)
    }

    /// The tokens pushed so far (context excluded).
    pub fn tokens(&self) -> &[u32] {
        &self.ids[self.context_len..]
    }

    /// The concatenation of every increment returned so far (context excluded).
    pub fn text(&self) -> &str {
        &self.released[self.context_text_len..]
    }

    /// Releases `text[released..stable]` after checking that `text` still starts with the released text.
    fn release(&mut self, text: &str, stable: usize) -> Result<Option<String>> {
        if !text.starts_with(self.released.as_str()) {
            return Err(GenerationError::StreamRewrite {
                released: self.released.clone(),
                decoded: text.to_string(),
            });
        }
        if stable <= self.released.len() {
            return Ok(None);
        }
        let piece = text[self.released.len()..stable].to_string();
        self.released.push_str(&piece);
        Ok(Some(piece))
    }
}

/// Byte length of the longest common prefix of `a` and `b`, on a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for (ca, cb) in a.chars().zip(b.chars()) {
        if ca != cb {
            break;
        }
        n += ca.len_utf8();
    }
    n
}
