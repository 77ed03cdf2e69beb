//! `Kosmos2Processor`: loading, and `process` with HF `Kosmos2Processor.__call__` semantics.

use std::path::Path;

use ndarray::Array2;

use crate::config::{PaddingSide, PreprocessorConfig, TokenizerConfig};
use crate::error::ProcessorError;
use crate::image::{DecodeLimits, ImageInput};
use crate::preprocess::{ImageProcessor, PixelValues};
use crate::prompt::{preprocess_text, PhraseBoxes};
use crate::tokenizer::KosmosTokenizer;

/// One batch item: a text, optionally an image and the boxes of its phrases.
#[derive(Debug, Clone, Default)]
pub struct ProcessorInput {
    /// The prompt, e.g. `"<grounding>An image of"`.
    pub text: String,
    /// The image, if any. In one batch either every item has an image or none has.
    pub image: Option<ImageInput>,
    /// One entry per `<phrase>…</phrase>` of `text` (see [`PhraseBoxes`]).
    pub boxes: Option<PhraseBoxes>,
}

impl ProcessorInput {
    /// A text-only item.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            image: None,
            boxes: None,
        }
    }

    /// Adds an image.
    pub fn with_image(mut self, image: impl Into<ImageInput>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Adds the boxes of the phrases.
    pub fn with_boxes(mut self, boxes: PhraseBoxes) -> Self {
        self.boxes = Some(boxes);
        self
    }
}

/// HF's `padding` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// `padding=False` (default). With images the batch is still padded to its longest row.
    #[default]
    DoNotPad,
    /// `padding=True` / `"longest"`.
    Longest,
    /// `padding="max_length"` (needs `max_length`; without it HF does not pad).
    MaxLength,
}

/// The options of HF's `Kosmos2Processor.__call__`, with HF's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Prepend `<s>` (default `true`).
    pub add_special_tokens: bool,
    /// Also append `</s>` (default `false`; only with `add_special_tokens`).
    pub add_eos_token: bool,
    /// Padding strategy.
    pub padding: Padding,
    /// HF's `padding_side` keyword: the side used by the tokenizer's own padding of a
    /// **text-only** batch; `None` uses the processor's side. With images HF ignores it and
    /// always pads on the processor's side ([`Kosmos2Processor::padding_side`]).
    pub padding_side: Option<PaddingSide>,
    /// `truncation`: `None` is HF's default (on when `max_length` is set without padding).
    pub truncation: Option<bool>,
    /// `max_length` for truncation and `"max_length"` padding.
    pub max_length: Option<usize>,
    /// Round padded lengths up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
    /// Image placeholders between `<image>` and `</image>` (default 64).
    pub num_image_tokens: usize,
    /// Id of the first placeholder; default `unk_id + 1` (4).
    pub first_image_token_id: Option<u32>,
    /// Return the token count of each row (HF `return_length`).
    pub return_length: bool,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            add_special_tokens: true,
            add_eos_token: false,
            padding: Padding::DoNotPad,
            padding_side: None,
            truncation: None,
            max_length: None,
            pad_to_multiple_of: None,
            num_image_tokens: 64,
            first_image_token_id: None,
            return_length: false,
        }
    }
}

/// What `process` returns. Rows are lists as in HF with `return_tensors=None`: they can have
/// different lengths when nothing pads them (text-only batches without padding).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorOutput {
    /// Token ids per row.
    pub input_ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u8>>,
    /// 1 where image embeddings go (only with images).
    pub image_embeds_position_mask: Option<Vec<Vec<u8>>>,
    /// `[B, 3, 224, 224]` (only with images).
    pub pixel_values: Option<PixelValues>,
    /// Token count per row (only with `return_length`).
    pub length: Option<Vec<usize>>,
}

impl ProcessorOutput {
    /// `input_ids` as a `[B, T]` array; fails if the rows have different lengths.
    pub fn input_ids_array(&self) -> Result<Array2<u32>, ProcessorError> {
        to_array(&self.input_ids, "input_ids")
    }

