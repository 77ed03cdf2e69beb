//! What the decoding strategies need from a model: the [`CausalLm`] trait, the left-padded
//! [`PromptBatch`] it is prefilled with, and the [`Logits`] it returns.

use kosmos_text::PositionMode;

use super::error::{GenerationError, Result};

/// A causal LM with a per-row KV cache, as the decoding loops drive it (HF `GenerationMixin`'s view of a
/// model: prefill, one-token steps, `_reorder_cache`).
///
/// The loop calls [`prefill`](CausalLm::prefill) once, then alternates [`step`](CausalLm::step) and,
/// when rows finish (greedy/sampling) or beams are re-ranked (beam search),
/// [`reorder_cache`](CausalLm::reorder_cache). Every call returns the f32 next-token logits of the last
/// position of each current cache row, in row order.
///
/// What an implementation must keep per cache row, and permute in `reorder_cache`:
/// - the KV cache (the left pads included, masked out of attention in every later step, as HF's
///   `attention_mask` does);
/// - its pad count and real-token count, for positions: under [`PositionMode::RealTokens`] the token fed at
///   step `t` gets position `2 + (real tokens before it)`, so a row's outputs do not depend on its
///   batch-mates; under [`PositionMode::HfCompat`] it gets `cache_len + 2` with the pads counted
///   (HF's decode quirk, reference §4.2). At prefill both modes use HF's rule (pads get position 1, real
///   tokens count 2, 3, … over non-pads).
///
/// Images are the implementation's business: for KOSMOS-2, row `b` of the batch uses image `b`'s
/// `image_embeds`, inserted where [`PromptBatch::image_embeds_position_mask`] is true, at prefill only.
pub trait CausalLm {
    /// The implementation's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Length of every logits row.
    fn vocab_size(&self) -> usize;

    /// Forgets any previous state, runs the whole prompt batch, keeps one cache row per prompt row and
    /// returns the logits of each row's last position (`batch.len()` rows).
    fn prefill(
        &mut self,
        batch: &PromptBatch,
        positions: PositionMode,
    ) -> std::result::Result<Logits, Self::Error>;

    /// Appends `tokens[r]` to cache row `r` (one token per current row) and returns the next logits of
    /// every row (`tokens.len()` rows).
    fn step(&mut self, tokens: &[u32]) -> std::result::Result<Logits, Self::Error>;

    /// [`step`](CausalLm::step) writing the logits into `out`, whose buffer is reused (the decoding
    /// loops call this, so a model that overrides it decodes without allocating per token). The
    /// default calls `step` and replaces `out`.
    fn step_into(
        &mut self,
        tokens: &[u32],
        out: &mut Logits,
    ) -> std::result::Result<(), Self::Error> {
        *out = self.step(tokens)?;
        Ok(())
    }

    /// Rebuilds the cache so that new row `i` is old row `rows[i]`. Rows may be dropped (finished
    /// greedy rows), duplicated (expanding a prompt into beams) and permuted (beam re-ranking); the
    /// number of rows becomes `rows.len()` (never 0). Every index is a valid current row.
    fn reorder_cache(&mut self, rows: &[usize]) -> std::result::Result<(), Self::Error>;
}

/// Next-token logits of several rows, stored flat (`rows × vocab`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    data: Vec<f32>,
    vocab: usize,
}

/// No rows yet (vocab 1), ready for [`Logits::overwrite`].
impl Default for Logits {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            vocab: 1,
        }
    }
}

impl Logits {
    /// Wraps `data` (row-major, `data.len()` a multiple of `vocab`, `vocab ≥ 1`).
    pub fn new(data: Vec<f32>, vocab: usize) -> Result<Self> {
        if vocab == 0 || !data.len().is_multiple_of(vocab) {
            return Err(GenerationError::ModelOutput {
                what: "logits length (a multiple of the vocab size)",
                expected: vocab.max(1) * (data.len() / vocab.max(1)),
                got: data.len(),
            });
        }
        Ok(Self { data, vocab })
    }

    /// Replaces the contents with `data` (row-major, `vocab` per row), reusing the buffer: no
    /// allocation when it already held at least as many values.
    pub fn overwrite(&mut self, data: &[f32], vocab: usize) -> Result<()> {
        if vocab == 0 || !data.len().is_multiple_of(vocab) {
            return Err(GenerationError::ModelOutput {
                what: "logits length (a multiple of the vocab size)",
                expected: vocab.max(1) * (data.len() / vocab.max(1)),
                got: data.len(),
            });
        }
        self.data.clear();
        self.data.extend_from_slice(data);
        self.vocab = vocab;
        Ok(())
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.vocab
    }

