//! The crate's typed error.

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `kosmos-text`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op or a weight load failed.
    #[error(transparent)]
    Tensor(#[from] kosmos_tensor::Error),
    /// The configuration is not usable (zero sizes, heads not dividing the width, ...).
    #[error("invalid text config: {0}")]
    InvalidConfig(String),
    /// An input has the wrong length or shape for the batch it belongs to.
    #[error("{what}: expected {expected}, got {found}")]
    InputShape {
        what: &'static str,
        expected: String,
        found: String,
    },
    /// An input holds a value outside its domain (a mask entry that is not 0/1, a label out of the vocabulary, ...).
    #[error("{what}: {msg}")]
    InvalidInput { what: &'static str, msg: String },
    /// The number of `1`s in `image_embeds_position_mask` differs from the number of image-embedding rows.
    #[error(
        "image_embeds_position_mask selects {positions} positions but image_embeds holds {rows} rows \
         ({images} images x {per_image} tokens)"
    )]
    ImageTokenCount {
        positions: usize,
        rows: usize,
        images: usize,
        per_image: usize,
    },
    /// Neither `input_ids` nor `inputs_embeds` was given, or both were.
    #[error("give exactly one of input_ids and inputs_embeds")]
    TokensOrEmbeds,
    /// `labels` has no entry other than the ignore index `-100`: the mean loss is undefined.
    #[error("labels: no position has a label other than -100 after the shift")]
    NoLabels,
    /// The KV cache's batch size or layer count does not match the forward pass.
    #[error("kv cache: {0}")]
    Cache(String),
    /// A layer index is out of range (for `TextTransformer::replace_layer`).
    #[error("decoder layer index {index} out of range (the decoder has {len} layers)")]
    LayerIndex { index: usize, len: usize },
    /// An error raised by a user-provided layer (see [`crate::DecoderBlock`]).
    #[error("custom layer: {0}")]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}
