//! The language-modelling loss from labels; mirrors HF `ForCausalLMLoss` (shift by one, `-100` ignored,
//! mean over the counted tokens).

use kosmos_tensor::Tensor;

use crate::error::{Error, Result};

/// The label that does not count (`ignore_index` of HF's cross-entropy).
pub const IGNORE_INDEX: i64 = -100;

/// A causal-LM loss over a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmLoss {
    /// The mean negative log-likelihood over counted tokens (HF's `loss`).
    pub mean: f32,
    /// The summed negative log-likelihood (natural log), for scoring whole captions.
    pub sum: f64,
    /// The number of counted tokens.
    pub count: usize,
}

/// The loss of `logits` (`[batch, seq_len, vocab]`) against `labels` (`[batch, seq_len]`).
///
/// As in HF, the logits at position `t` predict `labels[t + 1]` (the labels are the input ids,
/// not pre-shifted); the last position predicts nothing; `-100` is skipped. Log-softmax runs in
/// f64 on the f32 logits.
///
/// ```
/// use kosmos_tensor::{Device, Tensor};
/// use kosmos_text::lm_loss;
/// // Two positions over a vocabulary of 2; position 0 predicts label 1 with p = e/(1+e).
/// let logits = Tensor::from_vec(vec![0.0, 1.0, 5.0, 5.0], &[1, 2, 2], &Device::Cpu)?;
/// let loss = lm_loss(&logits, &[-100, 1])?;
/// assert_eq!(loss.count, 1);
/// assert!((loss.mean as f64 - (1.0 + 1f64.exp()).ln() + 1.0).abs() < 1e-6);
/// # Ok::<(), kosmos_text::Error>(())
/// ```
pub fn lm_loss(logits: &Tensor, labels: &[i64]) -> Result<LmLoss> {
    let (b, t, v) = match *logits.dims() {
        [b, t, v] if v > 0 => (b, t, v),
        ref other => {
            return Err(Error::InputShape {
                what: "logits",
                expected: "[batch, seq_len, vocab]".into(),
                found: format!("{other:?}"),
            })
        }
    };
    if labels.len() != b * t {
        return Err(Error::InputShape {
            what: "labels",
            expected: format!("[{b}, {t}]"),
            found: format!("{} labels", labels.len()),
        });
    }
    if let Some(&bad) = labels
        .iter()
        .find(|&&l| l != IGNORE_INDEX && (l < 0 || l as u64 >= v as u64))
    {
        return Err(Error::InvalidInput {
            what: "labels",
            msg: format!("label {bad} is neither -100 nor a token id below {v}"),
        });
    }
    let data = logits.to_vec_f32()?;
    let (mut sum, mut count) = (0f64, 0usize);
    for row in 0..b {
        for pos in 0..t.saturating_sub(1) {
            let label = labels[row * t + pos + 1];
            if label == IGNORE_INDEX {
                continue;
            }
            let x = &data[(row * t + pos) * v..(row * t + pos + 1) * v];
            let max = x.iter().fold(f64::NEG_INFINITY, |m, &a| m.max(a as f64));
            let lse = max + x.iter().map(|&a| (a as f64 - max).exp()).sum::<f64>().ln();
            sum += lse - x[label as usize] as f64;
            count += 1;
        }
    }
    if count == 0 {
        return Err(Error::NoLabels);
    }
    Ok(LmLoss {
        mean: (sum / count as f64) as f32,
        sum,
        count,
    })
}

#[cfg(test)]
mod tests {
    use kosmos_tensor::Device;

    use super::*;

    #[test]
    fn shifts_ignores_and_averages() {
        // batch 2, seq 3, vocab 3
        #[rustfmt::skip]
        let logits = vec![
            1.0, 2.0, 3.0,   0.0, 0.0, 0.0,   9.0, 9.0, 9.0,
            0.5, -1.0, 2.0,  3.0, 1.0, 0.0,   7.0, 7.0, 7.0,
        ];
        let logits = Tensor::from_vec(logits, &[2, 3, 3], &Device::Cpu).unwrap();
        let labels = [2_i64, 0, 2, -100, -100, 1];
        let nll = |x: &[f64], y: usize| {
            let lse = x.iter().map(|a| a.exp()).sum::<f64>().ln();
            lse - x[y]
        };
        // Counted: (row0,pos0)->0, (row0,pos1)->2, (row1,pos1)->1. Row 1 pos 0 predicts -100.
        let want = [
            nll(&[1.0, 2.0, 3.0], 0),
            nll(&[0.0, 0.0, 0.0], 2),
            nll(&[3.0, 1.0, 0.0], 1),
        ];
        let got = lm_loss(&logits, &labels).unwrap();
        assert_eq!(got.count, 3);
        assert!((got.sum - want.iter().sum::<f64>()).abs() < 1e-9);
        assert!((got.mean as f64 - want.iter().sum::<f64>() / 3.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_labels() {
        let logits = Tensor::from_vec(vec![0.0; 6], &[1, 2, 3], &Device::Cpu).unwrap();
        assert!(matches!(
            lm_loss(&logits, &[0, 3]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            lm_loss(&logits, &[0, -5]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            lm_loss(&logits, &[0]),
            Err(Error::InputShape { .. })
        ));
        assert!(matches!(lm_loss(&logits, &[0, -100]), Err(Error::NoLabels)));
    }
}
