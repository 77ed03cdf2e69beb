//! Sinusoidal positions and position ids; mirrors HF `Kosmos2TextSinusoidalPositionalEmbedding`
//! (fairseq / M2M100 style, `[sin | cos]` halves, first real position `padding_idx + 1 = 2`).

use kosmos_tensor::{Device, Tensor};

use crate::error::Result;

/// How position ids are counted when a KV cache already holds tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionMode {
    /// HF's rule: a new token's position counts every cached column, pads included
    /// (`cache_len + 2` in decode). Left-padded rows are then shifted by their pad count
    /// relative to an unpadded run (reference §4.2): bit-for-bit HF, batch-dependent.
    #[default]
    HfCompat,
    /// Count only the real (non-pad) tokens of the row, cached ones included: a row's positions,
    /// and so its outputs, do not depend on how much its batch-mates made it pad.
    /// Identical to [`PositionMode::HfCompat`] without a cache and for unpadded rows.
    RealTokens,
}

/// The sinusoid table of HF, computed on the fly for any position (no length limit).
///
/// Row `p` is `[sin(p·f_0) … sin(p·f_{h-1}) | cos(p·f_0) … cos(p·f_{h-1})]` with
/// `h = dim / 2` and `f_j = exp(-j · ln(10000) / (h - 1))`; row `padding_idx` is all zeros.
/// The arithmetic follows torch's f32 recipe exactly: `f_j = exp(f32(j) · f32(-step))` rounded to
/// f32, the argument `f32(p) · f_j` rounded to f32, then sin/cos evaluated in f64 and rounded.
///
/// ```
/// use kosmos_text::SinusoidalPositions;
/// let pos = SinusoidalPositions::new(2048, 1);
/// let mut row = vec![0f32; 2048];
/// pos.row(2, &mut row);
/// assert_eq!(&row[..2], &[0.9092974, 0.91661066]);
/// pos.row(1, &mut row); // the padding row
/// assert!(row.iter().all(|&v| v == 0.0));
/// ```
#[derive(Debug, Clone)]
pub struct SinusoidalPositions {
    dim: usize,
    padding_idx: u32,
    freqs: Vec<f32>,
}

impl SinusoidalPositions {
    /// HF's offset: the first real position is `padding_idx + 1`, and the table starts with
    /// `max_position_embeddings + OFFSET` rows.
    pub const OFFSET: usize = 2;

    /// The table for width `dim` (at least 4) with `padding_idx` as the zero row.
    pub fn new(dim: usize, padding_idx: u32) -> Self {
        let half = dim / 2;
        let step = 10000f64.ln() / (half.saturating_sub(1).max(1)) as f64;
        let neg_step = (-step) as f32;
        let freqs = (0..half)
            .map(|j| ((j as f32 * neg_step) as f64).exp() as f32)
            .collect();
        Self {
            dim,
            padding_idx,
            freqs,
        }
    }

    /// The width of one row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The zero row's index (the pad id).
    pub fn padding_idx(&self) -> u32 {
        self.padding_idx
    }

    /// Writes row `pos` into `out[..dim]`.
    pub fn row(&self, pos: u32, out: &mut [f32]) {
        let half = self.freqs.len();
        let out = &mut out[..self.dim];
        if pos == self.padding_idx {
            out.fill(0.0);
            return;
        }
        let p = pos as f32;
        let (sin, rest) = out.split_at_mut(half);
        let (cos, tail) = rest.split_at_mut(half);
        for ((s, c), &f) in sin.iter_mut().zip(cos.iter_mut()).zip(&self.freqs) {
            let arg = (p * f) as f64;
            *s = arg.sin() as f32;
            *c = arg.cos() as f32;
        }
        // An odd width gets one zero column, as in HF.
        tail.fill(0.0);
    }

    /// Adds row `positions[i]` to row `i` of `x` (`x` is `[positions.len(), dim]`, row-major).
    pub fn add_to(&self, positions: &[u32], x: &mut [f32]) {
        let mut row = vec![0f32; self.dim];
        for (&p, xr) in positions.iter().zip(x.chunks_exact_mut(self.dim)) {
            self.row(p, &mut row);
            for (a, &b) in xr.iter_mut().zip(&row) {
                *a += b;
            }
        }
    }

    /// The rows for `positions` as a `[positions.len(), dim]` f32 tensor.
    pub fn rows(&self, positions: &[u32], device: &Device) -> Result<Tensor> {
        let mut data = vec![0f32; positions.len() * self.dim];
        for (&p, out) in positions.iter().zip(data.chunks_exact_mut(self.dim)) {
            self.row(p, out);
        }
        Ok(Tensor::from_vec(
            data,
            &[positions.len(), self.dim],
            device,
        )?)
    }
}

