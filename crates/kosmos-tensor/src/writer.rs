//! Writing safetensors files: from tensors ([`write_safetensors`], for tests and fixtures) or from
//! raw stored bytes of any dtype ([`write_safetensors_raw`], streamed, for checkpoint rewriting such
//! as int8 quantisation).

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One stored tensor as bytes (see [`crate::weights::WeightStore::raw`] and
/// [`write_safetensors_raw`]).
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    /// The safetensors dtype name (`"F32"`, `"I8"`, ...).
    pub dtype: &'a str,
    /// The shape.
    pub shape: &'a [usize],
    /// Little-endian element bytes, row-major.
    pub data: &'a [u8],
}

/// Write tensors to a safetensors file (for tests, fixtures and tools). Names must be unique.
pub fn write_safetensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in tensors {
        let t = t.contiguous()?;
        let begin = data.len();
        match t.contiguous_slice() {
            Some(crate::storage::CpuSlice::F32(s)) => {
                s.iter().for_each(|v| data.extend(v.to_le_bytes()))
            }
            Some(crate::storage::CpuSlice::BF16(s)) => {
                s.iter().for_each(|v| data.extend(v.to_le_bytes()))
            }
            Some(crate::storage::CpuSlice::F16(s)) => {
                s.iter().for_each(|v| data.extend(v.to_le_bytes()))
            }
            None => {
                return Err(Error::InvalidArgument {
                    op: "write_safetensors",
                    msg: format!("tensor {name:?} is not contiguous"),
                })
            }
        }
        let prev = header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": t.dtype().safetensors_name(),
                "shape": t.dims(),
                "data_offsets": [begin, data.len()],
            }),
        );
        if prev.is_some() {
            return Err(Error::InvalidArgument {
                op: "write_safetensors",
                msg: format!("duplicate tensor name {name:?}"),
            });
        }
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::InvalidArgument {
        op: "write_safetensors",
        msg: e.to_string(),
    })?;
    while (json.len() + 8) % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(data);
    std::fs::write(path, out).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Write `(name, tensor)` pairs of any stored dtype to a safetensors file, streaming the data (the
/// tensors are never gathered in memory). Names must be unique; each tensor's byte count must match
/// its dtype and shape. Tensors are laid out in the given order; an optional `__metadata__` map of
/// strings is written to the header.
///
/// ```
/// use kosmos_tensor::{write_safetensors_raw, RawTensor, WeightStore};
/// let dir = std::env::temp_dir().join(format!("raw-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("q.safetensors");
/// let q = RawTensor { dtype: "I8", shape: &[2, 2], data: &[1, 255, 0, 127] };
/// write_safetensors_raw(&path, &[("w", q)], &[("format", "pt")])?;
/// let store = WeightStore::open(&path)?;
/// assert_eq!(store.stored_dtype_name("w")?, "I8");
/// assert_eq!(store.raw("w")?.data, &[1, 255, 0, 127]);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn write_safetensors_raw(
    path: &Path,
    tensors: &[(&str, RawTensor<'_>)],
    metadata: &[(&str, &str)],
) -> Result<()> {
    const OP: &str = "write_safetensors_raw";
    let bad = |msg: String| Error::InvalidArgument { op: OP, msg };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), meta.into());
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let elem = match t.dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "BF16" | "F16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            d => return Err(bad(format!("tensor {name:?}: unknown dtype {d:?}"))),
        };
        let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if count.and_then(|c| c.checked_mul(elem)) != Some(t.data.len()) {
            return Err(bad(format!(
                "tensor {name:?}: {} bytes for {} of shape {:?}",
                t.data.len(),
                t.dtype,
                t.shape
            )));
        }
        let entry = serde_json::json!({
            "dtype": t.dtype,
            "shape": t.shape,
            "data_offsets": [offset, offset + t.data.len()],
        });
        if name == &"__metadata__" || header.insert(name.to_string(), entry).is_some() {
            return Err(bad(format!("duplicate or reserved tensor name {name:?}")));
        }
        offset += t.data.len();
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    while (json.len() + 8) % 8 != 0 {
        json.push(b' ');
    }
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&json).map_err(io)?;
    for (_, t) in tensors {
        out.write_all(t.data).map_err(io)?;
    }
    out.flush().map_err(io)
}
