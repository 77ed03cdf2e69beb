//! The `Tensor` type: Arc'd storage plus a strided layout.

use std::borrow::Cow;
use std::sync::Arc;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::device::Device;
use crate::dtype::{DType, WithDType};
use crate::error::{Error, Result};
use crate::shape::{checked_elem_count, Layout};
use crate::storage::{CpuSlice, Storage};

/// Convert a contiguous slice to `T` on rayon (large weights and activations).
fn convert_par<T: WithDType>(src: CpuSlice<'_>) -> Vec<T> {
    const CHUNK: usize = 1 << 14;
    let mut out: Vec<T> = vec![T::from_f32(0.0); src.len()];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let r = c * CHUNK..c * CHUNK + dst.len();
        match src {
            CpuSlice::F32(s) => dst
                .iter_mut()
                .zip(&s[r])
                .for_each(|(d, &v)| *d = T::from_f32(v)),
            CpuSlice::BF16(s) => dst
                .iter_mut()
                .zip(&s[r])
                .for_each(|(d, v)| *d = T::from_f32(v.to_f32())),
            CpuSlice::F16(s) => dst
                .iter_mut()
                .zip(&s[r])
                .for_each(|(d, v)| *d = T::from_f32(v.to_f32())),
        }
    });
    out
}

/// Elementwise ops above this many elements run on rayon.
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;

/// An n-dimensional array of f32, bf16 or f16 with shared storage and a strided layout.
///
/// Cloning is cheap (the storage is reference counted); views such as [`Tensor::transpose`] and
/// [`Tensor::narrow`] share the storage.
///
/// ```
/// use kosmos_tensor::{Device, Tensor};
/// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &Device::Cpu)?;
/// let tt = t.transpose(0, 1)?;
/// assert_eq!(tt.dims(), &[3, 2]);
/// assert_eq!(tt.to_vec_f32()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    pub(crate) device: Device,
}

/// Shape, dtype and layout only (never the data, which may be gigabytes).
impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.layout.shape)
            .field("dtype", &self.dtype())
            .field("strides", &self.layout.strides)
            .field("offset", &self.layout.offset)
            .field("device", &self.device)
            .field("mapped", &self.storage.is_mapped())
            .finish()
    }
}

pub(crate) fn check_cpu(op: &'static str, device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        other => Err(Error::DeviceMismatch {
            op,
            device: other.to_string(),
        }),
    }
}

impl Tensor {
    pub(crate) fn from_storage(storage: Storage, shape: &[usize], device: &Device) -> Tensor {
        Tensor {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
            device: device.clone(),
        }
    }

    /// A CPU tensor of `dtype` from f32 values in row-major order (the caller checked the count).
    pub(crate) fn from_f32_with_dtype(data: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor::from_storage(Storage::from_f32_vec(data, dtype), shape, &Device::Cpu)
    }

    fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
        if checked_elem_count(op, shape)? != len {
            return Err(Error::ElementCount {
                op,
                len,
                shape: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// An f32 tensor owning `data` (row-major).
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_vec", data.len(), shape)?;
        check_cpu("from_vec", device)?;
        Ok(Tensor::from_storage(Storage::F32(data), shape, device))
    }

    /// An f32 tensor copied from `data` (row-major).
    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// A bf16 tensor owning `data`.
    pub fn from_vec_bf16(data: Vec<bf16>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_vec_bf16", data.len(), shape)?;
        check_cpu("from_vec_bf16", device)?;
        Ok(Tensor::from_storage(Storage::BF16(data), shape, device))
    }

    /// An f16 tensor owning `data`.
    pub fn from_vec_f16(data: Vec<f16>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Self::check_len("from_vec_f16", data.len(), shape)?;
        check_cpu("from_vec_f16", device)?;
        Ok(Tensor::from_storage(Storage::F16(data), shape, device))
    }

    /// A zero-filled tensor.
    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        let n = checked_elem_count("zeros", shape)?;
        check_cpu("zeros", device)?;
        Ok(Tensor::from_storage(
            Storage::zeros(n, dtype),
            shape,
            device,
        ))
    }

    /// The shape.
    pub fn dims(&self) -> &[usize] {
        &self.layout.shape
    }

    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.layout.strides
    }