    /// Row length.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// One row (`None` past the end).
    pub fn row(&self, r: usize) -> Option<&[f32]> {
        self.data.get(r * self.vocab..(r + 1) * self.vocab)
    }

    /// One row, mutable.
    pub fn row_mut(&mut self, r: usize) -> Option<&mut [f32]> {
        self.data.get_mut(r * self.vocab..(r + 1) * self.vocab)
    }

    /// The flat data.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The flat data, owned.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// One unpadded prompt: token ids and, for image prompts, where the image embeddings go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    /// The token ids (starting with `<s>` for KOSMOS-2).
    pub input_ids: Vec<u32>,
    /// `true` at the 64 image placeholder positions; `None` for a text-only prompt.
    pub image_embeds_position_mask: Option<Vec<bool>>,
}

impl Prompt {
    /// A text-only prompt.
    pub fn text(input_ids: Vec<u32>) -> Self {
        Self {
            input_ids,
            image_embeds_position_mask: None,
        }
    }
}

/// A batch of prompts, left-padded to a common length (the layout HF generation needs).
///
/// ```
/// use kosmos2::generation::{Prompt, PromptBatch};
/// let batch = PromptBatch::new(vec![Prompt::text(vec![0, 5, 6]), Prompt::text(vec![0, 7])], 1).unwrap();
/// assert_eq!(batch.input_ids(), &[vec![0, 5, 6], vec![1, 0, 7]]);
/// assert_eq!(batch.pad_len(1), 1);
/// assert_eq!(batch.attention_mask()[1], vec![0, 1, 1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptBatch {
    input_ids: Vec<Vec<u32>>,
    pad_lens: Vec<usize>,
    image_embeds_position_mask: Option<Vec<Vec<bool>>>,
    pad_token_id: u32,
}

