//! `WeightStore`: safetensors files (single or sharded) over `memmap2`, with a validating header parser.
//!
//! Every header is checked before any tensor is handed out: the JSON must parse, each tensor's byte
//! range must match its dtype and shape, lie inside the file and not overlap another. Any lie gives a
//! typed error, never a panic. Tensors whose stored dtype equals the requested one (and whose data is
//! aligned) are zero-copy views into the map; others are converted on load. f32 → bf16/f16 runs in
//! parallel SIMD chunks ([`crate::convert`]) and releases each chunk's f32 source pages from this
//! process once converted, so loading an f32 file as bf16 peaks at the bf16 size, not f32 + bf16.
//!
//! The maps assume the files are not modified while the store (or a tensor from it) is alive.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use rayon::prelude::*;
use serde::Deserialize;

use crate::convert::{convert_f32_bytes, HalfFormat};
use crate::device::Device;
use crate::dtype::{DType, WithDType};
use crate::error::{Error, Result};
use crate::simd::Isa;
use crate::storage::{MappedRegion, Storage};
use crate::tensor::{check_cpu, Tensor};
use crate::writer::RawTensor;

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
    /// Bytes per element.
    elem: usize,
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
                elem,
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

    /// The pages of every tensor whose name starts with `prefix`, for [`MappedPages::release`].
    pub fn mapped_pages(&self, prefix: &str) -> MappedPages {
        let mut ranges: Vec<(usize, usize, usize)> = self
            .entries
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter_map(|(_, e)| match &e.stored {
                Stored::Float(_) => Some((e.file, e.start, e.start + e.len * e.elem)),
                Stored::Other(s) if s == "I8" => Some((e.file, e.start, e.start + e.len)),
                Stored::Other(_) => None,
            })
            .collect();
        ranges.sort_unstable();
        // Merge touching ranges, so the pages shared by two neighbouring tensors are released too.
        let mut merged: Vec<(usize, usize, usize)> = Vec::new();
        for (file, start, end) in ranges {
            match merged.last_mut() {
                Some(last) if last.0 == file && start <= last.2 => last.2 = last.2.max(end),
                _ => merged.push((file, start, end)),
            }
        }
        MappedPages {
            ranges: merged
                .into_iter()
                .map(|(file, start, end)| (self.files[file].clone(), start, end - start))
                .collect(),
        }
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

    /// The entry of `name`, which must have exactly `shape`.
    fn shaped_entry(&self, name: &str, shape: &[usize]) -> Result<&Entry> {
        let e = self.entry(name)?;
        if e.shape != shape {
            return Err(Error::WrongShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: e.shape.clone(),
            });
        }
        Ok(e)
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
        let e = self.shaped_entry(name, shape)?;
        let stored = Self::float_dtype(name, e)?;
        let mmap = &self.files[e.file];
        if stored == dtype {
            if let Some(region) = MappedRegion::new(mmap.clone(), e.start, e.len, dtype) {
                return Ok(Tensor::from_storage(Storage::Mapped(region), shape, device));
            }
        }
        if stored == DType::F32 && dtype != DType::F32 {
            let storage = match dtype {
                DType::BF16 => Storage::BF16(convert_f32_map(mmap, e.start, e.len)),
                _ => Storage::F16(convert_f32_map(mmap, e.start, e.len)),
            };
            return Ok(Tensor::from_storage(storage, shape, device));
        }
        let bytes = &mmap[e.start..e.start + e.len * stored.size_in_bytes()];
        let storage = match dtype {
            DType::F32 => Storage::F32(convert_bytes(bytes, stored)),
            DType::BF16 => Storage::BF16(convert_bytes(bytes, stored)),
            DType::F16 => Storage::F16(convert_bytes(bytes, stored)),
        };
        Ok(Tensor::from_storage(storage, shape, device))
    }

    /// `name` (`[out, in]`, stored f32/bf16/f16) as a packed bf16 linear weight
    /// ([`crate::packed::PackedBf16`]): f32 is rounded to bf16 and packed panel by panel straight from
    /// the map (no row-major bf16 copy), releasing the source pages as it goes, like [`Self::get`]'s
    /// conversion; bf16 is packed from its zero-copy view; f16 is converted first.
    pub fn get_packed_bf16(
        &self,
        name: &str,
        dims: [usize; 2],
    ) -> Result<crate::packed::PackedBf16> {
        use crate::packed::PackedBf16;
        let e = self.shaped_entry(name, &dims)?;
        let stored = Self::float_dtype(name, e)?;
        let mmap = &self.files[e.file];
        let [n, k] = dims;
        if n * k == 0 {
            return Err(Error::InvalidArgument {
                op: "WeightStore::get_packed_bf16",
                msg: format!("{name}: empty weight {dims:?}"),
            });
        }
        if stored == DType::F32 {
            let _ = advise_range(mmap, memmap2::Advice::WillNeed, e.start, 4 * e.len);
            let bytes = &mmap[e.start..e.start + 4 * e.len];
            let done = |off: usize, len: usize| release_pages(mmap, e.start + off, len);
            return Ok(PackedBf16::from_f32_bytes(bytes, n, k, &done));
        }
        PackedBf16::from_tensor(&self.get(name, &dims, DType::BF16, &Device::Cpu)?)
    }

    /// The safetensors dtype name `name` is stored as (`"F32"`, `"BF16"`, `"I8"`, ...).
    pub fn stored_dtype_name(&self, name: &str) -> Result<&str> {
        Ok(match &self.entry(name)?.stored {
            Stored::Float(d) => d.safetensors_name(),
            Stored::Other(s) => s.as_str(),
        })
    }

    /// The stored bytes, dtype name and shape of `name`, whatever its dtype (for tools that rewrite
    /// checkpoints, such as int8 quantisation). The bytes are a view of the map.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>> {
        let e = self.entry(name)?;
        let mmap = &self.files[e.file];
        Ok(RawTensor {
            dtype: self.stored_dtype_name(name)?,
            shape: &e.shape,
            data: &mmap[e.start..e.start + e.len * e.elem],
        })
    }

    /// `name` stored as `I8` with exactly `shape`: its map and the byte offset of its data.
    pub(crate) fn i8_view(
        &self,
        name: &str,
        shape: &[usize],
    ) -> Result<(Arc<memmap2::Mmap>, usize)> {
        let e = self.shaped_entry(name, shape)?;
        match &e.stored {
            Stored::Other(s) if s == "I8" => Ok((self.files[e.file].clone(), e.start)),
            other => Err(Error::UnsupportedDType {
                name: name.to_string(),
                dtype: match other {
                    Stored::Float(d) => format!("{} (expected I8)", d.safetensors_name()),
                    Stored::Other(s) => format!("{s} (expected I8)"),
                },
            }),
        }
    }

    /// Releases the pages of bytes `[offset, offset + len)` of `name`'s data from this process's
    /// resident set, as [`MappedPages::release`] does, when `name` is stored as f32 (the only
    /// layout its callers compute offsets for); otherwise does nothing.
    pub(crate) fn release_f32_part(&self, name: &str, offset: usize, len: usize) {
        if let Some(e) = self.entries.get(name) {
            if matches!(e.stored, Stored::Float(DType::F32)) && offset + len <= 4 * e.len {
                release_pages(&self.files[e.file], e.start + offset, len);
            }
        }
    }

    /// Load `name` in its stored dtype (no conversion), checking the shape.
    pub fn get_stored(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        let (_, dtype) = self.info(name)?;
        self.get(name, shape, dtype, device)
    }
}

