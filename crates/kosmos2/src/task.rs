//! Typed task prompts: the exact prompt strings of the official demo, the HF model card and the
//! paper's evaluation scripts, built from a [`Task`].
//!
//! | task | prompt text | boxes given to the processor |
//! |------|-------------|------------------------------|
//! | [`Task::Caption`] ([`CaptionStyle::Brief`]) | `<grounding>An image of` | — |
//! | [`Task::Caption`] ([`CaptionStyle::Detailed`]) | `<grounding> Describe this image in detail:` | — |
//! | [`Task::Ground`] (phrase grounding, REC) | `<grounding><phrase> {phrase}</phrase>` | — |
//! | [`Task::Refer`] (a box in, a description out) | `<grounding><phrase> It</phrase> is` | `[[box]]` |
//! | [`Task::Vqa`] (grounded VQA) | `<grounding> Question: {question} Answer:` | — |
//! | [`Task::Raw`] | the text as given | — |
//!
//! The processor strips the prompt and puts the image block in front of it; for [`Task::Refer`] it
//! turns the box into `<object><patch_index_a><patch_index_b></object>` after the phrase, so the
//! model sees `<grounding><phrase> It</phrase><object>…</object> is`. Boxes are normalised to the
//! **original** image (the resize squashes it): a pixel box is divided by the image's `(W, H)`.
//!
//! [`TaskPrompt::without_grounding`] drops the `<grounding>` tag (the model then usually answers
//! without boxes; forgetting the tag is the most common user mistake, transformers#28518).
//!
//! ```
//! use kosmos2::task::{CaptionStyle, RegionBox, Task};
//!
//! let p = Task::Caption(CaptionStyle::Brief).prompt().unwrap();
//! assert_eq!(p.text, "<grounding>An image of");
//! assert!(p.boxes.is_none());
//!
//! let p = Task::Ground { phrase: "a snowman next to a fire".into() }.prompt().unwrap();
//! assert_eq!(p.text, "<grounding><phrase> a snowman next to a fire</phrase>");
//!
//! let bbox = RegionBox::Pixels { bbox: [400.0, 36.0, 1008.0, 636.0], width: 1024, height: 768 };
//! let p = Task::Refer { bbox }.prompt().unwrap();
//! assert_eq!(p.text, "<grounding><phrase> It</phrase> is");
//! assert_eq!(p.normalized_boxes(), vec![[0.390625, 0.046875, 0.984375, 0.828125]]);
//! ```

use kosmos_processor::boxes::{coordinate_to_patch_index, BoxError, BoxSpec, NUM_PATCHES_PER_SIDE};
use kosmos_processor::tokenizer::{GRD_TOKEN, TAG_TOKENS};
use kosmos_processor::{Entity, Grounded, PhraseBoxes};

/// The brief grounded caption prompt (HF model card, demo "Brief").
pub const BRIEF_CAPTION_PROMPT: &str = "<grounding>An image of";
/// The detailed grounded caption prompt (demo "Detailed"); the prompt stays in the cleaned caption.
pub const DETAILED_CAPTION_PROMPT: &str = "<grounding> Describe this image in detail:";
/// The phrase of a referring-expression-generation prompt, whose box is given to the processor.
pub const REFER_PHRASE: &str = " It";
/// The text after the referring phrase: the model continues the description from here.
pub const REFER_CONTINUATION: &str = " is";

/// Brief (one sentence) or detailed (several sentences) caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptionStyle {
    /// `<grounding>An image of`.
    #[default]
    Brief,
    /// `<grounding> Describe this image in detail:`.
    Detailed,
}

/// A region of the image given to [`Task::Refer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegionBox {
    /// `[x1, y1, x2, y2]` in `[0, 1]`, relative to the original image.
    Normalized([f64; 4]),
    /// `[x1, y1, x2, y2]` in pixels of a `width × height` image.
    Pixels {
        /// The box in pixels.
        bbox: [f64; 4],
        /// Image width in pixels.
        width: u32,
        /// Image height in pixels.
        height: u32,
    },
}

impl RegionBox {
    /// The normalised box (`x / W`, `y / H` for a pixel box), validated: finite, `x2 > x1`,
    /// `y2 > y1`, every coordinate in `[0, 1]` (a pixel box inside the image).
    pub fn normalized(&self) -> Result<[f64; 4], TaskError> {
        let b = match *self {
            RegionBox::Normalized(b) => b,
            RegionBox::Pixels {
                bbox,
                width,
                height,
            } => {
                if width == 0 || height == 0 {
                    return Err(TaskError::EmptyImage { width, height });
                }
                let (w, h) = (f64::from(width), f64::from(height));
                [bbox[0] / w, bbox[1] / h, bbox[2] / w, bbox[3] / h]
            }
        };
        coordinate_to_patch_index(b, NUM_PATCHES_PER_SIDE).map_err(|reason| TaskError::Box {
            bbox: *self,
            reason,
        })?;
        Ok(b)
    }
}

