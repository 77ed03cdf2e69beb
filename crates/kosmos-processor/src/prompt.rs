//! Prompt construction (HF `Kosmos2Processor.preprocess_examples`): strip, prepend the image
//! placeholders, insert `<object>` patch tokens after each `<phrase>…</phrase>`.

use std::sync::LazyLock;

use regex::Regex;

use crate::boxes::{box_to_patch_tokens, BoxError, BoxSpec};
use crate::pystr::py_strip;
use crate::tokenizer::{BOI_TOKEN, BOO_TOKEN, DOM_TOKEN, EOI_TOKEN, EOO_TOKEN};

/// HF's non-greedy phrase pattern. `.` excludes `\n` in both Python and Rust.
static PHRASE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<phrase>.+?</phrase>").expect("constant pattern"));

/// The boxes of one text: one entry per `<phrase>…</phrase>` pair, in order. An empty
/// entry means "this phrase has no box" (HF `None` or `[]`).
pub type PhraseBoxes = Vec<Vec<BoxSpec>>;

/// `<image>` followed by `num_image_tokens` placeholder `<image>` tokens and `</image>`,
/// joined by single spaces (HF `img_info_tokens`).
pub fn image_info_text(num_image_tokens: usize) -> String {
    let mut parts = Vec::with_capacity(num_image_tokens + 2);
    parts.push(BOI_TOKEN);
    parts.extend(std::iter::repeat_n(BOI_TOKEN, num_image_tokens));
    parts.push(EOI_TOKEN);
    parts.join(" ")
}

/// HF `_preprocess_single_example`: `text.strip()`, the image block when the example has an
/// image, then the patch-index tokens of `boxes`.
///
/// ```
/// use kosmos_processor::prompt::preprocess_text;
/// use kosmos_processor::boxes::BoxSpec;
/// let t = preprocess_text(
///     " <grounding><phrase> a snowman</phrase> is ",
///     false,
///     Some(&vec![vec![BoxSpec::Normalized([0.390625, 0.046875, 0.984375, 0.828125])]]),
///     64,
/// )
/// .unwrap();
/// assert_eq!(
///     t,
///     "<grounding><phrase> a snowman</phrase><object> <patch_index_0044> <patch_index_0863> </object> is"
/// );
/// ```
pub fn preprocess_text(
    text: &str,
    has_image: bool,
    boxes: Option<&PhraseBoxes>,
    num_image_tokens: usize,
) -> Result<String, BoxError> {
    let text = py_strip(text);
    let text = if has_image {
        format!("{} {}", image_info_text(num_image_tokens), text)
    } else {
        text.to_string()
    };
    match boxes {
        None => Ok(text),
        Some(b) => insert_patch_index_tokens(&text, b),
    }
}

/// HF `_insert_patch_index_tokens`. An empty `boxes` leaves the text unchanged without
/// counting phrases, as HF does.
pub fn insert_patch_index_tokens(text: &str, boxes: &PhraseBoxes) -> Result<String, BoxError> {
    if boxes.is_empty() {
        return Ok(text.to_string());
    }
    let matches: Vec<_> = PHRASE_RE.find_iter(text).collect();
    if matches.len() != boxes.len() {
        return Err(BoxError::CountMismatch {
            phrases: matches.len(),
            boxes: boxes.len(),
        });
    }
    let mut out = String::with_capacity(text.len() + 64 * boxes.len());
    let mut curr = 0;
    for (m, phrase_boxes) in matches.iter().zip(boxes) {
        out.push_str(&text[curr..m.end()]);
        curr = m.end();
        let mut parts = Vec::with_capacity(phrase_boxes.len());
        for spec in phrase_boxes {
            let (a, b) = box_to_patch_tokens(spec)?;
            parts.push(format!("{a} {b}"));
        }
        if parts.is_empty() {
            continue;
        }
        let sep = format!(" {DOM_TOKEN} ");
        out.push_str(&format!("{BOO_TOKEN} {} {EOO_TOKEN}", parts.join(&sep)));
    }
    out.push_str(&text[curr..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_block() {
        let s = image_info_text(2);
        assert_eq!(s, "<image> <image> <image> </image>");
    }

    #[test]
    fn several_boxes_and_skips() {
        let text = "<phrase>a</phrase> and <phrase>b</phrase> and <phrase>c</phrase>.";
        let boxes = vec![
            vec![
                BoxSpec::PatchIndices(1, 40),
                BoxSpec::PatchIndices(500, 500),
            ],
            vec![],
            vec![BoxSpec::PatchIndices(0, 1023)],
        ];
        let out = insert_patch_index_tokens(text, &boxes).unwrap();
        assert_eq!(
            out,
            "<phrase>a</phrase><object> <patch_index_0001> <patch_index_0040> \
             </delimiter_of_multi_objects/> <patch_index_0500> <patch_index_0500> </object> and \
             <phrase>b</phrase> and <phrase>c</phrase><object> <patch_index_0000> \
             <patch_index_1023> </object>."
        );
    }

    #[test]
    fn count_mismatch_and_empty() {
        let err = insert_patch_index_tokens("<phrase>a</phrase>", &vec![vec![], vec![]]);
        assert_eq!(
            err,
            Err(BoxError::CountMismatch {
                phrases: 1,
                boxes: 2
            })
        );
        assert_eq!(
            insert_patch_index_tokens("no phrase", &vec![]).unwrap(),
            "no phrase"
        );
        // `.+?` needs one character and does not cross a newline.
        let err =
            insert_patch_index_tokens("<phrase></phrase> <phrase>a\nb</phrase>", &vec![vec![]]);
        assert_eq!(
            err,
            Err(BoxError::CountMismatch {
                phrases: 0,
                boxes: 1
            })
        );
    }
}
