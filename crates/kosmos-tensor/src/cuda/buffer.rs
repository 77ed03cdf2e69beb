//! [`CudaBuffer`]: a device buffer of any supported dtype (what CUDA tensor storage holds).

use cudarc::driver::CudaSlice;
use half::{bf16, f16};

use super::backend::CudaBackend;
use super::error::{check_len, CudaResult};
use crate::dtype::DType;
use crate::storage::CpuSlice;

/// A typed device buffer.
#[derive(Debug)]
pub enum CudaBuffer {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// bf16 elements.
    BF16(CudaSlice<bf16>),
    /// f16 elements.
    F16(CudaSlice<f16>),
}

impl CudaBuffer {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CudaBuffer::F32(_) => DType::F32,
            CudaBuffer::BF16(_) => DType::BF16,
            CudaBuffer::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            CudaBuffer::F32(s) => s.len(),
            CudaBuffer::BF16(s) => s.len(),
            CudaBuffer::F16(s) => s.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Uploads host elements (any dtype, kept as is).
    pub fn from_host(backend: &CudaBackend, data: CpuSlice<'_>) -> CudaResult<CudaBuffer> {
        Ok(match data {
            CpuSlice::F32(s) => CudaBuffer::F32(backend.htod(s)?),
            CpuSlice::BF16(s) => CudaBuffer::BF16(backend.htod(s)?),
            CpuSlice::F16(s) => CudaBuffer::F16(backend.htod(s)?),
        })
    }

    /// A zero-filled buffer.
    pub fn zeros(backend: &CudaBackend, dtype: DType, len: usize) -> CudaResult<CudaBuffer> {
        Ok(match dtype {
            DType::F32 => CudaBuffer::F32(backend.zeros(len)?),
            DType::BF16 => CudaBuffer::BF16(backend.zeros(len)?),
            DType::F16 => CudaBuffer::F16(backend.zeros(len)?),
        })
    }

    /// Downloads every element as f32 (synchronises).
    pub fn to_vec_f32(&self, backend: &CudaBackend) -> CudaResult<Vec<f32>> {
        Ok(match self {
            CudaBuffer::F32(s) => backend.dtoh(s)?,
            CudaBuffer::BF16(s) => backend.dtoh(s)?.into_iter().map(f32::from).collect(),
            CudaBuffer::F16(s) => backend.dtoh(s)?.into_iter().map(f32::from).collect(),
        })
    }

    /// Downloads `len` elements from `start` as f32 (a contiguous view; synchronises).
    pub fn range_to_vec_f32(
        &self,
        backend: &CudaBackend,
        start: usize,
        len: usize,
    ) -> CudaResult<Vec<f32>> {
        check_len("range_to_vec_f32", "buffer", self.len(), start + len)?;
        Ok(match self {
            CudaBuffer::F32(s) => backend.dtoh(&s.slice(start..start + len))?,
            CudaBuffer::BF16(s) => backend
                .dtoh(&s.slice(start..start + len))?
                .into_iter()
                .map(f32::from)
                .collect(),
            CudaBuffer::F16(s) => backend
                .dtoh(&s.slice(start..start + len))?
                .into_iter()
                .map(f32::from)
                .collect(),
        })
    }

    /// A new contiguous buffer holding the view `dims` / `strides` / `offset` of this one
    /// (`Tensor::contiguous` for CUDA storage; rank at most [`super::MAX_RANK`]).
    pub fn copy_strided(
        &self,
        backend: &CudaBackend,
        dims: &[usize],
        strides: &[usize],
        offset: usize,
    ) -> CudaResult<CudaBuffer> {
        let n: usize = dims.iter().product();
        macro_rules! gather {
            ($src:expr, $variant:ident, $t:ty) => {{
                let mut d = backend.alloc::<$t>(n)?;
                backend.copy_strided($src, &mut d, dims, strides, offset)?;
                CudaBuffer::$variant(d)
            }};
        }
        Ok(match self {
            CudaBuffer::F32(s) => gather!(s, F32, f32),
            CudaBuffer::BF16(s) => gather!(s, BF16, bf16),
            CudaBuffer::F16(s) => gather!(s, F16, f16),
        })
    }

    /// A copy converted to `dtype` on the device.
    pub fn to_dtype(&self, backend: &CudaBackend, dtype: DType) -> CudaResult<CudaBuffer> {
        let n = self.len();
        let mut out = CudaBuffer::zeros(backend, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        macro_rules! conv {
            ($src:expr) => {
                match &mut out {
                    CudaBuffer::F32(d) => backend.convert($src, d, n)?,
                    CudaBuffer::BF16(d) => backend.convert($src, d, n)?,
                    CudaBuffer::F16(d) => backend.convert($src, d, n)?,
                }
            };
        }
        match self {
            CudaBuffer::F32(s) => conv!(s),
            CudaBuffer::BF16(s) => conv!(s),
            CudaBuffer::F16(s) => conv!(s),
        }
        Ok(out)
    }
}
