//! The crate's typed error.

use crate::dtype::DType;

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in `kosmos-tensor`. Each variant names the op and the shapes involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands have incompatible shapes.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// The number of elements does not match the requested shape.
    #[error("{op}: {len} elements cannot have shape {shape:?}")]
    ElementCount {
        op: &'static str,
        len: usize,
        shape: Vec<usize>,
    },
    /// A dimension index is out of range for the tensor's rank.
    #[error("{op}: dimension {dim} out of range for shape {shape:?}")]
    DimOutOfRange {
        op: &'static str,
        dim: usize,
        shape: Vec<usize>,
    },
    /// A range along a dimension is out of bounds.
    #[error("{op}: range {start}..{start}+{len} out of bounds for dim {dim} of shape {shape:?}")]
    RangeOutOfBounds {
        op: &'static str,
        dim: usize,
        start: usize,
        len: usize,
        shape: Vec<usize>,
    },
    /// The tensor must have a particular rank.
    #[error("{op}: expected rank {expected}, got shape {shape:?}")]
    Rank {
        op: &'static str,
        expected: usize,
        shape: Vec<usize>,
    },
    /// The op does not accept empty inputs (a zero-sized dimension).
    #[error("{op}: empty input of shape {shape:?}")]
    Empty { op: &'static str, shape: Vec<usize> },
    /// Two operands have different dtypes where they must agree.
    #[error("{op}: dtype mismatch {lhs:?} vs {rhs:?}")]
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    /// An index (token id, ...) is out of range.
    #[error("{op}: index {index} out of range (size {size})")]
    IndexOutOfRange {
        op: &'static str,
        index: usize,
        size: usize,
    },
    /// A bad argument that is not a shape (k = 0, patch = 0, ...).
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// The op needs CPU tensors (or tensors on the same device).
    #[error("{op}: tensors are not on the CPU device ({device})")]
    DeviceMismatch { op: &'static str, device: String },
    /// A CUDA device was requested but the crate was built without the `cuda` feature.
    #[error("kosmos-tensor was built without the `cuda` feature (requested {what})")]
    CudaNotCompiled { what: String },
    /// An unknown SIMD level was requested (e.g. through `KOSMOS_SIMD`).
    #[error("unknown SIMD level {name:?} (expected scalar, avx2, avx512 or avx512bf16)")]
    UnknownSimd { name: String },
    /// A SIMD level was requested that this CPU does not support.
    #[error("SIMD level {name} is not supported by this CPU")]
    UnsupportedSimd { name: &'static str },

    // ---- weights ----
    /// I/O failure while opening or mapping a weight file.
    #[error("weights: cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The safetensors header (or the index JSON) is malformed or lies about the data.
    #[error("weights: invalid safetensors file {path}: {msg}")]
    InvalidSafetensors { path: String, msg: String },
    /// The file is shorter than its header says.
    #[error("weights: {path} is truncated: needs {needed} bytes, has {actual}")]
    Truncated {
        path: String,
        needed: u64,
        actual: u64,
    },
    /// A tensor name is not in the store.
    #[error("weights: missing tensor {name:?}")]
    MissingKey { name: String },
    /// The stored shape is not the expected one.
    #[error("weights: tensor {name:?} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The stored dtype cannot be used (e.g. an integer tensor).
    #[error("weights: tensor {name:?} has unsupported dtype {dtype}")]
    UnsupportedDType { name: String, dtype: String },
    /// A shard named in `model.safetensors.index.json` does not exist.
    #[error("weights: shard {shard:?} (listed in {index}) is missing")]
    MissingShard { index: String, shard: String },
    /// Neither `model.safetensors` nor `model.safetensors.index.json` is in the directory.
    #[error("weights: no model.safetensors or model.safetensors.index.json in {dir}")]
    NoWeights { dir: String },
}
