//! `WeightStore`: safetensors files (single or sharded) over `memmap2`, with a validating header parser.
//!
//! Every header is checked before any tensor is handed out: the JSON must parse, each tensor's byte
//! range must match its dtype and shape, lie inside the file and not overlap another. Any lie gives a
//! typed error, never a panic. Tensors whose stored dtype equals the requested one (and whose data is
//! aligned) are zero-copy views into the map; others are converted on load.
//!
//! The maps assume the files are not modified while the store (or a tensor from it) is alive.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Deserialize;

use crate::device::Device;
use crate::dtype::{DType, WithDType};
use crate::error::{Error, Result};
use crate::storage::{MappedRegion, Storage};
use crate::tensor::{check_cpu, Tensor};

/// Largest header accepted (the safetensors format itself caps it at 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// How a tensor is stored on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stored {
    Float(DType),
    /// Another safetensors dtype (integers, f64, f8...): listed, but `get` refuses it.
    Other(String),
}

fn stored_dtype(name: &str) -> Option<(Stored, usize)> {
    Some(match name {
        "F32" => (Stored::Float(DType::F32), 4),
        "BF16" => (Stored::Float(DType::BF16), 2),
        "F16" => (Stored::Float(DType::F16), 2),
        "F64" | "I64" | "U64" => (Stored::Other(name.into()), 8),
        "I32" | "U32" => (Stored::Other(name.into()), 4),
        "I16" | "U16" => (Stored::Other(name.into()), 2),
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => (Stored::Other(name.into()), 1),
        _ => return None,
    })
}

#[derive(Debug)]
struct Entry {
    file: usize,
    stored: Stored,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    start: usize,
    /// Number of elements.
    len: usize,
}

#[derive(Debug, Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

#[derive(Debug, Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

/// Safetensors weights, memory-mapped.
#[derive(Debug)]
pub struct WeightStore {
    files: Vec<Arc<memmap2::Mmap>>,
    paths: Vec<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

fn invalid(path: &Path, msg: impl Into<String>) -> Error {
    Error::InvalidSafetensors {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Map and validate one safetensors file; returns the map and its tensors (absolute offsets).
fn parse_file(path: &Path) -> Result<(Arc<memmap2::Mmap>, BTreeMap<String, Entry>)> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let truncated = |needed: u64| Error::Truncated {
        path: path.display().to_string(),
        needed,
        actual: file_len,
    };
    if file_len < 8 {
        return Err(truncated(8));
    }
    // SAFETY: the file is opened read-only; like every mmap-based loader we rely on it not being
    // modified for the lifetime of the map (documented on the module).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(path, e))?;
    let len = mmap.len() as u64;
    if len != file_len {
        return Err(invalid(path, "file changed while being mapped"));
    }
    let mut hl_bytes = [0u8; 8];
    hl_bytes.copy_from_slice(&mmap[..8]);
    let header_len = u64::from_le_bytes(hl_bytes);
    if header_len > MAX_HEADER {
        return Err(invalid(
            path,
            format!("header length {header_len} is absurd"),
        ));
    }
    let data_start = 8 + header_len;
    if data_start > len {
        return Err(truncated(data_start));
    }
    let data_start = data_start as usize;
    let header = std::str::from_utf8(&mmap[8..data_start])
        .map_err(|e| invalid(path, format!("header is not UTF-8: {e}")))?;
    let raw: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(header.trim_end())
            .map_err(|e| invalid(path, format!("header is not a JSON object: {e}")))?;
    let data_len = mmap.len() - data_start;
    let mut entries = BTreeMap::new();
    let mut ranges: Vec<(usize, usize, String)> = Vec::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let info: RawInfo = serde_json::from_value(value)
            .map_err(|e| invalid(path, format!("tensor {name:?}: bad header entry: {e}")))?;
        let (stored, elem) = stored_dtype(&info.dtype).ok_or_else(|| {
            invalid(
                path,
                format!("tensor {name:?}: unknown dtype {:?}", info.dtype),
            )
        })?;
        let [begin, end] = info.data_offsets;
        let count = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("tensor {name:?}: absurd shape {:?}", info.shape),
                )
            })?;
        let nbytes = count.checked_mul(elem).ok_or_else(|| {
            invalid(
                path,
                format!("tensor {name:?}: absurd shape {:?}", info.shape),
            )
        })?;
        if end < begin || end - begin != nbytes {
            return Err(invalid(
                path,
                format!(
                    "tensor {name:?}: offsets {begin}..{end} do not hold {} {:?} of shape {:?}",
                    count, info.dtype, info.shape
                ),
            ));
        }
        if end > data_len {
            return Err(truncated(data_start as u64 + end as u64));
        }
        ranges.push((begin, end, name.clone()));
        entries.insert(
            name,
            Entry {
                file: 0,
                stored,
                shape: info.shape,
                start: data_start + begin,
                len: count,
            },
        );
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.0 < a.1 && b.0 != b.1 && a.0 != a.1 {
            return Err(invalid(
                path,
                format!("tensors {:?} and {:?} overlap", a.2, b.2),
            ));
        }
    }
    Ok((Arc::new(mmap), entries))
}