    /// The size of dimension `d`.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.layout.check_dim("dim", d)?;
        Ok(self.layout.shape[d])
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.layout.shape.len()
    }

    /// The number of elements.
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Row-major contiguous (views from `narrow` on the first dim stay contiguous).
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether the data is a zero-copy view into a memory-mapped weight file.
    pub fn is_memory_mapped(&self) -> bool {
        self.storage.is_mapped()
    }

    /// The contiguous typed data of this tensor, if it is contiguous.
    pub fn contiguous_slice(&self) -> Option<CpuSlice<'_>> {
        if !self.is_contiguous() {
            return None;
        }
        let n = self.elem_count();
        let o = self.layout.offset;
        Some(match self.storage.slice() {
            CpuSlice::F32(s) => CpuSlice::F32(&s[o..o + n]),
            CpuSlice::BF16(s) => CpuSlice::BF16(&s[o..o + n]),
            CpuSlice::F16(s) => CpuSlice::F16(&s[o..o + n]),
        })
    }

    /// The data of a contiguous f32 tensor, borrowed (no copy); `None` for other dtypes or layouts.
    pub fn as_f32_slice(&self) -> Option<&[f32]> {
        match self.contiguous_slice() {
            Some(CpuSlice::F32(s)) => Some(s),
            _ => None,
        }
    }

    /// The data of a contiguous f32 tensor, mutably and in place (the `_into` ops and the KV cache
    /// write through it).
    ///
    /// Copy-on-write: if the storage is shared with another tensor (a clone or a view) or is a
    /// memory map, it is copied first, once; later calls on the now unique storage allocate nothing.
    pub fn as_f32_slice_mut(&mut self) -> Result<&mut [f32]> {
        let op = "as_f32_slice_mut";
        check_cpu(op, &self.device)?;
        if self.dtype() != DType::F32 || !self.is_contiguous() {
            return Err(Error::InvalidArgument {
                op,
                msg: format!(
                    "needs a contiguous f32 tensor, got {:?} with shape {:?} and strides {:?}",
                    self.dtype(),
                    self.dims(),
                    self.strides()
                ),
            });
        }
        if Arc::get_mut(&mut self.storage).is_none_or(|s| s.is_mapped()) {
            self.storage = Arc::new(self.storage.to_owned_storage());
        }
        let (o, n) = (self.layout.offset, self.elem_count());
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::F32(v)) => Ok(&mut v[o..o + n]),
            _ => Err(Error::InvalidArgument {
                op,
                msg: "storage is still shared".into(),
            }),
        }
    }

    /// The values as f32 in row-major order: borrowed when already contiguous f32, otherwise copied.
    pub(crate) fn f32_cow(&self, op: &'static str) -> Result<Cow<'_, [f32]>> {
        check_cpu(op, &self.device)?;
        if let Some(CpuSlice::F32(s)) = self.contiguous_slice() {
            return Ok(Cow::Borrowed(s));
        }
        Ok(Cow::Owned(self.gather_f32()))
    }

    fn gather_f32(&self) -> Vec<f32> {
        self.gather_typed::<f32>()
    }

    /// All values as f32, row-major, whatever the dtype and layout.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        Ok(self.f32_cow("to_vec_f32")?.into_owned())
    }

    /// Values as `T` in row-major order.
    fn gather_typed<T: WithDType>(&self) -> Vec<T> {
        if let Some(src) = self.contiguous_slice() {
            if src.len() >= PAR_THRESHOLD {
                return convert_par(src);
            }
        }
        let mut out = Vec::new();
        match self.storage.slice() {
            CpuSlice::F32(s) => self.layout.gather(s, &mut out, T::from_f32),
            CpuSlice::BF16(s) => self.layout.gather(s, &mut out, |v| T::from_f32(v.to_f32())),
            CpuSlice::F16(s) => self.layout.gather(s, &mut out, |v| T::from_f32(v.to_f32())),
        }
        out
    }

    /// Convert to `dtype` (round to nearest even); a cheap clone when the dtype already matches.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        check_cpu("to_dtype", &self.device)?;
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let storage = match dtype {
            DType::F32 => Storage::F32(self.gather_typed()),
            DType::BF16 => Storage::BF16(self.gather_typed()),
            DType::F16 => Storage::F16(self.gather_typed()),
        };
        Ok(Tensor::from_storage(storage, self.dims(), &self.device))
    }

    /// A contiguous tensor with the same values; no copy if already contiguous.
    pub fn contiguous(&self) -> Result<Tensor> {
        check_cpu("contiguous", &self.device)?;
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let storage = match self.dtype() {
            DType::F32 => Storage::F32(self.gather_typed()),
            DType::BF16 => Storage::BF16(self.gather_typed()),
            DType::F16 => Storage::F16(self.gather_typed()),
        };
        Ok(Tensor::from_storage(storage, self.dims(), &self.device))
    }

    /// Same values, new shape; no copy when contiguous.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_elem_count("reshape", shape)? != self.elem_count() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.dims().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        let base = self.contiguous()?;
        Ok(Tensor {
            storage: base.storage,
            layout: Layout {
                shape: shape.to_vec(),
                strides: crate::shape::contiguous_strides(shape),
                offset: base.layout.offset,
            },
            device: base.device,
        })
    }

    /// Swap two dimensions (a strided view, no copy).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        self.layout.check_dim("transpose", d0)?;
        self.layout.check_dim("transpose", d1)?;
        let mut layout = self.layout.clone();
        layout.shape.swap(d0, d1);
        layout.strides.swap(d0, d1);
        Ok(Tensor {
            storage: self.storage.clone(),
            layout,
            device: self.device.clone(),
        })
    }

    /// `len` entries of dimension `dim` starting at `start` (a view, no copy).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        self.layout.check_dim("narrow", dim)?;
        let size = self.layout.shape[dim];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::RangeOutOfBounds {
                op: "narrow",
                dim,
                start,
                len,
                shape: self.dims().to_vec(),
            });
        }
        let mut layout = self.layout.clone();
        if len > 0 {
            layout.offset += start * layout.strides[dim];
        }
        layout.shape[dim] = len;
        Ok(Tensor {
            storage: self.storage.clone(),
            layout,
            device: self.device.clone(),
        })
    }

    /// Concatenate along `dim`. All tensors need the same dtype and the same shape outside `dim`.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::InvalidArgument {
            op: "cat",
            msg: "no tensors to concatenate".into(),
        })?;
        first.layout.check_dim("cat", dim)?;
        let dtype = first.dtype();
        let mut total = 0usize;
        for t in tensors {
            check_cpu("cat", &t.device)?;
            if t.dtype() != dtype {
                return Err(Error::DTypeMismatch {
                    op: "cat",
                    lhs: dtype,
                    rhs: t.dtype(),
                });
            }
            let same_rank = t.rank() == first.rank();
            if !same_rank
                || t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .any(|(i, (a, b))| i != dim && a != b)
            {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.dims().to_vec(),
                    rhs: t.dims().to_vec(),
                });
            }
            total += t.dims()[dim];
        }
        let mut shape = first.dims().to_vec();
        shape[dim] = total;
        let outer: usize = shape[..dim].iter().product();
        fn build<T: WithDType>(tensors: &[&Tensor], dim: usize, outer: usize) -> Vec<T> {
            let parts: Vec<(Vec<T>, usize)> = tensors
                .iter()
                .map(|t| {
                    let inner: usize = t.dims()[dim..].iter().product();
                    (t.gather_typed::<T>(), inner)
                })
                .collect();
            let mut out = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
            for o in 0..outer {
                for (data, inner) in &parts {
                    out.extend_from_slice(&data[o * inner..(o + 1) * inner]);
                }
            }
            out
        }
        let storage = match dtype {
            DType::F32 => Storage::F32(build(tensors, dim, outer)),
            DType::BF16 => Storage::BF16(build(tensors, dim, outer)),
            DType::F16 => Storage::F16(build(tensors, dim, outer)),
        };
        Ok(Tensor::from_storage(storage, &shape, &first.device))
    }

    /// Repeat the tensor `n` times along a new leading dimension: `[..] -> [n, ..]` (copies).
    pub fn broadcast_left(&self, n: usize) -> Result<Tensor> {
        let mut shape = vec![n];
        shape.extend_from_slice(self.dims());
        if n == 0 {
            return Tensor::zeros(&shape, self.dtype(), &self.device);
        }
        let unsq = self.unsqueeze(0)?;
        let parts: Vec<&Tensor> = std::iter::repeat_n(&unsq, n).collect();
        Tensor::cat(&parts, 0)
    }

    /// Insert a dimension of size 1 at `dim` (a view).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim,
                shape: self.dims().to_vec(),
            });
        }
        let mut layout = self.layout.clone();
        let stride = layout
            .strides
            .get(dim)
            .map(|&s| s * layout.shape[dim])
            .unwrap_or(1);
        layout.shape.insert(dim, 1);
        layout.strides.insert(dim, stride);
        Ok(Tensor {
            storage: self.storage.clone(),
            layout,
            device: self.device.clone(),
        })
    }

    fn binary(&self, rhs: &Tensor, op: &'static str, f: fn(f32, f32) -> f32) -> Result<Tensor> {
        let suffix_ok = rhs.rank() <= self.rank() && self.dims().ends_with(rhs.dims());
        if !suffix_ok {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.dims().to_vec(),
                rhs: rhs.dims().to_vec(),
            });
        }
        check_cpu(op, &rhs.device)?;
        let a = self.f32_cow(op)?;
        let b = rhs.f32_cow(op)?;
        let n = a.len();
        let bn = b.len();
        let mut out = vec![0f32; n];
        if n > 0 && bn > 0 {
            let kernel = |(oc, ac): (&mut [f32], &[f32])| {
                for ((o, x), y) in oc.iter_mut().zip(ac).zip(b.iter()) {
                    *o = f(*x, *y);
                }
            };
            if n >= PAR_THRESHOLD && bn >= 256 {
                out.par_chunks_mut(bn)
                    .zip(a.par_chunks(bn))
                    .for_each(kernel);
            } else {
                out.chunks_mut(bn).zip(a.chunks(bn)).for_each(kernel);
            }
        }
        Ok(Tensor::from_f32_with_dtype(out, self.dims(), self.dtype()))
    }

    /// Elementwise sum; `rhs` has the same shape or a suffix of it (broadcast over leading dims).
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "add", |a, b| a + b)
    }

    /// Elementwise difference; `rhs` has the same shape or a suffix of it.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "sub", |a, b| a - b)
    }

    /// Elementwise product; `rhs` has the same shape or a suffix of it.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, "mul", |a, b| a * b)
    }

    /// `x * s` computed in f32.
    pub fn scale(&self, s: f32) -> Result<Tensor> {
        self.map_f32("scale", move |x| x * s)
    }

    /// Apply `f` to every element (computed in f32, stored back in this tensor's dtype).
    pub(crate) fn map_f32(
        &self,
        op: &'static str,
        f: impl Fn(f32) -> f32 + Sync,
    ) -> Result<Tensor> {
        let a = self.f32_cow(op)?;
        let mut out = vec![0f32; a.len()];
        if a.len() >= PAR_THRESHOLD {
            out.par_chunks_mut(4096)
                .zip(a.par_chunks(4096))
                .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
        } else {
            out.iter_mut().zip(a.iter()).for_each(|(o, &x)| *o = f(x));
        }
        Ok(Tensor::from_f32_with_dtype(out, self.dims(), self.dtype()))
    }

    /// Batched matmul `[.., m, k] x [.., k, n] -> [.., m, n]` (see [`crate::ops::matmul`]).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        crate::ops::matmul(self, rhs)
    }

    /// Write `src` into `self` at `[start, start + src.dim(dim))` along `dim`, in place.
    ///
    /// If the storage is shared with another tensor (a clone or a view), it is copied first
    /// (copy-on-write), so drop views of a KV cache before appending to it. `src` is converted to
    /// this tensor's dtype.
    pub fn write_narrow(&mut self, dim: usize, start: usize, src: &Tensor) -> Result<()> {
        self.layout.check_dim("write_narrow", dim)?;
        check_cpu("write_narrow", &src.device)?;
        let len = src.dims().get(dim).copied().unwrap_or(0);
        let shape_ok = src.rank() == self.rank()
            && src
                .dims()
                .iter()
                .zip(self.dims())
                .enumerate()
                .all(|(i, (a, b))| i == dim || a == b);
        if !shape_ok {
            return Err(Error::ShapeMismatch {
                op: "write_narrow",
                lhs: self.dims().to_vec(),
                rhs: src.dims().to_vec(),
            });
        }
        let target = self
            .narrow(dim, start, len)
            .map_err(|_| Error::RangeOutOfBounds {
                op: "write_narrow",
                dim,
                start,
                len,
                shape: self.dims().to_vec(),
            })?;
        let dst_layout = target.layout;
        drop(target.storage);
        if Arc::get_mut(&mut self.storage).is_none_or(|s| s.is_mapped()) {
            self.storage = Arc::new(self.storage.to_owned_storage());
        }
        let storage = Arc::get_mut(&mut self.storage).ok_or(Error::InvalidArgument {
            op: "write_narrow",
            msg: "storage is still shared".into(),
        })?;
        fn scatter<T: WithDType>(dst: &mut [T], layout: &Layout, src: &[T]) {
            let mut pos = 0;
            layout.for_each_row(|start, len, stride| {
                for j in 0..len {
                    dst[start + j * stride] = src[pos + j];
                }
                pos += len;
            });
        }
        match storage {
            Storage::F32(d) => scatter(d, &dst_layout, &src.gather_typed::<f32>()),
            Storage::BF16(d) => scatter(d, &dst_layout, &src.gather_typed::<bf16>()),
            Storage::F16(d) => scatter(d, &dst_layout, &src.gather_typed::<f16>()),
            Storage::Mapped(_) => {
                return Err(Error::InvalidArgument {
                    op: "write_narrow",
                    msg: "cannot write into a memory-mapped tensor".into(),
                })
            }
        }
        Ok(())
    }

    /// The f32 values of a 0- or 1-element tensor.
    pub fn to_scalar_f32(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::ElementCount {
                op: "to_scalar_f32",
                len: self.elem_count(),
                shape: self.dims().to_vec(),
            });
        }
        Ok(self.to_vec_f32()?[0])
    }
}