    /// `attention_mask` as a `[B, T]` array.
    pub fn attention_mask_array(&self) -> Result<Array2<u8>, ProcessorError> {
        to_array(&self.attention_mask, "attention_mask")
    }

    /// `image_embeds_position_mask` as a `[B, T]` array, if present.
    pub fn image_embeds_position_mask_array(&self) -> Result<Option<Array2<u8>>, ProcessorError> {
        self.image_embeds_position_mask
            .as_ref()
            .map(|m| to_array(m, "image_embeds_position_mask"))
            .transpose()
    }
}

fn to_array<T: Copy + Default>(rows: &[Vec<T>], name: &str) -> Result<Array2<T>, ProcessorError> {
    let t = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != t) {
        return Err(ProcessorError::InvalidOption(format!(
            "{name} rows have different lengths; pad the batch to stack it"
        )));
    }
    let flat: Vec<T> = rows.iter().flatten().copied().collect();
    Array2::from_shape_vec((rows.len(), t), flat)
        .map_err(|e| ProcessorError::InvalidOption(format!("{name}: {e}")))
}

/// Padding and truncation after HF's `_get_padding_truncation_strategies`, for a tokenizer
/// whose `model_max_length` is "unlimited" (1e30), as KOSMOS-2's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Strategy {
    /// Pad target: `None` = no padding, `Some(None)` = longest, `Some(Some(n))` = n.
    pad: Option<Option<usize>>,
    truncate: Option<usize>,
}