/// HF `create_position_ids_from_input_ids` (fairseq `make_positions`), per row.
///
/// `ids` is `[batch, seq_len]` row-major and `past[b]` is the count added to row `b`'s running
/// index: the cache length (HF) or the row's cached real-token count ([`PositionMode::RealTokens`]).
/// Non-pad tokens get `padding_idx + past + (non-pad tokens so far, this one included)`; pads get
/// `padding_idx` (the zero row). Example with `past = 0`: `[1,1,0,5,6,2]` → `[1,1,2,3,4,5]`.
pub fn position_ids_from_input_ids(
    ids: &[u32],
    seq_len: usize,
    padding_idx: u32,
    past: &[usize],
) -> Vec<u32> {
    let mut out = Vec::with_capacity(ids.len());
    for (row, &past) in ids.chunks(seq_len.max(1)).zip(past) {
        let mut count = past as u32;
        for &id in row {
            if id == padding_idx {
                out.push(padding_idx);
            } else {
                count += 1;
                out.push(padding_idx + count);
            }
        }
    }
    out
}

/// HF `create_position_ids_from_inputs_embeds`: `padding_idx + 1 + past[b] + t`, with no pad detection.
pub fn position_ids_from_inputs_embeds(
    seq_len: usize,
    padding_idx: u32,
    past: &[usize],
) -> Vec<u32> {
    let mut out = Vec::with_capacity(past.len() * seq_len);
    for &past in past {
        out.extend((0..seq_len).map(|t| padding_idx + 1 + (past + t) as u32));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)] // the values as the reference prints them
    fn check_values_of_reference_4_2() {
        let pos = SinusoidalPositions::new(2048, 1);
        let mut row = vec![0f32; 2048];
        pos.row(2, &mut row);
        assert_eq!(&row[..4], &[0.9092974, 0.91661066, 0.92356777, 0.930175]);
        assert_eq!(
            &row[1024..1028],
            &[-0.41614684, -0.39978102, -0.38343516, -0.36711645]
        );
    }

    #[test]
    fn halves_are_concatenated_not_interleaved() {
        let pos = SinusoidalPositions::new(8, 1);
        let mut row = vec![0f32; 8];
        pos.row(3, &mut row);
        // Column 0 is sin(3·1), column 4 is cos(3·1): [sin | cos], not [sin, cos, sin, cos, ...].
        assert_eq!(row[0], (3f64).sin() as f32);
        assert_eq!(row[4], (3f64).cos() as f32);
        // Step ln(1e4)/(half-1) = ln(1e4)/3: the last frequency is exactly 1e-4 (up to f32 rounding).
        assert!((pos.freqs[3] - 1e-4).abs() < 1e-10);
    }

    #[test]
    fn padding_row_is_zero_and_row_zero_is_not() {
        let pos = SinusoidalPositions::new(16, 1);
        let mut row = vec![9f32; 16];
        pos.row(1, &mut row);
        assert!(row.iter().all(|&v| v == 0.0));
        pos.row(0, &mut row);
        assert_eq!(&row[..8], &[0.0; 8]);
        assert_eq!(&row[8..], &[1.0; 8]);
    }

    #[test]
    fn argument_is_rounded_in_f32_as_torch_does() {
        // At large p the f32 argument rounding is part of the reference: the f32 recipe and an
        // all-f64 computation differ by far more than an ulp.
        let pos = SinusoidalPositions::new(2048, 1);
        let mut row = vec![0f32; 2048];
        let p = 5000u32;
        pos.row(p, &mut row);
        let f = pos.freqs[1];
        assert_eq!(row[1], ((p as f32 * f) as f64).sin() as f32);
        let f64_exact = (p as f64 * (-(10000f64.ln()) / 1023.0).exp()).sin();
        assert!((row[1] as f64 - f64_exact).abs() > 1e-6);
    }

    #[test]
    fn odd_width_gets_a_zero_column() {
        let pos = SinusoidalPositions::new(9, 1);
        let mut row = vec![7f32; 9];
        pos.row(2, &mut row);
        assert_eq!(row[8], 0.0);
        assert_eq!(row[0], (2f64).sin() as f32);
    }

    #[test]
    fn position_ids_follow_the_pad_rule() {
        assert_eq!(
            position_ids_from_input_ids(&[1, 1, 0, 5, 6, 2], 6, 1, &[0]),
            [1, 1, 2, 3, 4, 5]
        );
        // Two rows: one left-padded, one not; pads in the middle are skipped too.
        let ids = [1, 0, 7, 0, 1, 7];
        assert_eq!(
            position_ids_from_input_ids(&ids, 3, 1, &[0, 0]),
            [1, 2, 3, 2, 1, 3]
        );
        // With a cache: HF decode gives cache_len + 2.
        assert_eq!(position_ids_from_input_ids(&[9, 9], 1, 1, &[5, 7]), [7, 9]);
        // A pad in decode still gets the zero row.
        assert_eq!(position_ids_from_input_ids(&[1], 1, 1, &[5]), [1]);
    }

    #[test]
    fn inputs_embeds_positions_are_sequential() {
        assert_eq!(
            position_ids_from_inputs_embeds(3, 1, &[0, 4]),
            [2, 3, 4, 6, 7, 8]
        );
    }

    #[test]
    fn rows_tensor_matches_row() {
        let pos = SinusoidalPositions::new(6, 1);
        let t = pos.rows(&[2, 1, 40], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 6]);
        let v = t.to_vec_f32().unwrap();
        let mut row = vec![0f32; 6];
        pos.row(40, &mut row);
        assert_eq!(&v[12..], &row[..]);
        assert_eq!(&v[6..12], &[0.0; 6]);
    }
}
