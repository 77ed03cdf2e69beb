//! Fixture parsing shared by this crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kosmos_processor::{
    BoxSpec, Kosmos2Processor, Padding, PaddingSide, PhraseBoxes, ProcessOptions, ProcessorInput,
};
use serde_json::Value;

#[path = "../../../../tests/common/mod.rs"]
pub mod common;

/// `tests/fixtures/processor`.
pub fn processor_fixtures() -> PathBuf {
    common::fixtures_dir().join("processor")
}

/// Reads a fixture JSON file (fixtures are committed: a missing one is a failure).
pub fn read_json(name: &str) -> Value {
    let path = processor_fixtures().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The real processor, or `None` (skip) without the shared assets.
pub fn real_processor(test: &str) -> Option<Kosmos2Processor> {
    let dir = common::real_model_dir(test)?;
    Some(Kosmos2Processor::from_dir(&dir).unwrap_or_else(|e| panic!("from_dir: {e}")))
}

/// The real processor loaded once per test binary (for property tests).
pub fn cached_processor(test: &str) -> Option<&'static Kosmos2Processor> {
    static P: std::sync::OnceLock<Option<Kosmos2Processor>> = std::sync::OnceLock::new();
    P.get_or_init(|| real_processor(test)).as_ref()
}

/// The assets folder (for images), or `None` (skip).
pub fn assets(test: &str) -> Option<PathBuf> {
    common::assets_dir(test)
}

/// An image path named as in the fixtures.
pub fn image_path(assets: &Path, name: &str) -> PathBuf {
    match name.strip_prefix("generated/") {
        Some(rest) => processor_fixtures().join("generated").join(rest),
        None => assets.join("images").join(name),
    }
}

/// Why a fixture input cannot be written with this crate's types (HF-only shapes such as a
/// 4-int box, a `None` inside a box list, negative indices, more images than texts).
#[derive(Debug)]
pub struct Unrepresentable(pub String);

fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

/// A JSON float; errors.json writes non-finite floats as the strings "NaN", "Infinity",
/// "-Infinity".
fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// A box element (number or non-finite marker), as opposed to a nested box.
fn is_scalar(v: &Value) -> bool {
    v.is_number() || as_float(v).is_some()
}

/// Parses one BOX (a JSON array: 2 ints or 4 floats).
fn parse_box(b: &Value) -> Result<BoxSpec, Unrepresentable> {
    let arr = b
        .as_array()
        .ok_or_else(|| Unrepresentable(format!("box {b} is not an array")))?;
    let all_ints = arr.iter().all(|v| v.is_i64() || v.is_u64());
    let all_floats = arr.iter().all(|v| as_float(v).is_some());
    match arr.len() {
        2 if all_ints => match (u32_of(&arr[0]), u32_of(&arr[1])) {
            (Some(a), Some(c)) => Ok(BoxSpec::PatchIndices(a, c)),
            _ => Err(Unrepresentable(format!("negative patch index {b}"))),
        },
        4 if all_floats => {
            let f: Vec<f64> = arr.iter().filter_map(as_float).collect();
            Ok(BoxSpec::Normalized([f[0], f[1], f[2], f[3]]))
        }
        _ => Err(Unrepresentable(format!(
            "box {b} is neither 2 ints nor 4 floats"
        ))),
    }
}

/// Parses the bboxes of one text (a list of ENTRY).
fn parse_text_boxes(v: &Value) -> Result<Option<PhraseBoxes>, Unrepresentable> {
    if v.is_null() {
        return Ok(None);
    }
    let entries = v
        .as_array()
        .ok_or_else(|| Unrepresentable(format!("bboxes {v} is not a list")))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.is_null() {
            out.push(Vec::new());
            continue;
        }
        let arr = e
            .as_array()
            .ok_or_else(|| Unrepresentable(format!("entry {e} is not a list")))?;
        if arr.first().is_some_and(is_scalar) {
            out.push(vec![parse_box(e)?]);
        } else {
            out.push(arr.iter().map(parse_box).collect::<Result<Vec<_>, _>>()?);
        }
    }
    Ok(Some(out))
}

/// A parsed `prompts.json`-style case.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub single: bool,
    pub inputs: Vec<ProcessorInput>,
    pub opts: ProcessOptions,
    pub padding_side: PaddingSide,
}