fn resolve(
    padding: Padding,
    truncation: Option<bool>,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<Strategy, ProcessorError> {
    let truncation = match truncation {
        None if max_length.is_some() && padding == Padding::DoNotPad => true,
        t => t.unwrap_or(false),
    };
    let pad = match (padding, max_length) {
        (Padding::DoNotPad, _) => None,
        (Padding::Longest, _) => Some(None),
        (Padding::MaxLength, Some(n)) => Some(Some(n)),
        // model_max_length is above LARGE_INTEGER: HF silently does not pad.
        (Padding::MaxLength, None) => None,
    };
    let truncate = if truncation { max_length } else { None };
    if let (Some(_), Some(n), Some(m)) = (pad, truncate, pad_to_multiple_of) {
        if m == 0 || !n.is_multiple_of(m) {
            return Err(ProcessorError::InvalidOption(format!(
                "Truncation and padding are both activated but truncation length ({n}) is not a multiple of pad_to_multiple_of ({m})."
            )));
        }
    }
    Ok(Strategy { pad, truncate })
}

/// The KOSMOS-2 processor: tokenizer plus image processor, bit-exact with HF's
/// `Kosmos2Processor` (transformers 5.24).
#[derive(Debug, Clone)]
pub struct Kosmos2Processor {
    tokenizer: KosmosTokenizer,
    image_processor: ImageProcessor,
    /// HF's `tokenizer.padding_side` attribute.
    padding_side: PaddingSide,
}

impl Kosmos2Processor {
    /// Loads a processor directory: `tokenizer.json` (or `sentencepiece.bpe.model` when it is
    /// absent), `preprocessor_config.json` and `tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        let dir = dir.as_ref();
        let tok_cfg = TokenizerConfig::from_file(&dir.join("tokenizer_config.json"))?;
        let pre_cfg = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json"))?;
        let json = dir.join("tokenizer.json");
        let spm = dir.join("sentencepiece.bpe.model");
        let tokenizer = if json.exists() || !spm.exists() {
            KosmosTokenizer::from_json_file(&json, tok_cfg)?
        } else {
            crate::spm::tokenizer_from_sentencepiece(&spm, tok_cfg)?
        };
        Ok(Self::new(tokenizer, ImageProcessor::new(pre_cfg)))
    }

    /// Assembles a processor from its parts.
    pub fn new(tokenizer: KosmosTokenizer, image_processor: ImageProcessor) -> Self {
        let padding_side = tokenizer.config().padding_side;
        Self {
            tokenizer,
            image_processor,
            padding_side,
        }
    }

    /// The processor's padding side (HF's `tokenizer.padding_side` attribute, read from
    /// `tokenizer_config.json`, right by default).
    pub fn padding_side(&self) -> PaddingSide {
        self.padding_side
    }

    /// Sets the processor's padding side (HF: `processor.tokenizer.padding_side = ...`).
    pub fn set_padding_side(&mut self, side: PaddingSide) {
        self.padding_side = side;
    }

    /// Sets the image decoding limits (decompression-bomb guard).
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.image_processor = self.image_processor.with_limits(limits);
        self
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &KosmosTokenizer {
        &self.tokenizer
    }

    /// The image processor.
    pub fn image_processor(&self) -> &ImageProcessor {
        &self.image_processor
    }

    /// Preprocesses images alone (HF `processor(images=...)`).
    pub fn preprocess_images(&self, images: &[ImageInput]) -> Result<PixelValues, ProcessorError> {
        self.image_processor.preprocess(images)
    }

    /// The strings given to the tokenizer (HF `preprocess_examples`, before the `"<s>"`
    /// prefix): stripped text, image block, patch-index tokens.
    pub fn preprocess_examples(
        &self,
        inputs: &[ProcessorInput],
        opts: &ProcessOptions,
    ) -> Result<Vec<String>, ProcessorError> {
        let has_images = self.check_images(inputs)?;
        inputs
            .iter()
            .enumerate()
            .map(|(item, input)| {
                preprocess_text(
                    &input.text,
                    has_images,
                    input.boxes.as_ref(),
                    opts.num_image_tokens,
                )
                .map_err(|source| ProcessorError::Box { item, source })
            })
            .collect()
    }

    /// Whether the batch has images; errors when only some items have one.
    fn check_images(&self, inputs: &[ProcessorInput]) -> Result<bool, ProcessorError> {
        if inputs.is_empty() {
            return Err(ProcessorError::EmptyBatch);
        }
        let with_image = inputs.iter().filter(|i| i.image.is_some()).count();
        if with_image != 0 && with_image != inputs.len() {
            return Err(ProcessorError::ImageCountMismatch {
                items: inputs.len(),
                with_image,
            });
        }
        Ok(with_image > 0)
    }

    /// Encodes a batch with HF `Kosmos2Processor.__call__` semantics for a **list** of texts.
    ///
    /// With images, HF always pads the batch to its longest row (on [`Self::padding_side`]).
    pub fn process(
        &self,
        inputs: &[ProcessorInput],
        opts: &ProcessOptions,
    ) -> Result<ProcessorOutput, ProcessorError> {
        self.process_impl(inputs, opts, true)
    }

    /// Encodes one example with HF semantics for a **single string** text. The only
    /// difference from a batch of one: with an image, HF never pads a single string, even
    /// with `padding = "max_length"`.
    pub fn process_single(
        &self,
        input: &ProcessorInput,
        opts: &ProcessOptions,
    ) -> Result<ProcessorOutput, ProcessorError> {
        self.process_impl(std::slice::from_ref(input), opts, false)
    }

    fn process_impl(
        &self,
        inputs: &[ProcessorInput],
        opts: &ProcessOptions,
        batched: bool,
    ) -> Result<ProcessorOutput, ProcessorError> {
        let has_images = self.check_images(inputs)?;
        // preprocess_examples (cheap, validates the boxes) before decoding any image, then
        // the literal "<s>" prefix.
        let bos_text = &self.tokenizer.config().bos_token;
        let texts: Vec<String> = self
            .preprocess_examples(inputs, opts)?
            .into_iter()
            .map(|t| {
                if opts.add_special_tokens && !opts.add_eos_token {
                    format!("{bos_text}{t}")
                } else {
                    t
                }
            })
            .collect();
        let pixel_values = if has_images {
            let images = inputs.iter().filter_map(|i| i.image.as_ref());
            Some(self.image_processor.preprocess_iter(images)?)
        } else {
            None
        };
        let tok_special = opts.add_special_tokens && opts.add_eos_token;
        let side = opts.padding_side.unwrap_or(self.padding_side);
        let trunc_side = self.tokenizer.config().truncation_side;
        let pad_id = self.tokenizer.special_ids().pad;

        // The tokenizer call: with images, padding is forced off.
        let first_padding = if has_images {
            Padding::DoNotPad
        } else {
            opts.padding
        };
        let strat = resolve(
            first_padding,
            opts.truncation,
            opts.max_length,
            opts.pad_to_multiple_of,
        )?;
        let mut ids = Vec::with_capacity(texts.len());
        for (item, t) in texts.iter().enumerate() {
            let row = self
                .tokenizer
                .encode(t, tok_special, strat.truncate.map(|n| (n, trunc_side)))
                .map_err(|e| ProcessorError::Encode { item, message: e.0 })?;
            ids.push(row);
        }
        let mut attention: Vec<Vec<u8>> = ids.iter().map(|r| vec![1u8; r.len()]).collect();
        if let Some(target) = strat.pad {
            let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
            let len = round_up(target.unwrap_or(longest), opts.pad_to_multiple_of);
            for (r, m) in ids.iter_mut().zip(attention.iter_mut()) {
                pad_row(r, len, pad_id, side);
                pad_row(m, len, 0, side);
            }
        }
        let length = opts
            .return_length
            .then(|| ids.iter().map(Vec::len).collect());

        if !has_images {
            return Ok(ProcessorOutput {
                input_ids: ids,
                attention_mask: attention,
                image_embeds_position_mask: None,
                pixel_values,
                length,
            });
        }

        // Placeholder replacement and image_embeds_position_mask.
        let first_id = opts
            .first_image_token_id
            .unwrap_or(self.tokenizer.special_ids().unk + 1);
        let n = opts.num_image_tokens;
        let image_ids: Vec<u32> = (0..n as u32).map(|k| first_id.wrapping_add(k)).collect();
        let start = usize::from(opts.add_special_tokens) + 1;
        let original_lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut masks = Vec::with_capacity(ids.len());
        for row in ids.iter_mut() {
            // text_ids[:start] + image_ids + text_ids[start + n:], with Python slicing.
            let head = row.len().min(start);
            let tail = row.len().min(start + n);
            let mut new_row = Vec::with_capacity(row.len().max(start + n));
            new_row.extend_from_slice(&row[..head]);
            new_row.extend_from_slice(&image_ids);
            new_row.extend_from_slice(&row[tail..]);
            *row = new_row;
            let mut mask = Vec::with_capacity(row.len().max(n + 3));
            if opts.add_special_tokens {
                mask.push(0u8);
            }
            mask.push(0);
            mask.extend(std::iter::repeat_n(1u8, n));
            mask.push(0);
            if row.len() > mask.len() {
                mask.resize(row.len(), 0);
            }
            masks.push(mask);
        }

        if !batched {
            return Ok(ProcessorOutput {
                input_ids: ids,
                attention_mask: attention,
                image_embeds_position_mask: Some(masks),
                pixel_values,
                length,
            });
        }

        // Always pad to the longest text, re-tokenised with the caller's settings, on the
        // processor's side (HF ignores the `padding_side` keyword here).
        let side = self.padding_side;
        let min_len = original_lens.iter().copied().min().unwrap_or(0);
        let max_idx = longest_index(&original_lens);
        let strat2 = resolve(
            opts.padding,
            opts.truncation,
            opts.max_length,
            opts.pad_to_multiple_of,
        )?;
        let longest = self
            .tokenizer
            .encode(
                &texts[max_idx],
                tok_special,
                strat2.truncate.map(|n| (n, trunc_side)),
            )
            .map_err(|e| ProcessorError::Encode {
                item: max_idx,
                message: e.0,
            })?;
        let max_len_padded = match strat2.pad {
            None => longest.len(),
            Some(target) => round_up(target.unwrap_or(longest.len()), opts.pad_to_multiple_of)
                .max(longest.len()),
        };
        if min_len != max_len_padded {
            for ((r, m), a) in ids
                .iter_mut()
                .zip(masks.iter_mut())
                .zip(attention.iter_mut())
            {
                pad_row(r, max_len_padded, pad_id, side);
                pad_row(m, max_len_padded, 0, side);
                pad_row(a, max_len_padded, 0, side);
            }
        }
        Ok(ProcessorOutput {
            input_ids: ids,
            attention_mask: attention,
            image_embeds_position_mask: Some(masks),
            pixel_values,
            length,
        })
    }

    /// HF `batch_decode`: decodes each row (see [`KosmosTokenizer::decode`]).
    pub fn batch_decode(&self, rows: &[Vec<u32>], skip_special_tokens: bool) -> Vec<String> {
        rows.iter()
            .map(|r| self.tokenizer.decode(r, skip_special_tokens, None))
            .collect()
    }

    /// HF `decode` of one row.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        self.tokenizer.decode(ids, skip_special_tokens, None)
    }

    /// HF `post_process_image_text_to_text`: `batch_decode(skip_special_tokens)` and the
    /// caption after the last `</image>` of each row.
    pub fn post_process_image_text_to_text(
        &self,
        rows: &[Vec<u32>],
        skip_special_tokens: bool,
    ) -> Vec<String> {
        self.batch_decode(rows, skip_special_tokens)
            .iter()
            .map(|t| crate::postprocess::caption_after_image(t).to_string())
            .collect()
    }
}

