//! Grounding post-processing (HF `post_process_generation` and
//! `clean_text_and_extract_entities_with_bboxes`), with Python's string semantics.
//!
//! Offsets: [`Entity::span`] counts **Unicode code points**, exactly as HF's Python string
//! indices (and can be odd, even negative, on odd inputs, exactly as HF's);
//! [`Entity::byte_span`] is the same range as **UTF-8 byte offsets** into
//! [`Grounded::caption`], for slicing a Rust `&str` (`None` when the code-point span is not
//! a valid range of the caption).

use std::sync::LazyLock;

use regex::Regex;
use serde::ser::SerializeTuple;
use serde::{Deserialize, Serialize, Serializer};

use crate::boxes::{cell_box, NUM_PATCHES_PER_SIDE};
use crate::pystr::{is_py_space, py_digit_class, py_digit_value, py_len, py_lstrip, py_strip};
use crate::tokenizer::{DOM_TOKEN, EOI_TOKEN};

/// `<.*?>`: HF's tag stripper (non-greedy; `.` does not cross `\n`).
static TAG_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<.*?>").expect("constant pattern"));

/// HF's entity pattern, with `\d` spelled as Python's digit class.
static ENTITY_RE: LazyLock<Regex> = LazyLock::new(|| {
    let d = py_digit_class();
    let pair = format!("<patch_index_{d}+><patch_index_{d}+>");
    Regex::new(&format!(
        "(?:(<phrase>([^<]+)</phrase>))?<object>((?:{pair}</delimiter_of_multi_objects/>)*{pair})</object>"
    ))
    .expect("constant pattern")
});

/// `<patch_index_(\d+)>` with Python's digits.
static PATCH_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!("<patch_index_({}+)>", py_digit_class())).expect("constant pattern")
});

/// Where HF itself raises on a generated text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostProcessError {
    /// Python's `int()` refuses strings of more than 4300 digits (`ValueError`).
    #[error("patch index with {digits} digits exceeds Python's 4300-digit int conversion limit")]
    IndexTooLong {
        /// Number of digits.
        digits: usize,
    },
    /// The index is too large to convert to a float (`OverflowError`).
    #[error("patch index {0} is too large to convert to a float")]
    IndexTooLarge(String),
}

/// One grounded phrase.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// The phrase text, stripped (for a box without phrase:
    /// `"<patch_index_{ul}><patch_index_{lr}>"` with unpadded numbers, as HF).
    pub phrase: String,
    /// `(start, end)` in Unicode code points of [`Grounded::caption`], exactly as HF.
    pub span: (i64, i64),
    /// The same range in UTF-8 bytes of the caption, when it is a valid range.
    pub byte_span: Option<(usize, usize)>,
    /// Normalised `[x1, y1, x2, y2]` boxes, equal to HF's floats.
    pub boxes: Vec<[f64; 4]>,
}

/// A caption with its grounded entities. Serialises as HF's
/// `(caption, [(phrase, (start, end), [(x1, y1, x2, y2), ...]), ...])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounded {
    /// The text with all tags removed and outer whitespace stripped.
    pub caption: String,
    /// Entities in order of appearance.
    pub entities: Vec<Entity>,
}

impl Serialize for Entity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.phrase)?;
        t.serialize_element(&self.span)?;
        t.serialize_element(&self.boxes)?;
        t.end()
    }
}

impl Serialize for Grounded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.caption)?;
        t.serialize_element(&self.entities)?;
        t.end()
    }
}

type EntityRepr = (String, (i64, i64), Vec<[f64; 4]>);

impl<'de> Deserialize<'de> for Grounded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (caption, entities): (String, Vec<EntityRepr>) = Deserialize::deserialize(d)?;
        let entities = entities
            .into_iter()
            .map(|(phrase, span, boxes)| Entity {
                byte_span: byte_span(&caption, span),
                phrase,
                span,
                boxes,
            })
            .collect();
        Ok(Grounded { caption, entities })
    }
}

