//! Owned, flattened model inputs, built from the processor's output: image + text → one forward call.

use kosmos_processor::ProcessorOutput;
use kosmos_tensor::{Device, Tensor};
use kosmos_text::TextInputs;

use crate::conditional::{Kosmos2ForConditionalGeneration, Kosmos2Output, LmOptions};
use crate::error::{Error, Result};
use crate::model::{Kosmos2ForwardOptions, Kosmos2Inputs};

/// A `[batch, seq_len]` batch with its images, owning its data (what `Kosmos2Processor` returns,
/// stacked into the shapes the model takes).
#[derive(Debug, Clone)]
pub struct Kosmos2Batch {
    /// Rows.
    pub batch: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// `[batch, seq_len]` row-major.
    pub input_ids: Vec<u32>,
    /// `[batch, seq_len]` of 0/1.
    pub attention_mask: Vec<u32>,
    /// `[batch, seq_len]` of 0/1, with images.
    pub image_embeds_position_mask: Option<Vec<u32>>,
    /// `[images, 3, S, S]`, with images.
    pub pixel_values: Option<Tensor>,
}

impl Kosmos2Batch {
    /// Stacks the processor's rows (they must all have the same length: pad the batch when the
    /// rows differ, as the processor always does with images).
    pub fn from_processor(out: &ProcessorOutput, device: &Device) -> Result<Self> {
        let batch = out.input_ids.len();
        let seq_len = out.input_ids.first().map_or(0, Vec::len);
        let flat_u32 = |what: &str, rows: &[Vec<u32>]| -> Result<Vec<u32>> {
            if rows.len() != batch || rows.iter().any(|r| r.len() != seq_len) {
                return Err(Error::InvalidInput(format!(
                    "{what}: rows of different lengths (pad the batch) or a row count other than {batch}"
                )));
            }
            Ok(rows.concat())
        };
        let widen = |rows: &[Vec<u8>]| -> Vec<Vec<u32>> {
            rows.iter()
                .map(|r| r.iter().map(|&x| u32::from(x)).collect())
                .collect()
        };
        let input_ids = flat_u32("input_ids", &out.input_ids)?;
        let attention_mask = flat_u32("attention_mask", &widen(&out.attention_mask))?;
        let image_embeds_position_mask = out
            .image_embeds_position_mask
            .as_ref()
            .map(|m| flat_u32("image_embeds_position_mask", &widen(m)))
            .transpose()?;
        let pixel_values = out
            .pixel_values
            .as_ref()
            .map(|p| {
                let a = p.array();
                Tensor::from_vec(a.iter().copied().collect(), &p.shape(), device)
            })
            .transpose()?;
        Ok(Self {
            batch,
            seq_len,
            input_ids,
            attention_mask,
            image_embeds_position_mask,
            pixel_values,
        })
    }

    /// The borrowed inputs of one forward pass.
    pub fn inputs(&self) -> Result<Kosmos2Inputs<'_>> {
        let text = TextInputs::from_ids(&self.input_ids, self.batch, self.seq_len)?
            .with_attention_mask(&self.attention_mask);
        let mut inputs = Kosmos2Inputs::new(text);
        match (&self.pixel_values, &self.image_embeds_position_mask) {
            (Some(p), Some(m)) => inputs = inputs.with_pixel_values(p, m),
            (None, None) => {}
            _ => {
                return Err(Error::InvalidInput(
                    "pixel_values and image_embeds_position_mask come together".into(),
                ))
            }
        }
        Ok(inputs)
    }
}

impl Kosmos2ForConditionalGeneration {
    /// Runs the processor's output in one call: images through the vision tower and projection,
    /// text through the decoder, then logits (and the loss, with labels).
    pub fn forward_processed(
        &self,
        processed: &ProcessorOutput,
        opts: &Kosmos2ForwardOptions<'_>,
        lm: &LmOptions<'_>,
    ) -> Result<Kosmos2Output> {
        let device = self.model.text_model.device().clone();
        let batch = Kosmos2Batch::from_processor(processed, &device)?;
        self.forward(&batch.inputs()?, None, opts, lm)
    }
}
