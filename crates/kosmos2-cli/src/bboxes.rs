//! Box syntax on the command line: `--bboxes JSON` (HF's `bboxes` nesting for one text) and
//! `--box x1,y1,x2,y2`.

use kosmos_processor::{BoxSpec, PhraseBoxes};
use serde_json::Value;

/// A box argument that cannot be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoxSyntaxError {
    /// `--bboxes` is not valid JSON.
    #[error("--bboxes is not valid JSON: {0}")]
    Json(String),
    /// `--bboxes` is not a list.
    #[error("--bboxes must be a JSON list with one entry per <phrase>...</phrase>, got {0}")]
    NotAList(String),
    /// An entry is neither `null`, a box nor a list of boxes.
    #[error("--bboxes entry {index} ({entry}) must be null, a box, or a list of boxes")]
    BadEntry {
        /// Index of the entry (the phrase).
        index: usize,
        /// The entry as JSON.
        entry: String,
    },
    /// A box is neither 4 floats nor 2 integers.
    #[error(
        "box {0} must be 4 floats [x1, y1, x2, y2] (write 0.0, not 0) or 2 integer patch indices [ul, lr]"
    )]
    BadBox(String),
    /// `--box` is not four comma-separated numbers.
    #[error("--box {0:?} must be four comma-separated numbers x1,y1,x2,y2 (e.g. 0.1,0.2,0.5,0.9)")]
    BadBoxArg(String),
}

/// One box: 4 JSON floats (normalised corners) or 2 JSON integers (patch indices), as HF's
/// tuple of 4 floats or tuple of 2 ints.
fn parse_box(b: &Value) -> Result<BoxSpec, BoxSyntaxError> {
    let bad = || BoxSyntaxError::BadBox(b.to_string());
    let arr = b.as_array().ok_or_else(bad)?;
    match arr.len() {
        2 => {
            let idx = |v: &Value| v.as_u64().and_then(|x| u32::try_from(x).ok());
            match (idx(&arr[0]), idx(&arr[1])) {
                (Some(a), Some(c)) if arr.iter().all(|v| !v.is_f64()) => {
                    Ok(BoxSpec::PatchIndices(a, c))
                }
                _ => Err(bad()),
            }
        }
        4 => {
            if !arr.iter().all(Value::is_f64) {
                return Err(bad());
            }
            let f: Vec<f64> = arr.iter().filter_map(Value::as_f64).collect();
            Ok(BoxSpec::Normalized([f[0], f[1], f[2], f[3]]))
        }
        _ => Err(bad()),
    }
}

/// Parses `--bboxes`: a list with one entry per phrase, each `null` (no box), one box, or a list
/// of boxes (`[]` = no box). A box is `[x1, y1, x2, y2]` floats or `[ul, lr]` integers.
///
/// ```
/// use kosmos2_cli::bboxes::parse_bboxes_json;
/// use kosmos_processor::BoxSpec;
/// let b = parse_bboxes_json("[null, [0.1, 0.2, 0.3, 0.4], [[1, 2], [0.0, 0.0, 1.0, 1.0]]]").unwrap();
/// assert_eq!(b[0], vec![]);
/// assert_eq!(b[1], vec![BoxSpec::Normalized([0.1, 0.2, 0.3, 0.4])]);
/// assert_eq!(b[2][0], BoxSpec::PatchIndices(1, 2));
/// ```
pub fn parse_bboxes_json(json: &str) -> Result<PhraseBoxes, BoxSyntaxError> {
    let v: Value = serde_json::from_str(json).map_err(|e| BoxSyntaxError::Json(e.to_string()))?;
    parse_bboxes(&v)
}

/// [`parse_bboxes_json`] on an already parsed value.
pub fn parse_bboxes(v: &Value) -> Result<PhraseBoxes, BoxSyntaxError> {
    let entries = v
        .as_array()
        .ok_or_else(|| BoxSyntaxError::NotAList(v.to_string()))?;
    let mut out = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let bad_entry = || BoxSyntaxError::BadEntry {
            index,
            entry: e.to_string(),
        };
        match e {
            Value::Null => out.push(Vec::new()),
            Value::Array(arr) if arr.first().is_some_and(Value::is_number) => {
                out.push(vec![parse_box(e)?]);
            }
            Value::Array(arr) => {
                if arr.iter().any(|b| !b.is_array()) {
                    return Err(bad_entry());
                }
                out.push(arr.iter().map(parse_box).collect::<Result<Vec<_>, _>>()?);
            }
            _ => return Err(bad_entry()),
        }
    }
    Ok(out)
}

/// Parses `--box x1,y1,x2,y2` (spaces allowed around the numbers).
///
/// ```
/// use kosmos2_cli::bboxes::parse_box_arg;
/// assert_eq!(parse_box_arg("0.1, 0.2,0.5,0.9").unwrap(), [0.1, 0.2, 0.5, 0.9]);
/// assert!(parse_box_arg("1,2,3").is_err());
/// ```
pub fn parse_box_arg(s: &str) -> Result<[f64; 4], BoxSyntaxError> {
    let bad = || BoxSyntaxError::BadBoxArg(s.to_string());
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 4 {
        return Err(bad());
    }
    let mut out = [0.0; 4];
    for (o, p) in out.iter_mut().zip(&parts) {
        let v: f64 = p.parse().map_err(|_| bad())?;
        if !v.is_finite() {
            return Err(bad());
        }
        *o = v;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting() {
        let b = parse_bboxes_json("[[], [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.9, 0.9]], [10, 20]]")
            .unwrap();
        assert_eq!(b.len(), 3);
        assert!(b[0].is_empty());
        assert_eq!(b[1].len(), 2);
        assert_eq!(b[2], vec![BoxSpec::PatchIndices(10, 20)]);
        assert_eq!(parse_bboxes_json("[]").unwrap(), Vec::<Vec<BoxSpec>>::new());
    }

    #[test]
    fn rejects_what_hf_rejects() {
        for bad in [
            "[[0, 0, 1, 1]]",        // 4 ints (HF: ValueError)
            "[[0.0, 0, 1.0, 1.0]]",  // mixed
            "[[0.5, 0.6]]",          // 2 floats
            "[[5]]",                 // arity 1
            "[[0.1, 0.2, 0.3]]",     // arity 3
            "[[[1, 2], null]]",      // None inside a box list
            "[[-1, 2]]",             // negative index
            "[\"0.1,0.2,0.3,0.4\"]", // a string
        ] {
            assert!(parse_bboxes_json(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(
            parse_bboxes_json("{\"a\": 1}"),
            Err(BoxSyntaxError::NotAList(_))
        ));
        assert!(matches!(
            parse_bboxes_json("[0.1"),
            Err(BoxSyntaxError::Json(_))
        ));
    }

    #[test]
    fn box_arg() {
        assert_eq!(
            parse_box_arg("10,20,30,40").unwrap(),
            [10.0, 20.0, 30.0, 40.0]
        );
        assert!(parse_box_arg("a,b,c,d").is_err());
        assert!(parse_box_arg("1,2,3,inf").is_err());
        assert!(parse_box_arg("1,2,3,4,5").is_err());
    }
}
