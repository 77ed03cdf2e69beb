//! Tensor storage: an owned buffer or a view into a memory-mapped file.

use std::sync::Arc;

use half::{bf16, f16};

use crate::dtype::{DType, WithDType};

/// A borrowed, typed view of a storage buffer.
#[derive(Clone, Copy, Debug)]
pub enum CpuSlice<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// bf16 elements.
    BF16(&'a [bf16]),
    /// f16 elements.
    F16(&'a [f16]),
}

impl CpuSlice<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuSlice::F32(_) => DType::F32,
            CpuSlice::BF16(_) => DType::BF16,
            CpuSlice::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CpuSlice::F32(s) => s.len(),
            CpuSlice::BF16(s) => s.len(),
            CpuSlice::F16(s) => s.len(),
        }
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f32.
    #[inline(always)]
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            CpuSlice::F32(s) => s[i],
            CpuSlice::BF16(s) => s[i].to_f32(),
            CpuSlice::F16(s) => s[i].to_f32(),
        }
    }
}

/// A region of a memory map holding `len` elements of `dtype`, suitably aligned (checked at creation).
#[derive(Debug)]
pub(crate) struct MappedRegion {
    pub(crate) mmap: Arc<memmap2::Mmap>,
    pub(crate) byte_start: usize,
    pub(crate) len: usize,
    pub(crate) dtype: DType,
}

impl MappedRegion {
    /// Build a region if it lies inside the map and the address is aligned for `dtype`.
    pub(crate) fn new(
        mmap: Arc<memmap2::Mmap>,
        byte_start: usize,
        len: usize,
        dtype: DType,
    ) -> Option<MappedRegion> {
        let bytes = len.checked_mul(dtype.size_in_bytes())?;
        let end = byte_start.checked_add(bytes)?;
        if end > mmap.len() {
            return None;
        }
        let addr = mmap.as_ptr() as usize + byte_start;
        if !addr.is_multiple_of(dtype.size_in_bytes()) {
            return None;
        }
        Some(MappedRegion {
            mmap,
            byte_start,
            len,
            dtype,
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.mmap[self.byte_start..self.byte_start + self.len * self.dtype.size_in_bytes()]
    }
}

/// The buffer behind a tensor.
#[derive(Debug)]
pub(crate) enum Storage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    Mapped(MappedRegion),
}

impl Storage {
    pub(crate) fn slice(&self) -> CpuSlice<'_> {
        match self {
            Storage::F32(v) => CpuSlice::F32(v),
            Storage::BF16(v) => CpuSlice::BF16(v),
            Storage::F16(v) => CpuSlice::F16(v),
            // Alignment and bounds were checked in `MappedRegion::new`, so these casts cannot fail.
            Storage::Mapped(r) => match r.dtype {
                DType::F32 => CpuSlice::F32(bytemuck::cast_slice(r.bytes())),
                DType::BF16 => CpuSlice::BF16(bytemuck::cast_slice(r.bytes())),
                DType::F16 => CpuSlice::F16(bytemuck::cast_slice(r.bytes())),
            },
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        self.slice().dtype()
    }

    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped(_))
    }

    /// An owned copy of this storage (a mapped region becomes a Vec).
    pub(crate) fn to_owned_storage(&self) -> Storage {
        match self.slice() {
            CpuSlice::F32(s) => Storage::F32(s.to_vec()),
            CpuSlice::BF16(s) => Storage::BF16(s.to_vec()),
            CpuSlice::F16(s) => Storage::F16(s.to_vec()),
        }
    }

    pub(crate) fn zeros(len: usize, dtype: DType) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(vec![0.0; len]),
            DType::BF16 => Storage::BF16(vec![bf16::ZERO; len]),
            DType::F16 => Storage::F16(vec![f16::ZERO; len]),
        }
    }

    /// Build storage of `dtype` from f32 values.
    pub(crate) fn from_f32_vec(v: Vec<f32>, dtype: DType) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(v),
            DType::BF16 => Storage::BF16(convert_from_f32(&v)),
            DType::F16 => Storage::F16(convert_from_f32(&v)),
        }
    }
}

/// Convert f32 values to `T` (round to nearest even).
pub(crate) fn convert_from_f32<T: WithDType>(src: &[f32]) -> Vec<T> {
    src.iter().map(|&v| T::from_f32(v)).collect()
}