/// The caption HF keeps: the part after the last `</image>` (the whole text without one).
pub fn caption_after_image(text: &str) -> &str {
    text.rsplit(EOI_TOKEN).next().unwrap_or(text)
}

/// HF `Kosmos2Processor.post_process_generation(text, cleanup_and_extract)`.
///
/// With `cleanup_and_extract = false` HF returns just the caption string; here that is a
/// [`Grounded`] whose caption is that string and whose entity list is empty.
///
/// ```
/// use kosmos_processor::post_process_generation;
/// let text = "<image>. the</image><grounding> An image of<phrase> a snowman</phrase>\
///             <object><patch_index_0044><patch_index_0863></object> warming himself by\
///             <phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>.";
/// let g = post_process_generation(text, true).unwrap();
/// assert_eq!(g.caption, "An image of a snowman warming himself by a fire.");
/// assert_eq!(g.entities[0].phrase, "a snowman");
/// assert_eq!(g.entities[0].span, (12, 21));
/// assert_eq!(g.entities[0].boxes, vec![[0.390625, 0.046875, 0.984375, 0.828125]]);
/// let (s, e) = g.entities[1].byte_span.unwrap();
/// assert_eq!(&g.caption[s..e], "a fire");
/// ```
pub fn post_process_generation(
    text: &str,
    cleanup_and_extract: bool,
) -> Result<Grounded, PostProcessError> {
    let caption = caption_after_image(text);
    if cleanup_and_extract {
        clean_text_and_extract_entities_with_bboxes(caption, NUM_PATCHES_PER_SIDE)
    } else {
        Ok(Grounded {
            caption: caption.to_string(),
            entities: Vec::new(),
        })
    }
}

/// A patch index as HF parses it: an arbitrary-precision integer (Python `int`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PyIndex {
    /// Canonical ASCII decimal digits without leading zeros ("0" for zero).
    decimal: String,
}

impl PyIndex {
    /// Python `int()` of a run of `\d` characters.
    fn parse(digits: &str) -> Result<Self, PostProcessError> {
        let n = digits.chars().count();
        if n > 4300 {
            return Err(PostProcessError::IndexTooLong { digits: n });
        }
        let ascii: String = digits
            .chars()
            .map(|c| char::from(b'0' + py_digit_value(c).unwrap_or(0)))
            .collect();
        let trimmed = ascii.trim_start_matches('0');
        Ok(Self {
            decimal: if trimmed.is_empty() {
                "0".into()
            } else {
                trimmed.into()
            },
        })
    }

    /// `(self % n, self // n)`, the quotient as canonical decimal digits.
    fn div_rem(&self, n: u32) -> (String, u32) {
        let mut q = String::with_capacity(self.decimal.len());
        let mut rem: u64 = 0;
        for b in self.decimal.bytes() {
            let cur = rem * 10 + u64::from(b - b'0');
            let digit = cur / u64::from(n);
            rem = cur % u64::from(n);
            if !(q.is_empty() && digit == 0) {
                q.push(char::from(b'0' + digit as u8));
            }
        }
        if q.is_empty() {
            q.push('0');
        }
        (q, rem as u32)
    }
}

/// Python `float(int)`: correctly rounded, `OverflowError` when too large.
fn int_to_f64(decimal: &str) -> Result<f64, PostProcessError> {
    let v: f64 = decimal
        .parse()
        .map_err(|_| PostProcessError::IndexTooLarge(decimal.to_string()))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(PostProcessError::IndexTooLarge(decimal.to_string()))
    }
}

