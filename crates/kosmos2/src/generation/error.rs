//! The generation module's typed error.

use std::path::PathBuf;

/// A boxed error from a model or a detokeniser behind one of this module's traits.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while configuring or running generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// A [`GenerationConfig`](super::GenerationConfig) value is out of range.
    #[error("invalid generation config: {0}")]
    InvalidConfig(String),
    /// The prompt batch is malformed (ragged rows, mask lengths, non-left padding, …).
    #[error("invalid prompt batch: {0}")]
    InvalidBatch(String),
    /// A model-directory file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model-directory JSON file could not be parsed.
    #[error("parsing {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The [`CausalLm`](super::CausalLm) implementation failed.
    #[error("model forward failed: {0}")]
    Model(#[source] BoxError),
    /// The model returned logits of the wrong shape.
    #[error("model returned {what} = {got}, expected {expected}")]
    ModelOutput {
        /// Which quantity is wrong (`"logits rows"` or `"vocab size"`).
        what: &'static str,
        /// What the generation loop needed.
        expected: usize,
        /// What the model returned.
        got: usize,
    },
    /// Sampling found no token with a finite score (every token banned), so there is no distribution.
    #[error(
        "row {row}: no token has a finite score at generation step {step}; nothing can be sampled"
    )]
    NoValidToken {
        /// The batch row.
        row: usize,
        /// The 0-based generation step.
        step: usize,
    },
    /// Beam search returns its sequences only at the end, so it cannot stream tokens.
    #[error("streaming tokens is not supported with beam search (num_beams > 1)")]
    StreamingWithBeams,
    /// The detokeniser behind a [`TextStream`](super::TextStream) failed.
    #[error("detokenizer failed: {0}")]
    Detokenize(#[source] BoxError),
    /// The decoder rewrote text that the stream had already released (a decoder that is not prefix-stable
    /// even one token back); the concatenated increments could no longer equal the final text.
    #[error("decoded text no longer starts with the released text {released:?} (now {decoded:?})")]
    StreamRewrite {
        /// Everything released so far (context included).
        released: String,
        /// The new full decode.
        decoded: String,
    },
}

/// Result alias of the generation module.
pub type Result<T> = std::result::Result<T, GenerationError>;
