//! The crate's typed error.

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `kosmos-vision`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op or a weight load failed.
    #[error(transparent)]
    Tensor(#[from] kosmos_tensor::Error),
    /// The configuration is not usable (zero sizes, heads not dividing the width, ...).
    #[error("invalid vision config: {0}")]
    InvalidConfig(String),
    /// `pixel_values` does not have the shape `[batch, channels, height, width]` the config expects.
    #[error("pixel_values: expected shape [batch, {channels}, height, width], got {shape:?}")]
    PixelShape { channels: usize, shape: Vec<usize> },
    /// The image is not `image_size` square and `interpolate_pos_encoding` is off (as HF raises).
    #[error(
        "input image size ({height}*{width}) doesn't match model ({expected}*{expected}); \
         set interpolate_pos_encoding to run other sizes"
    )]
    ImageSize {
        height: usize,
        width: usize,
        expected: usize,
    },
    /// The image is smaller than one patch.
    #[error("input image size ({height}*{width}) is smaller than one {patch}x{patch} patch")]
    ImageTooSmall {
        height: usize,
        width: usize,
        patch: usize,
    },
    /// A hidden-state tensor does not have the shape `[batch, tokens, hidden_size]`.
    #[error("{what}: expected shape [batch, tokens, {hidden}], got {shape:?}")]
    HiddenShape {
        what: &'static str,
        hidden: usize,
        shape: Vec<usize>,
    },
    /// A layer index is out of range (for `Encoder::replace_layer`).
    #[error("encoder layer index {index} out of range (the encoder has {len} layers)")]
    LayerIndex { index: usize, len: usize },
    /// A block returned no attention probabilities although they were asked for.
    #[error(
        "encoder layer {layer} returned no attention probabilities but output_attentions is set"
    )]
    MissingAttentions { layer: usize },
    /// An error raised by a user-provided layer (see [`crate::EncoderBlock`]).
    #[error("custom layer: {0}")]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}