/// Byte ranges of memory-mapped weights (from [`WeightStore::mapped_pages`]) that can be dropped
/// from this process's resident set while the tensors stay valid.
///
/// [`MappedPages::release`] unmaps the whole pages of the ranges from this process (`MADV_DONTNEED`
/// on the read-only shared map). Zero-copy tensors over them stay valid: their next read faults the
/// pages back in from the page cache (or the file). Owned (converted) tensors are not affected.
#[derive(Debug, Clone)]
pub struct MappedPages {
    ranges: Vec<(Arc<memmap2::Mmap>, usize, usize)>,
}

impl MappedPages {
    /// Total bytes of the ranges.
    pub fn bytes(&self) -> usize {
        self.ranges.iter().map(|r| r.2).sum()
    }

    /// Drops the pages from this process's resident set (best effort; Unix only).
    pub fn release(&self) {
        for (mmap, start, len) in &self.ranges {
            release_pages(mmap, *start, *len);
        }
    }
}

/// Elements per parallel conversion chunk (4 MiB of f32 source): big enough that the `madvise`
/// per chunk costs little, small enough that a chunk's source pages are released soon after they
/// are read (peak RSS ≈ converted tensors + 4 MiB per thread).
const CONVERT_CHUNK: usize = 1 << 20;

/// Assumed page size for choosing which source pages to release. On systems with larger pages the
/// kernel rounds the start down, which at worst releases a page a neighbouring chunk still reads:
/// that page is faulted in again from the file, so the result is unchanged.
const PAGE: usize = 4096;

