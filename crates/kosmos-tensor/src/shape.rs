//! Shapes, strides and strided iteration.

use crate::error::{Error, Result};

/// Row-major strides for `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc = acc.saturating_mul(d);
    }
    strides
}

/// The product of `shape`, or an error if it overflows.
pub(crate) fn checked_elem_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::InvalidArgument {
            op,
            msg: format!("shape {shape:?} has too many elements"),
        })
}

/// Shape, strides (in elements) and the storage offset of the first element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

impl Layout {
    pub(crate) fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub(crate) fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (size-1 dims may have any stride).
    pub(crate) fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Calls `f(storage_start, len, stride)` for each innermost row, in row-major order.
    pub(crate) fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize)) {
        let rank = self.shape.len();
        if self.shape.contains(&0) {
            return;
        }
        if rank == 0 {
            f(self.offset, 1, 1);
            return;
        }
        if self.is_contiguous() {
            f(self.offset, self.elem_count(), 1);
            return;
        }
        let inner = self.shape[rank - 1];
        let istride = self.strides[rank - 1];
        let mut idx = vec![0usize; rank - 1];
        let mut base = self.offset;
        loop {
            f(base, inner, istride);
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                base += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                base -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }

    /// Gather the elements of `src` under this layout in row-major order, mapping each with `map`.
    pub(crate) fn gather<T: Copy, U>(&self, src: &[T], out: &mut Vec<U>, map: impl Fn(T) -> U) {
        out.reserve(self.elem_count());
        self.for_each_row(|start, len, stride| {
            if stride == 1 {
                out.extend(src[start..start + len].iter().map(|&v| map(v)));
            } else {
                out.extend((0..len).map(|j| map(src[start + j * stride])));
            }
        });
    }

    pub(crate) fn check_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        if dim >= self.shape.len() {
            return Err(Error::DimOutOfRange {
                op,
                dim,
                shape: self.shape.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_contiguity() {
        let l = Layout::contiguous(&[2, 3, 4]);
        assert_eq!(l.strides, vec![12, 4, 1]);
        assert!(l.is_contiguous());
        let t = Layout {
            shape: vec![2, 4, 3],
            strides: vec![12, 1, 4],
            offset: 0,
        };
        assert!(!t.is_contiguous());
        let mut out = Vec::new();
        let src: Vec<usize> = (0..24).collect();
        t.gather(&src, &mut out, |v| v);
        assert_eq!(&out[..6], &[0, 4, 8, 1, 5, 9]);
    }

    #[test]
    fn size_one_dims_ignore_strides() {
        let l = Layout {
            shape: vec![1, 3],
            strides: vec![99, 1],
            offset: 2,
        };
        assert!(l.is_contiguous());
    }
}
