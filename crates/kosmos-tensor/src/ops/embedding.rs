//! Embedding gather.

use crate::error::{Error, Result};
use crate::storage::{CpuSlice, Storage};
use crate::tensor::{check_cpu, Tensor};

/// Rows `ids` of `table [V, D]` -> `[ids.len(), D]`, in the table's dtype (no conversion).
/// An id `>= V` is a typed error; empty `ids` are rejected.
pub fn embedding(ids: &[u32], table: &Tensor) -> Result<Tensor> {
    check_cpu("embedding", table.device())?;
    if table.rank() != 2 {
        return Err(Error::Rank {
            op: "embedding",
            expected: 2,
            shape: table.dims().to_vec(),
        });
    }
    super::reject_empty("embedding", table)?;
    if ids.is_empty() {
        return Err(Error::Empty {
            op: "embedding",
            shape: vec![0],
        });
    }
    let (v, d) = (table.dims()[0], table.dims()[1]);
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
        return Err(Error::IndexOutOfRange {
            op: "embedding",
            index: bad as usize,
            size: v,
        });
    }
    let t = table.contiguous()?;
    let Some(data) = t.contiguous_slice() else {
        return Err(Error::InvalidArgument {
            op: "embedding",
            msg: "table is not contiguous".into(),
        });
    };
    fn gather<T: Copy>(src: &[T], ids: &[u32], d: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(ids.len() * d);
        for &i in ids {
            let s = i as usize * d;
            out.extend_from_slice(&src[s..s + d]);
        }
        out
    }
    let storage = match data {
        CpuSlice::F32(s) => Storage::F32(gather(s, ids, d)),
        CpuSlice::BF16(s) => Storage::BF16(gather(s, ids, d)),
        CpuSlice::F16(s) => Storage::F16(gather(s, ids, d)),
    };
    Ok(Tensor::from_storage(
        storage,
        &[ids.len(), d],
        table.device(),
    ))
}

/// Rows `ids` of `table [V, D]` converted to f32 into `out` (`[ids.len(), D]` row-major); allocates
/// nothing when the table is contiguous. An id `>= V` is a typed error.
///
/// ```
/// use kosmos_tensor::{ops, Device, Tensor};
/// let table = Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0], &[2, 2], &Device::Cpu)?;
/// let mut out = [0f32; 4];
/// ops::embedding_into(&[1, 0], &table, &mut out)?;
/// assert_eq!(out, [2.0, 3.0, 0.0, 1.0]);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
pub fn embedding_into(ids: &[u32], table: &Tensor, out: &mut [f32]) -> Result<()> {
    let op = "embedding_into";
    check_cpu(op, table.device())?;
    if table.rank() != 2 {
        return Err(Error::Rank {
            op,
            expected: 2,
            shape: table.dims().to_vec(),
        });
    }
    super::reject_empty(op, table)?;
    let (v, d) = (table.dims()[0], table.dims()[1]);
    if ids.is_empty() || out.len() != ids.len() * d {
        return Err(Error::ShapeMismatch {
            op,
            lhs: vec![ids.len(), d],
            rhs: vec![out.len()],
        });
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
        return Err(Error::IndexOutOfRange {
            op,
            index: bad as usize,
            size: v,
        });
    }
    let Some(data) = table.contiguous_slice() else {
        let t = table.contiguous()?;
        return embedding_into(ids, &t, out);
    };
    for (&i, o) in ids.iter().zip(out.chunks_exact_mut(d)) {
        let r = i as usize * d..(i as usize + 1) * d;
        match data {
            CpuSlice::F32(s) => o.copy_from_slice(&s[r]),
            CpuSlice::BF16(s) => o.iter_mut().zip(&s[r]).for_each(|(o, x)| *o = x.to_f32()),
            CpuSlice::F16(s) => o.iter_mut().zip(&s[r]).for_each(|(o, x)| *o = x.to_f32()),
        }
    }
    Ok(())
}
