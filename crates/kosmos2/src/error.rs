//! The facade's typed error.

use std::path::PathBuf;

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when loading or running KOSMOS-2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON for a KOSMOS-2 config.
    #[error("invalid config {path}: {source}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is inconsistent (for example with the processor's image token count).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The checkpoint's key set differs from the one the config implies.
    #[error("{}", weights_message(missing, unexpected))]
    Weights {
        /// Keys the model needs that the checkpoint lacks (sorted).
        missing: Vec<String>,
        /// Keys in the checkpoint that the model does not use (sorted).
        unexpected: Vec<String>,
    },
    /// A bad forward input (missing image positions, inconsistent batch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A tensor op or weight read failed.
    #[error(transparent)]
    Tensor(#[from] kosmos_tensor::Error),
    /// The vision tower failed.
    #[error(transparent)]
    Vision(#[from] kosmos_vision::Error),
    /// The projection failed.
    #[error(transparent)]
    Projection(#[from] kosmos_projection::Error),
    /// The text decoder failed.
    #[error(transparent)]
    Text(#[from] kosmos_text::Error),
    /// Generation failed (a bad config or prompt batch; a model error inside generation is
    /// boxed in [`GenerationError::Model`](crate::generation::GenerationError::Model)).
    #[error(transparent)]
    Generation(#[from] crate::generation::GenerationError),
}

fn weights_message(missing: &[String], unexpected: &[String]) -> String {
    const SHOW: usize = 12;
    let list = |keys: &[String]| {
        let mut s = keys
            .iter()
            .take(SHOW)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if keys.len() > SHOW {
            s.push_str(&format!(", ... ({} more)", keys.len() - SHOW));
        }
        s
    };
    format!(
        "checkpoint keys do not match the config: {} missing [{}], {} unexpected [{}]",
        missing.len(),
        list(missing),
        unexpected.len(),
        list(unexpected)
    )
}