/// The 16-bit element types, both `repr(transparent)` over `u16` (which the conversion relies on).
trait Half16: WithDType {
    const FORMAT: HalfFormat;
}

impl Half16 for bf16 {
    const FORMAT: HalfFormat = HalfFormat::Bf16;
}

impl Half16 for f16 {
    const FORMAT: HalfFormat = HalfFormat::F16;
}

/// Converts `len` little-endian f32 values at byte `start` of the map into bf16 or f16 (`T`),
/// in parallel chunks with SIMD, releasing the source pages of each chunk once it is converted.
///
/// Per chunk: `MADV_POPULATE_WRITE` faults the chunk's output pages in with one call instead of one
/// page fault per 4 KiB (≈ 20% less CPU for the full-size load, measured), the SIMD kernel converts,
/// and `MADV_DONTNEED` drops the chunk's source pages from this process's page tables, so the
/// resident set grows by the converted tensors only, not by the f32 file. The source pages stay in
/// the page cache (shared, reclaimable); any later read of the range (a zero-copy view of a
/// neighbouring tensor sharing a page, or a second `get`) faults them in again from the unchanged
/// file. Before the chunks, `MADV_WILLNEED` starts read-ahead of the whole tensor (for a cold page
/// cache). All advice is best effort: a kernel that refuses it changes speed and RSS, not values.
/// (`MADV_SEQUENTIAL` is not used: per tensor it would split the mapping into hundreds of areas,
/// and on the whole map it would let the kernel drop the pages of zero-copy views early.
/// `MADV_POPULATE_READ` on the source measured no gain.)
fn convert_f32_map<T: Half16>(mmap: &memmap2::Mmap, start: usize, len: usize) -> Vec<T> {
    let fmt = T::FORMAT;
    let isa = Isa::current();
    let _ = advise_range(mmap, memmap2::Advice::WillNeed, start, 4 * len);
    let mut out: Vec<T> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    spare
        .par_chunks_mut(CONVERT_CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let begin = start + 4 * c * CONVERT_CHUNK;
            let nbytes = 4 * dst.len();
            populate_write(dst.as_mut_ptr().cast::<u8>(), 2 * dst.len());
            // SAFETY: `T` is bf16 or f16, both `repr(transparent)` over `u16`, so the chunk is a
            // `MaybeUninit<u16>` slice of the same length; the kernel initialises all of it.
            let dst16 = unsafe {
                std::slice::from_raw_parts_mut(
                    dst.as_mut_ptr().cast::<MaybeUninit<u16>>(),
                    dst.len(),
                )
            };
            convert_f32_bytes(isa, &mmap[begin..begin + nbytes], dst16, fmt);
            release_pages(mmap, begin, nbytes);
        });
    // SAFETY: every chunk of the first `len` slots was initialised by `convert_f32_bytes`.
    unsafe { out.set_len(len) };
    out
}

/// Faults in the whole pages of `[ptr, ptr + bytes)` of a fresh allocation in one `madvise` call
/// (Linux ≥ 5.14; elsewhere, or if refused, the writes fault them in as usual).
pub(crate) fn populate_write(ptr: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = ((ptr as usize + bytes) / PAGE) * PAGE;
        if end > start {
            // SAFETY: `[start, end)` lies inside the caller's live allocation. MADV_POPULATE_WRITE
            // only maps pages that are not mapped yet (zero-filled, as a first write would); it
            // never changes the contents of memory. A page size above `PAGE` gives EINVAL, ignored.
            let _ = unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    end - start,
                    libc::MADV_POPULATE_WRITE,
                )
            };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// `madvise` on `[offset, offset + len)` of the map (the start is rounded down to a page).
fn advise_range(
    mmap: &memmap2::Mmap,
    advice: memmap2::Advice,
    offset: usize,
    len: usize,
) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    mmap.advise_range(advice, offset, len)
}

/// Drops this process's mapping of the whole pages inside `[offset, offset + len)` of the map.
fn release_pages(mmap: &memmap2::Mmap, offset: usize, len: usize) {
    let base = mmap.as_ptr() as usize;
    let first = (base + offset).next_multiple_of(PAGE) - base;
    let end = ((base + offset + len) / PAGE) * PAGE - base;
    if end > first {
        // SAFETY: `Mmap::map` maps the file read-only and `MAP_SHARED`. For such a mapping
        // `MADV_DONTNEED` only unmaps the pages from this process; the next access reads them again
        // from the page cache / file, whose contents the store already assumes unchanged. So every
        // outstanding borrow of the range (zero-copy tensors) keeps seeing the same bytes.
        let _ = unsafe {
            mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, end - first)
        };
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