fn check_shard_name(index: &Path, name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\\')
        || name == "."
        || name == ".."
        || name.contains('\0');
    if bad {
        return Err(invalid(
            index,
            format!("shard name {name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

impl WeightStore {
    /// Open a model directory (`model.safetensors.index.json` if present, else `model.safetensors`),
    /// an index JSON file, or a single `.safetensors` file.
    pub fn open(path: &Path) -> Result<WeightStore> {
        if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join("model.safetensors");
            if single.is_file() {
                return Self::open_file(&single);
            }
            return Err(Error::NoWeights {
                dir: path.display().to_string(),
            });
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Self::open_index(path);
        }
        Self::open_file(path)
    }

    fn open_file(path: &Path) -> Result<WeightStore> {
        let (mmap, entries) = parse_file(path)?;
        Ok(WeightStore {
            files: vec![mmap],
            paths: vec![path.to_path_buf()],
            entries,
        })
    }

    fn open_index(index: &Path) -> Result<WeightStore> {
        let text = std::fs::read_to_string(index).map_err(|e| io_err(index, e))?;
        let raw: RawIndex = serde_json::from_str(&text)
            .map_err(|e| invalid(index, format!("bad index JSON: {e}")))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shard_ids: HashMap<String, usize> = HashMap::new();
        let mut files = Vec::new();
        let mut paths = Vec::new();
        let mut parsed: Vec<BTreeMap<String, Entry>> = Vec::new();
        for shard in raw.weight_map.values() {
            if shard_ids.contains_key(shard) {
                continue;
            }
            check_shard_name(index, shard)?;
            let p = dir.join(shard);
            if !p.is_file() {
                return Err(Error::MissingShard {
                    index: index.display().to_string(),
                    shard: shard.clone(),
                });
            }
            let (mmap, entries) = parse_file(&p)?;
            shard_ids.insert(shard.clone(), files.len());
            files.push(mmap);
            paths.push(p);
            parsed.push(entries);
        }
        let mut entries = BTreeMap::new();
        for (name, shard) in &raw.weight_map {
            let id = shard_ids[shard];
            let mut e = parsed[id].remove(name).ok_or_else(|| {
                invalid(
                    index,
                    format!("index puts {name:?} in {shard:?}, which does not contain it"),
                )
            })?;
            e.file = id;
            entries.insert(name.clone(), e);
        }
        Ok(WeightStore {
            files,
            paths,
            entries,
        })
    }

    /// The files backing this store.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Whether `name` is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| Error::MissingKey {
            name: name.to_string(),
        })
    }

    fn float_dtype(name: &str, e: &Entry) -> Result<DType> {
        match &e.stored {
            Stored::Float(d) => Ok(*d),
            Stored::Other(s) => Err(Error::UnsupportedDType {
                name: name.to_string(),
                dtype: s.clone(),
            }),
        }
    }

    /// Stored shape and dtype of `name`.
    pub fn info(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        let e = self.entry(name)?;
        Ok((e.shape.clone(), Self::float_dtype(name, e)?))
    }

    /// Load `name`, checking that its shape is `shape`, as `dtype`: a zero-copy view of the map when the
    /// stored dtype is `dtype` and the data is aligned, otherwise a converted (or copied) owned tensor.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        check_cpu("WeightStore::get", device)?;
        let e = self.entry(name)?;
        if e.shape != shape {
            return Err(Error::WrongShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: e.shape.clone(),
            });
        }
        let stored = Self::float_dtype(name, e)?;
        let mmap = &self.files[e.file];
        if stored == dtype {
            if let Some(region) = MappedRegion::new(mmap.clone(), e.start, e.len, dtype) {
                return Ok(Tensor::from_storage(Storage::Mapped(region), shape, device));
            }
        }
        let bytes = &mmap[e.start..e.start + e.len * stored.size_in_bytes()];
        let storage = match dtype {
            DType::F32 => Storage::F32(convert_bytes(bytes, stored)),
            DType::BF16 => Storage::BF16(convert_bytes(bytes, stored)),
            DType::F16 => Storage::F16(convert_bytes(bytes, stored)),
        };
        Ok(Tensor::from_storage(storage, shape, device))
    }

    /// Load `name` in its stored dtype (no conversion), checking the shape.
    pub fn get_stored(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let (_, dtype) = self.info(name)?;
        self.get(name, shape, dtype, device)
    }
}

/// Decode little-endian `stored` elements from possibly unaligned bytes into `T`, in parallel.
fn convert_bytes<T: WithDType>(bytes: &[u8], stored: DType) -> Vec<T> {
    let esz = stored.size_in_bytes();
    let n = bytes.len() / esz;
    let mut out: Vec<T> = vec![T::from_f32(0.0); n];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let src = &bytes[c * CHUNK * esz..(c * CHUNK + dst.len()) * esz];
        match stored {
            DType::F32 => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            DType::BF16 => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = T::from_f32(bf16::from_le_bytes([b[0], b[1]]).to_f32());
                }
            }
            DType::F16 => {
                for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *d = T::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32());
                }
            }
        }
    });
    out
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
    std::fs::write(path, out).map_err(|e| io_err(path, e))
}