impl PromptBatch {
    /// Left-pads `prompts` with `pad_token_id`. If any prompt has an image mask, every row gets one
    /// (all `false` for text-only rows and for pads). Errors on an empty batch, an empty prompt or a mask
    /// whose length differs from its ids.
    pub fn new(prompts: Vec<Prompt>, pad_token_id: u32) -> Result<Self> {
        if prompts.is_empty() {
            return Err(GenerationError::InvalidBatch(
                "the batch has no prompt".into(),
            ));
        }
        for (r, p) in prompts.iter().enumerate() {
            if p.input_ids.is_empty() {
                return Err(GenerationError::InvalidBatch(format!(
                    "prompt {r} has no token"
                )));
            }
            if let Some(m) = &p.image_embeds_position_mask {
                if m.len() != p.input_ids.len() {
                    return Err(GenerationError::InvalidBatch(format!(
                        "prompt {r}: image_embeds_position_mask has {} entries for {} ids",
                        m.len(),
                        p.input_ids.len()
                    )));
                }
            }
        }
        let len = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0);
        let any_image = prompts
            .iter()
            .any(|p| p.image_embeds_position_mask.is_some());
        let mut ids = Vec::with_capacity(prompts.len());
        let mut pads = Vec::with_capacity(prompts.len());
        let mut masks = Vec::with_capacity(prompts.len());
        for p in prompts {
            let pad = len - p.input_ids.len();
            let mut row = vec![pad_token_id; pad];
            row.extend_from_slice(&p.input_ids);
            if any_image {
                let mut m = vec![false; pad];
                match &p.image_embeds_position_mask {
                    Some(pm) => m.extend_from_slice(pm),
                    None => m.extend(std::iter::repeat_n(false, p.input_ids.len())),
                }
                masks.push(m);
            }
            ids.push(row);
            pads.push(pad);
        }
        Ok(Self {
            input_ids: ids,
            pad_lens: pads,
            image_embeds_position_mask: any_image.then_some(masks),
            pad_token_id,
        })
    }

    /// An already padded batch (HF processor output with `padding_side="left"`). The attention mask must
    /// be `0…0 1…1` on every row, with at least one 1.
    pub fn from_padded(
        input_ids: Vec<Vec<u32>>,
        attention_mask: &[Vec<u32>],
        image_embeds_position_mask: Option<Vec<Vec<bool>>>,
        pad_token_id: u32,
    ) -> Result<Self> {
        let bad = |m: String| Err(GenerationError::InvalidBatch(m));
        if input_ids.is_empty() {
            return bad("the batch has no prompt".into());
        }
        let len = input_ids[0].len();
        if attention_mask.len() != input_ids.len() {
            return bad(format!(
                "{} attention-mask rows for {} id rows",
                attention_mask.len(),
                input_ids.len()
            ));
        }
        let mut pads = Vec::with_capacity(input_ids.len());
        for (r, (ids, mask)) in input_ids.iter().zip(attention_mask).enumerate() {
            if ids.len() != len || mask.len() != len {
                return bad(format!(
                    "row {r}: ids/mask lengths {}/{} differ from {len}",
                    ids.len(),
                    mask.len()
                ));
            }
            let pad = mask.iter().take_while(|&&m| m == 0).count();
            if pad == len || mask[pad..].iter().any(|&m| m != 1) {
                return bad(format!(
                    "row {r}: the attention mask is not left padding (0…0 1…1): {mask:?}"
                ));
            }
            pads.push(pad);
        }
        if let Some(masks) = &image_embeds_position_mask {
            if masks.len() != input_ids.len() || masks.iter().any(|m| m.len() != len) {
                return bad("image_embeds_position_mask does not have the ids' shape".into());
            }
        }
        Ok(Self {
            input_ids,
            pad_lens: pads,
            image_embeds_position_mask,
            pad_token_id,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Always false (a batch has at least one row).
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// The padded length shared by every row.
    pub fn prompt_len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// The padded rows.
    pub fn input_ids(&self) -> &[Vec<u32>] {
        &self.input_ids
    }

    /// Left pads of each row.
    pub fn pad_lens(&self) -> &[usize] {
        &self.pad_lens
    }

    /// Left pads of row `r` (0 past the end).
    pub fn pad_len(&self, r: usize) -> usize {
        self.pad_lens.get(r).copied().unwrap_or(0)
    }

    /// Row `r` without its pads.
    pub fn real_ids(&self, r: usize) -> &[u32] {
        self.input_ids
            .get(r)
            .map_or(&[], |row| &row[self.pad_len(r)..])
    }

    /// The pad id used for the left padding.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// HF's `attention_mask`: 0 on pads, 1 on real tokens.
    pub fn attention_mask(&self) -> Vec<Vec<u32>> {
        let len = self.prompt_len();
        self.pad_lens
            .iter()
            .map(|&p| (0..len).map(|i| u32::from(i >= p)).collect())
            .collect()
    }

    /// HF's `image_embeds_position_mask` (false on pads), if the batch has images.
    pub fn image_embeds_position_mask(&self) -> Option<&[Vec<bool>]> {
        self.image_embeds_position_mask.as_deref()
    }

    /// The ids, row-major (`len() × prompt_len()`).
    pub fn flat_input_ids(&self) -> Vec<u32> {
        self.input_ids.concat()
    }

    /// The attention mask, row-major, as 0/1 `u32`.
    pub fn flat_attention_mask(&self) -> Vec<u32> {
        self.attention_mask().concat()
    }

    /// The image mask, row-major, as 0/1 `u32`.
    pub fn flat_image_embeds_position_mask(&self) -> Option<Vec<u32>> {
        self.image_embeds_position_mask
            .as_ref()
            .map(|m| m.iter().flatten().map(|&b| u32::from(b)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_masks() {
        let with_image = Prompt {
            input_ids: vec![0, 9, 4, 4, 8],
            image_embeds_position_mask: Some(vec![false, false, true, true, false]),
        };
        let b = PromptBatch::new(vec![Prompt::text(vec![0, 3]), with_image], 1).unwrap();
        assert_eq!(b.prompt_len(), 5);
        assert_eq!(b.input_ids()[0], vec![1, 1, 1, 0, 3]);
        assert_eq!(b.real_ids(0), &[0, 3]);
        assert_eq!(b.flat_attention_mask()[..5], [0, 0, 0, 1, 1]);
        let m = b.flat_image_embeds_position_mask().unwrap();
        assert_eq!(m, vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);

        let again = PromptBatch::from_padded(
            b.input_ids().to_vec(),
            &b.attention_mask(),
            b.image_embeds_position_mask().map(<[_]>::to_vec),
            1,
        )
        .unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn malformed_batches_are_typed_errors() {
        assert!(PromptBatch::new(vec![], 1).is_err());
        assert!(PromptBatch::new(vec![Prompt::text(vec![])], 1).is_err());
        let bad_mask = Prompt {
            input_ids: vec![0, 1],
            image_embeds_position_mask: Some(vec![true]),
        };
        assert!(PromptBatch::new(vec![bad_mask], 1).is_err());
        // right padding is refused
        let r = PromptBatch::from_padded(vec![vec![0, 5, 1]], &[vec![1, 1, 0]], None, 1);
        assert!(matches!(r, Err(GenerationError::InvalidBatch(_))));
        // all-pad row is refused
        assert!(PromptBatch::from_padded(vec![vec![1, 1]], &[vec![0, 0]], None, 1).is_err());
        assert!(Logits::new(vec![0.0; 5], 2).is_err());
        assert!(Logits::new(vec![0.0; 4], 0).is_err());
    }
}
