//! The vision tower's patch embedding: Conv2d with kernel == stride, no padding, no bias, as a GEMM.

use crate::error::{Error, Result};
use crate::tensor::{check_cpu, Tensor};

/// `x [B, C, H, W]`, `w [O, C, p, p]` -> `[B, (H/p)·(W/p), O]` (patches in row-major order).
pub fn patchify_conv(x: &Tensor, w: &Tensor, patch: usize) -> Result<Tensor> {
    let op = "patchify_conv";
    check_cpu(op, x.device())?;
    if x.rank() != 4 {
        return Err(Error::Rank {
            op,
            expected: 4,
            shape: x.dims().to_vec(),
        });
    }
    super::reject_empty(op, x)?;
    let (b, c, h, wd) = (x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]);
    if patch == 0 || !h.is_multiple_of(patch) || !wd.is_multiple_of(patch) {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("patch {patch} does not tile an image of {h}x{wd}"),
        });
    }
    if w.rank() != 4 || w.dims()[1..] != [c, patch, patch] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.dims().to_vec(),
            rhs: w.dims().to_vec(),
        });
    }
    let o = w.dims()[0];
    let (gh, gw) = (h / patch, wd / patch);
    let kk = c * patch * patch;
    let xv = x.f32_cow(op)?;
    // im2col: row = (b, py, px), col = (c, i, j) matching w.reshape([O, C*p*p]).
    let mut cols = vec![0f32; b * gh * gw * kk];
    for (r, dst) in cols.chunks_mut(kk).enumerate() {
        let (bi, py, px) = (r / (gh * gw), (r / gw) % gh, r % gw);
        for ci in 0..c {
            for i in 0..patch {
                let src = ((bi * c + ci) * h + py * patch + i) * wd + px * patch;
                let d = (ci * patch + i) * patch;
                dst[d..d + patch].copy_from_slice(&xv[src..src + patch]);
            }
        }
    }
    let cols = Tensor::from_vec(cols, &[b * gh * gw, kk], x.device())?;
    let w2 = w.reshape(&[o, kk])?;
    let y = super::linear(&cols, &w2, None)?;
    y.reshape(&[b, gh * gw, o])?.to_dtype(x.dtype())
}
