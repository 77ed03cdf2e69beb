//! Argmax and top-k over logits.

use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::tensor::{check_cpu, Tensor};

/// Total order used for ranking: -0.0 == +0.0, NaN above +inf.
#[inline]
fn key(v: f32) -> f32 {
    v + 0.0
}

/// Index of the largest value in each row of `[.., V]`; the first index wins ties.
pub fn argmax_last_dim(x: &Tensor) -> Result<Vec<u32>> {
    check_cpu("argmax_last_dim", x.device())?;
    let (_, d) = super::rows_cols("argmax_last_dim", x)?;
    let xv = x.f32_cow("argmax_last_dim")?;
    Ok(xv
        .chunks(d)
        .map(|row| {
            let mut best = 0usize;
            for (i, &v) in row.iter().enumerate().skip(1) {
                if key(v).total_cmp(&key(row[best])) == Ordering::Greater {
                    best = i;
                }
            }
            best as u32
        })
        .collect())
}

/// Index of the largest value of `row` (first wins ties, -0.0 == +0.0, NaN above +inf, as
/// [`argmax_last_dim`]); `None` for an empty row. Allocates nothing.
///
/// ```
/// assert_eq!(kosmos_tensor::ops::argmax_slice(&[1.0, 3.0, 3.0, -2.0]), Some(1));
/// ```
pub fn argmax_slice(row: &[f32]) -> Option<u32> {
    let first = *row.first()?;
    let mut best = (0usize, key(first));
    for (i, &v) in row.iter().enumerate().skip(1) {
        if key(v).total_cmp(&best.1) == Ordering::Greater {
            best = (i, key(v));
        }
    }
    Some(best.0 as u32)
}

/// The `k` largest `(index, value)` pairs of each row, largest first (ties: lower index first).
pub fn top_k_last_dim(x: &Tensor, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    check_cpu("top_k_last_dim", x.device())?;
    let (_, d) = super::rows_cols("top_k_last_dim", x)?;
    if k == 0 || k > d {
        return Err(Error::InvalidArgument {
            op: "top_k_last_dim",
            msg: format!("k = {k} must be in 1..={d}"),
        });
    }
    let xv = x.f32_cow("top_k_last_dim")?;
    let cmp = |a: &(u32, f32), b: &(u32, f32)| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0));
    Ok(xv
        .chunks(d)
        .map(|row| {
            let mut all: Vec<(u32, f32)> = row
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u32, v))
                .collect();
            if k < d {
                all.select_nth_unstable_by(k - 1, cmp);
                all.truncate(k);
            }
            all.sort_by(cmp);
            all
        })
        .collect())
}
