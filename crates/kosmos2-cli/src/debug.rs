//! `kosmos2 process` and `kosmos2 postprocess`: the processor's exact output as JSON, for other
//! tools and for comparing with HF.

use std::path::Path;

use anyhow::{Context, Result};
use kosmos_processor::postprocess::{
    caption_after_image, clean_text_and_extract_entities_with_bboxes,
};
use kosmos_processor::tokenizer::NUM_PATCH_INDEX_TOKENS;
use kosmos_processor::{
    ImageInput, Kosmos2Processor, ProcessOptions, ProcessorError, ProcessorInput,
};
use serde_json::{json, Map, Value};

use crate::bboxes::parse_bboxes_json;

/// Loads a processor directory with a message that names it.
pub fn load_processor(dir: &Path) -> Result<Kosmos2Processor> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: model directory not found (pass --model DIR, a folder with tokenizer.json and preprocessor_config.json)",
            dir.display()
        );
    }
    Kosmos2Processor::from_dir(dir)
        .with_context(|| format!("cannot load the processor from {}", dir.display()))
}

/// The arguments of `kosmos2 process`.
#[derive(Debug, Clone, Default)]
pub struct ProcessRequest<'a> {
    /// The prompt text.
    pub text: &'a str,
    /// An image file.
    pub image: Option<&'a Path>,
    /// `--bboxes` JSON.
    pub bboxes: Option<&'a str>,
    /// `--add-eos-token`.
    pub add_eos_token: bool,
    /// `--no-special-tokens`.
    pub no_special_tokens: bool,
}

/// HF `processor(text=TEXT, images=IMAGE, bboxes=BBOXES, ...)` for one text, as a JSON object:
/// `input_ids`, `attention_mask`, and with an image `image_embeds_position_mask`,
/// `pixel_values_shape` and `pixel_values` (flat, row-major).
pub fn process_json(processor: &Kosmos2Processor, req: &ProcessRequest<'_>) -> Result<Value> {
    let mut input = ProcessorInput::text(req.text);
    if let Some(b) = req.bboxes {
        input = input.with_boxes(parse_bboxes_json(b)?);
    }
    if let Some(path) = req.image {
        if !path.is_file() {
            anyhow::bail!("{}: image file not found", path.display());
        }
        input = input.with_image(ImageInput::Path(path.to_path_buf()));
    }
    let opts = ProcessOptions {
        add_special_tokens: !req.no_special_tokens,
        add_eos_token: req.add_eos_token,
        ..ProcessOptions::default()
    };
    let out = processor
        .process_single(&input, &opts)
        .map_err(|e| match (&e, req.image) {
            (ProcessorError::Image { source, .. }, Some(p)) => {
                anyhow::anyhow!("{}: {source}", p.display())
            }
            (ProcessorError::Box { source, .. }, _) => anyhow::anyhow!("--bboxes: {source}"),
            _ => anyhow::anyhow!("{e}"),
        })?;
    let first = |rows: &[Vec<u8>]| -> Vec<u8> { rows.first().cloned().unwrap_or_default() };
    let mut obj = Map::new();
    obj.insert(
        "input_ids".into(),
        json!(out.input_ids.first().cloned().unwrap_or_default()),
    );
    obj.insert("attention_mask".into(), json!(first(&out.attention_mask)));
    if let Some(m) = &out.image_embeds_position_mask {
        obj.insert("image_embeds_position_mask".into(), json!(first(m)));
    }
    if let Some(p) = &out.pixel_values {
        obj.insert("pixel_values_shape".into(), json!(p.shape()));
        let flat: Vec<f32> = p.array().iter().copied().collect();
        obj.insert("pixel_values".into(), json!(flat));
    }
    Ok(Value::Object(obj))
}

/// Patches per side of a processor's grid (√ of its patch-index tokens).
fn grid_side(processor: &Kosmos2Processor) -> usize {
    let n = (0..NUM_PATCH_INDEX_TOKENS)
        .take_while(|&k| processor.tokenizer().patch_index_id(k).is_some())
        .count();
    (n as f64).sqrt().round() as usize
}

/// HF `post_process_generation(text, cleanup_and_extract)` as JSON: `{"caption", "entities"}`
/// (entities as `[phrase, [start, end], [[x1, y1, x2, y2], ...]]`), or `{"text"}` without
/// clean-up.
pub fn postprocess_json(
    text: &str,
    cleanup: bool,
    processor: Option<&Kosmos2Processor>,
) -> Result<Value> {
    let caption = caption_after_image(text);
    if !cleanup {
        return Ok(json!({ "text": caption }));
    }
    let side = processor.map_or(kosmos_processor::boxes::NUM_PATCHES_PER_SIDE, grid_side);
    let g = clean_text_and_extract_entities_with_bboxes(caption, side)?;
    Ok(json!({ "caption": g.caption, "entities": g.entities }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postprocess_shapes() {
        let text = "<image>. the</image><grounding> An image of<phrase> a snowman</phrase>\
                    <object><patch_index_0044><patch_index_0863></object>.";
        let v = postprocess_json(text, true, None).unwrap();
        assert_eq!(
            v,
            json!({"caption": "An image of a snowman.",
                   "entities": [["a snowman", [12, 21], [[0.390625, 0.046875, 0.984375, 0.828125]]]]})
        );
        let v = postprocess_json(text, false, None).unwrap();
        assert_eq!(
            v["text"],
            "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>."
        );
    }
}