/// Converts a fixture case to processor inputs. Images are replaced by a 1×1 decoded image:
/// image content never affects the ids (pixels have their own fixtures).
pub fn parse_case(c: &Value) -> Result<Case, Unrepresentable> {
    let name = c["name"].as_str().unwrap_or_default().to_string();
    let single = c["single"].as_bool().unwrap_or(false);
    let texts: Vec<String> = match &c["text"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Unrepresentable(format!("text item {t} is not a string")))
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(Unrepresentable(format!(
                "text {other} is not a string or list"
            )))
        }
    };
    let images: Option<usize> = match &c["images"] {
        Value::Null => None,
        Value::Array(a) => Some(a.len()),
        other => return Err(Unrepresentable(format!("images {other}"))),
    };
    if let Some(n) = images {
        if n > texts.len() || (n == 0 && !texts.is_empty()) {
            return Err(Unrepresentable(format!(
                "{n} images for {} texts: images are per item here",
                texts.len()
            )));
        }
    }
    let boxes: Vec<Option<PhraseBoxes>> = if single {
        vec![parse_text_boxes(&c["bboxes"])?]
    } else {
        match &c["bboxes"] {
            Value::Null => vec![None; texts.len()],
            Value::Array(per_text) => {
                if per_text.len() != texts.len() {
                    return Err(Unrepresentable("bboxes are per item here".into()));
                }
                per_text
                    .iter()
                    .map(|v| {
                        if v.is_null()
                            || v.as_array()
                                .is_some_and(|a| !a.first().is_some_and(is_scalar))
                        {
                            parse_text_boxes(v)
                        } else {
                            Err(Unrepresentable(format!("batch bboxes entry {v}")))
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(Unrepresentable(format!("bboxes {other}"))),
        }
    };
    let tiny = image::DynamicImage::ImageRgb8(image::RgbImage::new(1, 1));
    let inputs = texts
        .into_iter()
        .zip(boxes)
        .enumerate()
        .map(|(i, (text, boxes))| ProcessorInput {
            text,
            image: images.filter(|&n| i < n).map(|_| tiny.clone().into()),
            boxes,
        })
        .collect();
    let kw = &c["kwargs"];
    let mut opts = ProcessOptions::default();
    if let Some(v) = kw.get("add_special_tokens") {
        opts.add_special_tokens = v.as_bool().unwrap_or(true);
    }
    if let Some(v) = kw.get("add_eos_token") {
        opts.add_eos_token = v.as_bool().unwrap_or(false);
    }
    if let Some(v) = kw.get("padding") {
        opts.padding = match v {
            Value::Bool(true) => Padding::Longest,
            Value::Bool(false) => Padding::DoNotPad,
            Value::String(s) if s == "longest" => Padding::Longest,
            Value::String(s) if s == "max_length" => Padding::MaxLength,
            Value::String(s) if s == "do_not_pad" => Padding::DoNotPad,
            other => return Err(Unrepresentable(format!("padding {other}"))),
        };
    }
    if let Some(v) = kw.get("padding_side") {
        opts.padding_side = Some(parse_side(v)?);
    }
    if let Some(v) = kw.get("max_length") {
        opts.max_length = Some(usize_of(v, "max_length")?);
    }
    if let Some(v) = kw.get("truncation") {
        opts.truncation = v.as_bool();
    }
    if let Some(v) = kw.get("pad_to_multiple_of") {
        opts.pad_to_multiple_of = Some(usize_of(v, "pad_to_multiple_of")?);
    }
    if let Some(v) = kw.get("num_image_tokens") {
        opts.num_image_tokens = usize_of(v, "num_image_tokens")?;
    }
    if let Some(v) = kw.get("first_image_token_id") {
        opts.first_image_token_id =
            Some(u32_of(v).ok_or_else(|| Unrepresentable(format!("first_image_token_id {v}")))?);
    }
    let padding_side = parse_side(&c["tokenizer_padding_side"])?;
    Ok(Case {
        name,
        single,
        inputs,
        opts,
        padding_side,
    })
}

fn usize_of(v: &Value, what: &str) -> Result<usize, Unrepresentable> {
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| Unrepresentable(format!("{what} = {v}")))
}

fn parse_side(v: &Value) -> Result<PaddingSide, Unrepresentable> {
    match v.as_str() {
        Some("left") => Ok(PaddingSide::Left),
        Some("right") | None => Ok(PaddingSide::Right),
        Some(other) => Err(Unrepresentable(format!("padding side {other}"))),
    }
}

/// `[[int]]` from JSON.
pub fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|r| {
                            r.iter()
                                .map(|x| x.as_u64().unwrap_or(u64::MAX) as u32)
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `[[int]]` masks from JSON.
pub fn rows_u8(v: &Value) -> Vec<Vec<u8>> {
    rows_u32(v)
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u8).collect())
        .collect()
}
