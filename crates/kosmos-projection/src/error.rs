//! The crate's typed error.

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `kosmos-projection`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op or a weight load failed.
    #[error(transparent)]
    Tensor(#[from] kosmos_tensor::Error),
    /// The configuration is not usable.
    #[error("invalid projection config: {0}")]
    InvalidConfig(String),
    /// The image features do not have the shape `[batch, tokens, vision_hidden_size]`.
    #[error("image features: expected shape [batch, tokens, {hidden}], got {shape:?}")]
    FeatureShape { hidden: usize, shape: Vec<usize> },
}