/// HF `patch_index_to_coordinate` on Python integers.
fn pair_to_box(ul: &PyIndex, lr: &PyIndex, n: usize) -> Result<[f64; 4], PostProcessError> {
    let cell = 1.0 / n as f64;
    let (ul_y, ul_x) = ul.div_rem(n as u32);
    let (lr_y, lr_x) = lr.div_rem(n as u32);
    let vals = [
        f64::from(ul_x),
        int_to_f64(&ul_y)?,
        f64::from(lr_x),
        int_to_f64(&lr_y)?,
    ];
    Ok(cell_box(ul == lr, ul_x == lr_x, ul_y == lr_y, vals, cell))
}

/// Byte offset of code point `cp` in `s` (`None` past the end).
fn byte_of_char(s: &str, cp: usize) -> Option<usize> {
    if cp == 0 {
        return Some(0);
    }
    let mut it = s
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(s.len()));
    it.nth(cp)
}

fn byte_span(caption: &str, (start, end): (i64, i64)) -> Option<(usize, usize)> {
    if start < 0 || end < start {
        return None;
    }
    let s = byte_of_char(caption, start as usize)?;
    let e = byte_of_char(caption, end as usize)?;
    Some((s, e))
}

/// `len(re.sub("<.*?>", "", text[:cp]))` for a code-point prefix.
fn stripped_len_of_prefix(text: &str, cp: usize) -> usize {
    let end = byte_of_char(text, cp).unwrap_or(text.len());
    py_len(&TAG_RE.replace_all(&text[..end], ""))
}

