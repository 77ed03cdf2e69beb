//! The JSON output of the task subcommands: one [`Record`] per image (one JSON Lines line).
//!
//! ```json
//! {"image": "photos/snowman.jpg", "task": "caption", "prompt": "<grounding>An image of",
//!  "width": 1024, "height": 768,
//!  "text": "<image>…</image><grounding> An image of<phrase> a snowman</phrase><object>…</object>…",
//!  "caption": "An image of a snowman warming himself by a fire.",
//!  "entities": [["a snowman", [12, 21], [[0.390625, 0.046875, 0.984375, 0.828125]]], …],
//!  "objects": [{"phrase": "a snowman", "span": [12, 21], "color": "#e6194b",
//!               "boxes": [[0.390625, …]], "pixel_boxes": [[400, 36, 1008, 636]]}, …],
//!  "finish_reason": "eos", "timing": {"image_encode_ms": …, "prefill_ms": …, …}}
//! ```
//!
//! - `text`: the whole sequence decoded with special tokens skipped (HF `batch_decode`, so the
//!   image placeholders decode to words before `</image>`, as in HF);
//! - `caption`, `entities`: HF `post_process_generation(text)` (same nesting as HF's tuples);
//! - `objects`: the same entities with their drawing colour and pixel boxes;
//! - `generated_ids`: the full sequence, prompt included (with `--ids`, always for `generate`);
//! - task extras: `bbox` (refer: the normalised input box), `answer` (vqa: the text after
//!   `Answer:`), `grounding` (ground: the object that answers the phrase);
//! - an image that failed gives `{"image", "task", "error"}` instead.

use kosmos_processor::boxes::{to_pixel_box, PixelBox};
use kosmos_processor::{Entity, Grounded};
use serde::Serialize;

use crate::draw::{color_hex, entity_color_indices, palette_color};

/// Where the time of one image went.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timing {
    /// Vision tower + projection (this image's share of its batch).
    pub image_encode_ms: f64,
    /// The prompt's forward pass (this image's share of its batch).
    pub prefill_ms: f64,
    /// All decode steps (this image's share of its batch).
    pub decode_ms: f64,
    /// Tokens generated (end-of-text included).
    pub new_tokens: usize,
    /// Decode throughput of the batch this image was generated in (all rows).
    pub decode_tokens_per_s: f64,
    /// Images generated together with this one (its batch).
    pub batch_size: usize,
    /// Everything for this image: decoding the file, processing, generation, post-processing.
    pub total_ms: f64,
}

/// A grounded phrase with its colour and pixel boxes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// The phrase.
    pub phrase: String,
    /// `[start, end)` in Unicode code points of the caption (HF's offsets).
    pub span: (i64, i64),
    /// The colour of its boxes in annotated images, `#rrggbb`.
    pub color: String,
    /// Normalised `[x1, y1, x2, y2]` boxes.
    pub boxes: Vec<[f64; 4]>,
    /// The same boxes in pixels of the original image.
    pub pixel_boxes: Vec<[u32; 4]>,
}

fn pixel(b: PixelBox) -> [u32; 4] {
    [b.x1, b.y1, b.x2, b.y2]
}

/// The objects of a grounded caption, coloured as [`crate::draw`] colours them.
pub fn objects(entities: &[Entity], width: u32, height: u32) -> Vec<Object> {
    entities
        .iter()
        .zip(entity_color_indices(entities))
        .map(|(e, ci)| Object {
            phrase: e.phrase.clone(),
            span: e.span,
            color: color_hex(palette_color(ci)),
            boxes: e.boxes.clone(),
            pixel_boxes: e
                .boxes
                .iter()
                .map(|b| pixel(to_pixel_box(*b, width, height)))
                .collect(),
        })
        .collect()
}

/// The result of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The image path, as given or found.
    pub image: String,
    /// `caption`, `ground`, `refer`, `vqa` or `generate`.
    pub task: &'static str,
    /// The prompt text given to the processor.
    pub prompt: String,
    /// Refer: the normalised input box.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
    /// Original image width.
    pub width: u32,
    /// Original image height.
    pub height: u32,
    /// The decoded sequence (special tokens skipped).
    pub text: String,
    /// The cleaned caption.
    pub caption: String,
    /// HF's entities: `[phrase, [start, end], [[x1, y1, x2, y2], ...]]`.
    pub entities: Vec<Entity>,
    /// The entities with colours and pixel boxes.
    pub objects: Vec<Object>,
    /// Vqa: the text after `Answer:`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Ground: the object that answers the phrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Object>,
    /// The full sequence, prompt included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_ids: Option<Vec<u32>>,
    /// `eos`, `max_new_tokens` or `stopped`.
    pub finish_reason: &'static str,
    /// Where the time went.
    pub timing: Timing,
    /// The annotated PNG written for this image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotated: Option<String>,
}

/// An image that failed.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    /// The image path.
    pub image: String,
    /// The task.
    pub task: &'static str,
    /// The error, in one line.
    pub error: String,
}

/// The VQA answer: the caption after the last `Answer:`, trimmed.
///
/// ```
/// use kosmos2_cli::record::vqa_answer;
/// assert_eq!(vqa_answer("Question: What is it? Answer: A snowman."), Some("A snowman.".into()));
/// assert_eq!(vqa_answer("no answer here"), None);
/// ```
pub fn vqa_answer(caption: &str) -> Option<String> {
    caption
        .rfind("Answer:")
        .map(|i| caption[i + "Answer:".len()..].trim().to_string())
}

/// The entity of `grounded` answering `phrase`, as an [`Object`] (see
/// [`kosmos2::task::grounded_entity`]).
pub fn grounding_object(
    grounded: &Grounded,
    phrase: &str,
    width: u32,
    height: u32,
) -> Option<Object> {
    let e = kosmos2::task::grounded_entity(grounded, phrase)?;
    let idx = grounded.entities.iter().position(|x| std::ptr::eq(x, e))?;
    objects(&grounded.entities, width, height)
        .into_iter()
        .nth(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kosmos_processor::post_process_generation;

    #[test]
    fn objects_carry_colours_and_pixels() {
        let g = post_process_generation(
            "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044>\
             <patch_index_0863></object> by<phrase> a fire</phrase><object><patch_index_0005>\
             <patch_index_0911></object>",
            true,
        )
        .unwrap();
        let o = objects(&g.entities, 1024, 768);
        assert_eq!(o[0].pixel_boxes, vec![[400, 36, 1008, 636]]);
        assert_eq!(o[0].color, "#e6194b");
        assert_eq!(o[1].color, "#3cb44b");
        let v = serde_json::to_value(&o[1]).unwrap();
        let (s, e) = g.entities[1].span;
        assert_eq!(v["span"], serde_json::json!([s, e]));
        assert_eq!(&g.caption[s as usize..e as usize], "a fire");
        let hit = grounding_object(&g, "a fire", 1024, 768).unwrap();
        assert_eq!(hit.phrase, "a fire");
        assert_eq!(hit.color, "#3cb44b");
    }
}