/// The index HF picks as "longest": the last of the maximal lengths after a stable sort.
fn longest_index(lens: &[usize]) -> usize {
    let mut best = 0;
    for (i, &l) in lens.iter().enumerate() {
        if l >= lens[best] {
            best = i;
        }
    }
    best
}

/// `tokenizers`' pad-to-multiple rule (a zero multiple is ignored).
fn round_up(len: usize, multiple: Option<usize>) -> usize {
    match multiple {
        Some(m) if m > 0 && !len.is_multiple_of(m) => len + m - len % m,
        _ => len,
    }
}

/// Pads a row to `len` (never truncates).
fn pad_row<T: Copy>(row: &mut Vec<T>, len: usize, value: T, side: PaddingSide) {
    if row.len() >= len {
        return;
    }
    let extra = len - row.len();
    match side {
        PaddingSide::Right => row.extend(std::iter::repeat_n(value, extra)),
        PaddingSide::Left => {
            row.splice(0..0, std::iter::repeat_n(value, extra));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_rules() {
        // max_length without padding turns truncation on.
        let s = resolve(Padding::DoNotPad, None, Some(5), None).unwrap();
        assert_eq!(
            s,
            Strategy {
                pad: None,
                truncate: Some(5)
            }
        );
        // padding=max_length without truncation does not truncate.
        let s = resolve(Padding::MaxLength, None, Some(5), None).unwrap();
        assert_eq!(
            s,
            Strategy {
                pad: Some(Some(5)),
                truncate: None
            }
        );
        // padding=max_length without max_length does not pad (model_max_length is huge).
        let s = resolve(Padding::MaxLength, None, None, None).unwrap();
        assert_eq!(
            s,
            Strategy {
                pad: None,
                truncate: None
            }
        );
        assert!(resolve(Padding::Longest, Some(true), Some(10), Some(4)).is_err());
        assert!(resolve(Padding::Longest, Some(true), Some(12), Some(4)).is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(longest_index(&[3, 5, 5, 1]), 2);
        assert_eq!(round_up(5, Some(8)), 8);
        assert_eq!(round_up(16, Some(8)), 16);
        assert_eq!(round_up(5, Some(0)), 5);
        let mut r = vec![1, 2];
        pad_row(&mut r, 4, 0, PaddingSide::Left);
        assert_eq!(r, [0, 0, 1, 2]);
        pad_row(&mut r, 2, 9, PaddingSide::Right);
        assert_eq!(r, [0, 0, 1, 2]);
    }
}