/// HF `clean_text_and_extract_entities_with_bboxes`.
pub fn clean_text_and_extract_entities_with_bboxes(
    text: &str,
    num_patches_per_side: usize,
) -> Result<Grounded, PostProcessError> {
    let processed = TAG_RE.replace_all(text, "");

    // extract_entities_with_patch_indices: every int() runs before any coordinate.
    struct Raw {
        name: String,
        span: (usize, usize),
        pairs: Vec<(PyIndex, PyIndex)>,
    }
    let mut raw = Vec::new();
    for caps in ENTITY_RE.captures_iter(text) {
        let (Some(m0), Some(content)) = (caps.get(0), caps.get(3)) else {
            continue;
        };
        let phrase = caps.get(2);
        let cp = |b: usize| py_len(&text[..b]);
        let span = match phrase {
            Some(p) => (cp(p.start()), cp(p.end())),
            None => (cp(m0.start()), cp(m0.start())),
        };
        let mut pairs = Vec::new();
        for part in content.as_str().split(DOM_TOKEN) {
            // x: first index in the part; y: first index searched from its 2nd character.
            let rest = part.char_indices().nth(1).map_or("", |(b, _)| &part[b..]);
            let (Some(x), Some(y)) = (PATCH_RE.captures(part), PATCH_RE.captures(rest)) else {
                continue;
            };
            let (Some(x), Some(y)) = (x.get(1), y.get(1)) else {
                continue;
            };
            pairs.push((PyIndex::parse(x.as_str())?, PyIndex::parse(y.as_str())?));
        }
        match phrase {
            Some(p) => raw.push(Raw {
                name: p.as_str().to_string(),
                span,
                pairs,
            }),
            None => {
                for pair in pairs {
                    raw.push(Raw {
                        name: format!(
                            "<patch_index_{}><patch_index_{}>",
                            pair.0.decimal, pair.1.decimal
                        ),
                        span,
                        pairs: vec![pair],
                    });
                }
            }
        }
    }

    // adjust_entity_positions, patch_index_to_coordinate, then _cleanup_spaces.
    let caption = py_strip(&processed).to_string();
    let leading = (py_len(&processed) - py_len(py_lstrip(&processed))) as i64;
    let mut entities = Vec::with_capacity(raw.len());
    for r in raw {
        let start = stripped_len_of_prefix(text, r.span.0) as i64;
        let end = stripped_len_of_prefix(text, r.span.1) as i64;
        let boxes = r
            .pairs
            .iter()
            .map(|(a, b)| pair_to_box(a, b, num_patches_per_side))
            .collect::<Result<Vec<_>, _>>()?;
        let name_leading = r.name.chars().take_while(|&c| is_py_space(c)).count() as i64;
        let name_trailing = if r.name.chars().all(is_py_space) {
            py_len(&r.name) as i64
        } else {
            r.name.chars().rev().take_while(|&c| is_py_space(c)).count() as i64
        };
        let span = (
            start - leading + name_leading,
            end - leading - name_trailing,
        );
        entities.push(Entity {
            phrase: py_strip(&r.name).to_string(),
            span,
            byte_span: byte_span(&caption, span),
            boxes,
        });
    }
    Ok(Grounded { caption, entities })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNOWMAN: &str = "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> warming himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>.";

    #[test]
    fn reference_example() {
        let g = clean_text_and_extract_entities_with_bboxes(SNOWMAN, 32).unwrap();
        assert_eq!(
            g.caption,
            "An image of a snowman warming himself by a fire."
        );
        assert_eq!(g.entities.len(), 2);
        assert_eq!(g.entities[0].span, (12, 21));
        assert_eq!(g.entities[1].phrase, "a fire");
        assert_eq!(g.entities[1].span, (41, 47));
        assert_eq!(
            g.entities[1].boxes,
            vec![[0.171875, 0.015625, 0.484375, 0.890625]]
        );
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(
            json,
            r#"["An image of a snowman warming himself by a fire.",[["a snowman",[12,21],[[0.390625,0.046875,0.984375,0.828125]]],["a fire",[41,47],[[0.171875,0.015625,0.484375,0.890625]]]]]"#
        );
        let back: Grounded = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn no_phrase_example() {
        let t = "<grounding> It is<object><patch_index_0044><patch_index_0863></object> and<phrase> two dogs</phrase><object><patch_index_0001><patch_index_0040></delimiter_of_multi_objects/><patch_index_0500><patch_index_0500></object>.";
        let g = clean_text_and_extract_entities_with_bboxes(t, 32).unwrap();
        assert_eq!(g.caption, "It is and two dogs.");
        assert_eq!(g.entities[0].phrase, "<patch_index_44><patch_index_863>");
        assert_eq!(g.entities[0].span, (5, 5));
        assert_eq!(g.entities[1].phrase, "two dogs");
        assert_eq!(g.entities[1].span, (10, 18));
        assert_eq!(
            g.entities[1].boxes,
            vec![
                [0.046875, 0.015625, 0.265625, 0.046875],
                [0.625, 0.46875, 0.65625, 0.5]
            ]
        );
    }

    #[test]
    fn big_indices_follow_python_ints() {
        let t = format!(
            "<object><patch_index_{}><patch_index_{}></object>",
            "9".repeat(30),
            "0".repeat(40)
        );
        let g = clean_text_and_extract_entities_with_bboxes(&t, 32).unwrap();
        assert_eq!(
            g.entities[0].phrase,
            format!("<patch_index_{}><patch_index_0>", "9".repeat(30))
        );
        let t = format!(
            "<object><patch_index_{}><patch_index_1></object>",
            "9".repeat(400)
        );
        assert!(matches!(
            clean_text_and_extract_entities_with_bboxes(&t, 32),
            Err(PostProcessError::IndexTooLarge(_))
        ));
        let t = format!(
            "<object><patch_index_{}><patch_index_1></object>",
            "0".repeat(4301)
        );
        assert_eq!(
            clean_text_and_extract_entities_with_bboxes(&t, 32),
            Err(PostProcessError::IndexTooLong { digits: 4301 })
        );
    }

    #[test]
    fn caption_split() {
        assert_eq!(caption_after_image("a</image>b</image>c"), "c");
        assert_eq!(caption_after_image("abc"), "abc");
        let g = post_process_generation("x</image> <phrase>y</phrase>", false).unwrap();
        assert_eq!(g.caption, " <phrase>y</phrase>");
    }
}