/// What the model is asked to do with an image.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// A grounded caption.
    Caption(CaptionStyle),
    /// Phrase grounding / referring expression comprehension: where is `phrase`?
    Ground {
        /// The expression to locate, e.g. `"a snowman next to a fire"`.
        phrase: String,
    },
    /// Referring expression generation: describe the boxed region.
    Refer {
        /// The region.
        bbox: RegionBox,
    },
    /// Grounded visual question answering.
    Vqa {
        /// The question, e.g. `"What is special about this image?"`.
        question: String,
    },
    /// A raw prompt, passed to the processor unchanged.
    Raw(String),
}

/// The processor input a task needs: the prompt text and, for tasks that take a box, the boxes
/// of its phrases (one entry per `<phrase>…</phrase>`, HF's `bboxes` for one text).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPrompt {
    /// The prompt text (the processor adds `<s>` and the image block).
    pub text: String,
    /// The boxes of the prompt's phrases, when the task takes a box.
    pub boxes: Option<PhraseBoxes>,
}

impl TaskPrompt {
    /// The same prompt without the `<grounding>` tag (and the space after it, which the processor
    /// would strip anyway).
    ///
    /// ```
    /// use kosmos2::task::{CaptionStyle, Task};
    /// let p = Task::Caption(CaptionStyle::Detailed).prompt().unwrap().without_grounding();
    /// assert_eq!(p.text, "Describe this image in detail:");
    /// ```
    pub fn without_grounding(mut self) -> Self {
        if let Some(rest) = self.text.strip_prefix(GRD_TOKEN) {
            self.text = rest.trim_start().to_string();
        }
        self
    }

    /// Every normalised box given to the processor, in order.
    pub fn normalized_boxes(&self) -> Vec<[f64; 4]> {
        self.boxes
            .iter()
            .flatten()
            .flatten()
            .filter_map(|b| match b {
                BoxSpec::Normalized(b) => Some(*b),
                BoxSpec::PatchIndices(..) => None,
            })
            .collect()
    }
}

/// A task that cannot be turned into a prompt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// The phrase, question or raw prompt is empty (or only spaces).
    #[error("the {what} is empty")]
    Empty {
        /// `"phrase"`, `"question"` or `"prompt"`.
        what: &'static str,
    },
    /// The phrase or question contains a KOSMOS-2 tag or a line break, which would change the
    /// prompt's structure (a phrase must not cross a line or contain `</phrase>`).
    #[error("the {what} {text:?} must not contain {found:?} (tags and line breaks are reserved)")]
    Reserved {
        /// `"phrase"` or `"question"`.
        what: &'static str,
        /// The offending text.
        text: String,
        /// The tag or character found.
        found: String,
    },
    /// A pixel box of an image without pixels.
    #[error("the image is {width}x{height}: a pixel box needs a non-empty image")]
    EmptyImage {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// The box is not a valid region of the image.
    #[error("{reason}{}", pixel_note(.bbox))]
    Box {
        /// The box as given.
        bbox: RegionBox,
        /// What is wrong with it (about the normalised box).
        reason: BoxError,
    },
}

/// For a pixel box, says which pixel box the normalised one in the message comes from.
fn pixel_note(bbox: &RegionBox) -> String {
    match bbox {
        RegionBox::Normalized(_) => String::new(),
        RegionBox::Pixels {
            bbox,
            width,
            height,
        } => format!(" (pixel box {bbox:?} of a {width}x{height} image, normalised)"),
    }
}

/// Rejects text that holds a tag (`<phrase>`, `<patch_index_…>`, …) or a line break.
fn check_free_text(what: &'static str, text: &str) -> Result<String, TaskError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(TaskError::Empty { what });
    }
    let reserved = |found: &str| TaskError::Reserved {
        what,
        text: text.to_string(),
        found: found.to_string(),
    };
    if let Some(c) = trimmed.chars().find(|&c| c == '\n' || c == '\r') {
        return Err(reserved(&c.to_string()));
    }
    for tag in TAG_TOKENS.iter().copied().chain(["<patch_index_"]) {
        if trimmed.contains(tag) {
            return Err(reserved(tag));
        }
    }
    Ok(trimmed.to_string())
}

