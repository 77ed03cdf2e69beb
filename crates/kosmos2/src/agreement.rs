//! Top-1 agreement of two models over a greedy run: how closely a quantised model (int8) follows
//! the f32 one token by token.

use kosmos_tensor::ops;
use kosmos_text::{LogitsMode, TextInputs};

use crate::batch::Kosmos2Batch;
use crate::conditional::{Kosmos2ForConditionalGeneration, Kosmos2Output, LmOptions};
use crate::error::{Error, Result};
use crate::model::{Kosmos2ForwardOptions, Kosmos2Inputs};

/// What [`greedy_agreement`] measured over `tokens` greedy steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreedyAgreement {
    /// Steps compared.
    pub tokens: usize,
    /// Steps where the candidate's arg-max equals the reference's when both are fed the
    /// reference's greedy tokens (teacher forcing): the top-1 agreement.
    pub teacher_forced: usize,
    /// Leading tokens the two free-running greedy generations share.
    pub free_running_prefix: usize,
    /// The reference's greedy tokens.
    pub reference_ids: Vec<u32>,
    /// The candidate's own greedy tokens.
    pub candidate_ids: Vec<u32>,
}

impl GreedyAgreement {
    /// `teacher_forced / tokens` (1 when no token was compared).
    pub fn rate(&self) -> f64 {
        if self.tokens == 0 {
            1.0
        } else {
            self.teacher_forced as f64 / self.tokens as f64
        }
    }
}

/// A greedy run of one model over one prompt, one token at a time through the KV cache.
struct Run<'m> {
    model: &'m Kosmos2ForConditionalGeneration,
    mask: Vec<u32>,
    out: Kosmos2Output,
}

impl<'m> Run<'m> {
    const LM: LmOptions<'static> = LmOptions {
        logits: LogitsMode::Last,
        labels: None,
    };

    /// Prefill; returns the run and its first arg-max.
    fn start(
        model: &'m Kosmos2ForConditionalGeneration,
        batch: &Kosmos2Batch,
        tokens: usize,
    ) -> Result<(Self, u32)> {
        let mut mask = Vec::with_capacity(batch.seq_len + tokens);
        mask.extend_from_slice(&batch.attention_mask);
        let mut text = TextInputs::from_ids(&batch.input_ids, 1, batch.seq_len)?
            .with_attention_mask(&batch.attention_mask);
        if let Some(pos) = &batch.image_embeds_position_mask {
            text.image_embeds_position_mask = Some(pos);
        }
        let inputs = Kosmos2Inputs {
            text,
            pixel_values: batch.pixel_values.as_ref(),
        };
        let cache = model.model.new_cache(1, batch.seq_len + tokens + 1)?;
        let opts = Kosmos2ForwardOptions::default();
        let out = model.forward(&inputs, Some(cache), &opts, &Self::LM)?;
        let run = Self { model, mask, out };
        let first = run.argmax()?;
        Ok((run, first))
    }

    fn argmax(&self) -> Result<u32> {
        let logits = self.out.logits.as_ref().ok_or_else(|| {
            Error::InvalidInput("greedy_agreement: the model returned no logits".into())
        })?;
        Ok(ops::argmax_last_dim(logits)?[0] as u32)
    }

    /// Feeds `token`; returns the next arg-max.
    fn feed(&mut self, token: u32) -> Result<u32> {
        self.mask.push(1);
        let tok = [token];
        let text = TextInputs::from_ids(&tok, 1, 1)?.with_attention_mask(&self.mask);
        let cache = self.out.past_key_values.take();
        self.out = self.model.forward(
            &Kosmos2Inputs::new(text),
            cache,
            &Kosmos2ForwardOptions::default(),
            &Self::LM,
        )?;
        self.argmax()
    }
}

/// Runs `reference` greedily for `tokens` steps on a one-row `batch` (no stop at end-of-text), and
/// `candidate` twice: fed the reference's tokens (teacher forcing: its top-1 agreement) and on its
/// own (the shared prefix of the two generations).
///
/// ```
/// # fn main() -> Result<(), kosmos2::Error> {
/// use kosmos2::{greedy_agreement, Device, Kosmos2Batch, Kosmos2ForConditionalGeneration, Precision, Tensor};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny");
/// let f32 = Kosmos2ForConditionalGeneration::load(dir, &Device::Cpu, Precision::F32)?;
/// let int8 = Kosmos2ForConditionalGeneration::load(dir, &Device::Cpu, Precision::Int8)?;
/// let n = 4; // image tokens of the tiny model
/// let batch = Kosmos2Batch {
///     batch: 1,
///     seq_len: n + 3,
///     input_ids: [vec![0, 2], vec![3; n], vec![4]].concat(),
///     attention_mask: vec![1; n + 3],
///     image_embeds_position_mask: Some([vec![0, 0], vec![1; n], vec![0]].concat()),
///     pixel_values: Some(Tensor::zeros(&[1, 3, 28, 28], kosmos2::DType::F32, &Device::Cpu)?),
/// };
/// let a = greedy_agreement(&f32, &f32, &batch, 8)?;
/// assert_eq!((a.teacher_forced, a.free_running_prefix), (8, 8)); // a model agrees with itself
/// let a = greedy_agreement(&f32, &int8, &batch, 8)?;
/// println!("int8 top-1 agreement {}/{}", a.teacher_forced, a.tokens);
/// # Ok(())
/// # }
/// ```
pub fn greedy_agreement(
    reference: &Kosmos2ForConditionalGeneration,
    candidate: &Kosmos2ForConditionalGeneration,
    batch: &Kosmos2Batch,
    tokens: usize,
) -> Result<GreedyAgreement> {
    if batch.batch != 1 {
        return Err(Error::InvalidInput(format!(
            "greedy_agreement takes one row, got {}",
            batch.batch
        )));
    }
    let (mut r, mut want) = Run::start(reference, batch, tokens)?;
    let (mut forced, mut got) = Run::start(candidate, batch, tokens)?;
    let (mut free, mut own) = Run::start(candidate, batch, tokens)?;
    let mut a = GreedyAgreement {
        tokens,
        teacher_forced: 0,
        free_running_prefix: 0,
        reference_ids: Vec::with_capacity(tokens),
        candidate_ids: Vec::with_capacity(tokens),
    };
    let mut diverged = false;
    for i in 0..tokens {
        a.teacher_forced += usize::from(got == want);
        diverged |= own != want;
        a.free_running_prefix += usize::from(!diverged);
        a.reference_ids.push(want);
        a.candidate_ids.push(own);
        if i + 1 < tokens {
            got = forced.feed(want)?;
            own = free.feed(own)?;
            want = r.feed(want)?;
        }
    }
    Ok(a)
}
