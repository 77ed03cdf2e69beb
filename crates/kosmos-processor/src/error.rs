//! Typed errors. Each variant says which file or input is wrong and how.

use std::path::PathBuf;

/// An error while loading the processor or processing a batch.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A required file is absent from the processor directory.
    #[error("{}: file not found", path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected shape.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// A file parses but its content does not fit KOSMOS-2.
    #[error("{}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer file could not be loaded.
    #[error("{}: cannot load the tokenizer: {message}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The message from the tokenizer library.
        message: String,
    },
    /// The sentencepiece model could not be parsed.
    #[error("{}: invalid sentencepiece model: {message}", path.display())]
    Sentencepiece {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer failed on an input text.
    #[error("tokenization of item {item} failed: {message}")]
    Encode {
        /// Index of the batch item.
        item: usize,
        /// The message from the tokenizer library.
        message: String,
    },
    /// `process` was called with an empty batch.
    #[error("the batch is empty")]
    EmptyBatch,
    /// Some batch items have an image and others do not (HF needs as many images as texts).
    #[error("{with_image} of {items} batch items have an image; either all or none must")]
    ImageCountMismatch {
        /// Batch size.
        items: usize,
        /// Items that carry an image.
        with_image: usize,
    },
    /// A bounding box of a batch item is invalid.
    #[error("item {item}: {source}")]
    Box {
        /// Index of the batch item.
        item: usize,
        /// What is wrong with the boxes.
        source: crate::boxes::BoxError,
    },
    /// An image of a batch item could not be decoded or converted.
    #[error("item {item}: {source}")]
    Image {
        /// Index of the batch item.
        item: usize,
        /// What went wrong.
        source: crate::image::ImageError,
    },
    /// Processed images have different sizes and cannot be stacked into one tensor.
    #[error("processed images have different sizes ({first:?} and {other:?}); enable center crop or a fixed size")]
    RaggedImages {
        /// `(height, width)` of the first image.
        first: (usize, usize),
        /// `(height, width)` of a differing image.
        other: (usize, usize),
    },
    /// An option value that HF rejects too.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}