impl Task {
    /// A short name: `caption`, `ground`, `refer`, `vqa` or `generate`.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Caption(_) => "caption",
            Task::Ground { .. } => "ground",
            Task::Refer { .. } => "refer",
            Task::Vqa { .. } => "vqa",
            Task::Raw(_) => "generate",
        }
    }

    /// The grounded prompt of the task (see the module docs for every prompt).
    pub fn prompt(&self) -> Result<TaskPrompt, TaskError> {
        let text = |t: String| TaskPrompt {
            text: t,
            boxes: None,
        };
        Ok(match self {
            Task::Caption(CaptionStyle::Brief) => text(BRIEF_CAPTION_PROMPT.to_string()),
            Task::Caption(CaptionStyle::Detailed) => text(DETAILED_CAPTION_PROMPT.to_string()),
            Task::Ground { phrase } => {
                let phrase = check_free_text("phrase", phrase)?;
                text(format!("{GRD_TOKEN}<phrase> {phrase}</phrase>"))
            }
            Task::Refer { bbox } => {
                let b = bbox.normalized()?;
                TaskPrompt {
                    text: format!("{GRD_TOKEN}<phrase>{REFER_PHRASE}</phrase>{REFER_CONTINUATION}"),
                    boxes: Some(vec![vec![BoxSpec::Normalized(b)]]),
                }
            }
            Task::Vqa { question } => {
                let q = check_free_text("question", question)?;
                text(format!("{GRD_TOKEN} Question: {q} Answer:"))
            }
            Task::Raw(prompt) => {
                if prompt.trim().is_empty() {
                    return Err(TaskError::Empty { what: "prompt" });
                }
                text(prompt.clone())
            }
        })
    }
}

/// The entity that answers a [`Task::Ground`] query: the first entity whose phrase equals
/// `phrase` (after trimming, as the paper's REC evaluation scores it), else the first entity
/// that has a box.
///
/// ```
/// use kosmos2::task::grounded_entity;
/// use kosmos_processor::post_process_generation;
/// let g = post_process_generation(
///     "<grounding><phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object>",
///     true,
/// )
/// .unwrap();
/// let e = grounded_entity(&g, "a snowman").unwrap();
/// assert_eq!(e.boxes, vec![[0.390625, 0.046875, 0.984375, 0.828125]]);
/// ```
pub fn grounded_entity<'a>(grounded: &'a Grounded, phrase: &str) -> Option<&'a Entity> {
    let phrase = phrase.trim();
    grounded
        .entities
        .iter()
        .find(|e| e.phrase == phrase && !e.boxes.is_empty())
        .or_else(|| grounded.entities.iter().find(|e| !e.boxes.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt() {
        let p = |t: Task| t.prompt().unwrap().text;
        assert_eq!(
            p(Task::Caption(CaptionStyle::Brief)),
            "<grounding>An image of"
        );
        assert_eq!(
            p(Task::Caption(CaptionStyle::Detailed)),
            "<grounding> Describe this image in detail:"
        );
        assert_eq!(
            p(Task::Ground {
                phrase: "  a snowman ".into()
            }),
            "<grounding><phrase> a snowman</phrase>"
        );
        assert_eq!(
            p(Task::Vqa {
                question: "What is special about this image?".into()
            }),
            "<grounding> Question: What is special about this image? Answer:"
        );
        assert_eq!(
            p(Task::Raw("<grounding> A photo of".into())),
            "<grounding> A photo of"
        );
    }

    #[test]
    fn refer_boxes() {
        let t = Task::Refer {
            bbox: RegionBox::Normalized([0.1, 0.2, 0.3, 0.4]),
        };
        let p = t.prompt().unwrap();
        assert_eq!(p.text, "<grounding><phrase> It</phrase> is");
        assert_eq!(
            p.boxes,
            Some(vec![vec![BoxSpec::Normalized([0.1, 0.2, 0.3, 0.4])]])
        );
        let px = RegionBox::Pixels {
            bbox: [0.0, 0.0, 640.0, 480.0],
            width: 640,
            height: 480,
        };
        assert_eq!(px.normalized().unwrap(), [0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn bad_inputs() {
        let err = |t: Task| t.prompt().unwrap_err();
        assert_eq!(
            err(Task::Ground { phrase: " ".into() }),
            TaskError::Empty { what: "phrase" }
        );
        assert!(matches!(
            err(Task::Ground {
                phrase: "a</phrase>b".into()
            }),
            TaskError::Reserved { found, .. } if found == "</phrase>"
        ));
        assert!(matches!(
            err(Task::Vqa {
                question: "a\nb".into()
            }),
            TaskError::Reserved { found, .. } if found == "\n"
        ));
        assert!(matches!(
            err(Task::Refer {
                bbox: RegionBox::Normalized([0.5, 0.1, 0.4, 0.9])
            }),
            TaskError::Box {
                reason: BoxError::NotIncreasing { .. },
                ..
            }
        ));
        assert!(matches!(
            err(Task::Refer {
                bbox: RegionBox::Pixels {
                    bbox: [0.0, 0.0, 700.0, 10.0],
                    width: 640,
                    height: 480
                }
            }),
            TaskError::Box {
                reason: BoxError::OutOfRange { .. },
                ..
            }
        ));
        assert_eq!(
            err(Task::Refer {
                bbox: RegionBox::Pixels {
                    bbox: [0.0, 0.0, 1.0, 1.0],
                    width: 0,
                    height: 5
                }
            }),
            TaskError::EmptyImage {
                width: 0,
                height: 5
            }
        );
        assert_eq!(
            err(Task::Raw("".into())),
            TaskError::Empty { what: "prompt" }
        );
    }
}
