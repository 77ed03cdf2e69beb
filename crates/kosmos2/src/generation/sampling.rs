//! Token selection: argmax (torch semantics), seeded multinomial sampling, log-softmax.
//!
//! torch's RNG cannot be matched, so sampling is reproducible for a seed but not identical to HF's draws;
//! the distribution it samples from is HF's (same processors, softmax of the processed scores).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `torch.argmax` of one row: the first index of the maximum; a NaN counts as the maximum (the first NaN
/// wins); a row of `-inf` gives 0. `None` only for an empty row.
pub fn argmax(scores: &[f32]) -> Option<usize> {
    let mut best = 0usize;
    let mut best_v = *scores.first()?;
    if best_v.is_nan() {
        return Some(0);
    }
    for (i, &v) in scores.iter().enumerate().skip(1) {
        if v.is_nan() {
            return Some(i);
        }
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    Some(best)
}

/// In-place `log_softmax` in f32 (`x - max - ln Σ exp(x - max)`, the sum accumulated in f64).
/// A row without a finite entry is left unchanged.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let log_sum = sum.ln() as f32;
    for x in row.iter_mut() {
        *x = (*x - max) - log_sum;
    }
}

/// Unnormalised softmax weights `exp(s - max)` in f64 (0 for `-inf`); `None` when no entry is finite.
fn weights(scores: &[f32]) -> Option<Vec<f64>> {
    let max = scores
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return None;
    }
    Some(
        scores
            .iter()
            .map(|&s| {
                if s.is_nan() {
                    0.0
                } else {
                    ((s - max) as f64).exp()
                }
            })
            .collect(),
    )
}

/// A seeded sampler: ChaCha8 with a 64-bit seed and a stream id (the batch row), so every row has its own
/// reproducible sequence of draws.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    /// The sampler of `stream` (a batch row) under `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng }
    }

    /// A uniform draw in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One index drawn with probability `softmax(scores)` (HF: `multinomial(softmax(scores), 1)`).
    /// `None` when no score is finite.
    pub fn sample(&mut self, scores: &[f32]) -> Option<usize> {
        let w = weights(scores)?;
        self.draw(&w)
    }

    /// `k` distinct indices drawn without replacement, each with probability proportional to its softmax
    /// weight among those left (HF beam sampling: `multinomial(softmax(scores), k)`). Like torch, once
    /// every positive-probability index is drawn the rest are zero-probability ones (here: the highest
    /// scores first, ties by index). `None` when no score is finite or `k` exceeds the row.
    pub fn sample_without_replacement(&mut self, scores: &[f32], k: usize) -> Option<Vec<usize>> {
        let mut w = weights(scores)?;
        if k > scores.len() {
            return None;
        }
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let Some(i) = self.draw(&w) else { break };
            w[i] = 0.0;
            out.push(i);
        }
        if out.len() < k {
            let mut rest: Vec<usize> = (0..scores.len()).filter(|i| !out.contains(i)).collect();
            rest.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
            out.extend(rest.into_iter().take(k - out.len()));
        }
        Some(out)
    }

    fn draw(&mut self, w: &[f64]) -> Option<usize> {
        let total: f64 = w.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        let target = self.uniform() * total;
        let mut cum = 0.0;
        let mut last = None;
        for (i, &x) in w.iter().enumerate() {
            if x > 0.0 {
                cum += x;
                last = Some(i);
                if target < cum {
                    return Some(i);
                }
            }
        }
        // rounding left `target` at the very top: the last positive entry
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_follows_torch() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), Some(0));
        assert_eq!(argmax(&[1.0, f32::NAN, 5.0, f32::NAN]), Some(1));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn log_softmax_normalises() {
        let mut r = vec![1.0f32, 2.0, f32::NEG_INFINITY, 0.5];
        log_softmax(&mut r);
        let total: f64 = r.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(r[2], f32::NEG_INFINITY);
    }

    #[test]
    fn sampler_is_reproducible_and_streams_differ() {
        let scores = vec![0.0f32; 1000];
        let draw = |seed, stream| {
            let mut s = Sampler::new(seed, stream);
            (0..20)
                .map(|_| s.sample(&scores).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 0), draw(7, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
        assert_ne!(draw(7, 0), draw(8, 0));
    }

    #[test]
    fn banned_tokens_are_never_drawn() {
        let mut s = Sampler::new(1, 0);
        let scores = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        for _ in 0..200 {
            let i = s.sample(&scores).unwrap();
            assert!(i == 1 || i == 3);
        }
        assert_eq!(s.sample(&[f32::NEG_INFINITY; 2]), None);
        let mut three = s
            .sample_without_replacement(&[0.0, 1.0, 2.0, f32::NEG_INFINITY], 3)
            .unwrap();
        three.sort_unstable();
        assert_eq!(three, vec![0, 1, 2]);
        // zero-probability entries come last, best score first (torch also returns them)
        let all = s
            .sample_without_replacement(&[f32::NEG_INFINITY, 0.0, -1e9, f32::NEG_INFINITY], 4)
            .unwrap();
        assert_eq!(all, vec![1, 2, 0, 3]);
        assert_eq!(s.sample_without_replacement(&[0.0, 1.0], 3), None);
        assert_eq!(
            s.sample_without_replacement(&[f32::NEG_INFINITY; 2], 1),
            None
        );
    }
}
