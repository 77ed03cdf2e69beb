//! Python `str` semantics the HF processor relies on: whitespace, stripping, digits.
//!
//! HF works on Python strings, so "whitespace" means `str.isspace()` and lengths are
//! counted in Unicode code points. These helpers reproduce both.

/// Python's `str.isspace()` for one character (Unicode 14, as in CPython 3.11).
///
/// This is Rust's `char::is_whitespace` plus the four ASCII information separators
/// U+001C..U+001F, which Python treats as whitespace and Rust does not.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `s.lstrip()`.
pub fn py_lstrip(s: &str) -> &str {
    s.trim_start_matches(is_py_space)
}

/// Python's `s.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `len(s)`: the number of Unicode code points.
pub fn py_len(s: &str) -> usize {
    s.chars().count()
}

/// The code points of the decimal digit zeros matched by Python's `\d` (category Nd,
/// Unicode 14). Each starts a run of ten consecutive digits 0..9.
const PY_DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a Python decimal digit (what `int()` reads), or `None` if `c` is not
/// matched by Python's `\d`.
pub fn py_digit_value(c: char) -> Option<u8> {
    let c = c as u32;
    // The table is sorted: find the last zero <= c.
    let i = PY_DIGIT_ZEROS.partition_point(|&z| z <= c);
    let zero = *PY_DIGIT_ZEROS.get(i.checked_sub(1)?)?;
    let v = c - zero;
    (v < 10).then_some(v as u8)
}

/// A regex character class equal to Python's `\d` on `str` patterns (Unicode 14).
///
/// Rust's `\d` follows a newer Unicode version with more digit sets, so the class is
/// spelled out to match CPython exactly.
pub fn py_digit_class() -> String {
    let mut s = String::from("[");
    for z in PY_DIGIT_ZEROS {
        s.push_str(&format!("\\x{{{:X}}}-\\x{{{:X}}}", z, z + 9));
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_matches_python() {
        // The full list printed by CPython 3.11 for `chr(c).isspace()`.
        let py: Vec<u32> = vec![
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000,
            0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028,
            0x2029, 0x202f, 0x205f, 0x3000,
        ];
        let ours: Vec<u32> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_space(c))
            .map(|c| c as u32)
            .collect();
        assert_eq!(ours, py);
    }

    #[test]
    fn strip_and_len() {
        assert_eq!(py_strip("\u{1c} a b\u{3000}"), "a b");
        assert_eq!(py_lstrip("  x "), "x ");
        assert_eq!(py_rstrip("  x "), "  x");
        assert_eq!(py_len("héllo"), 5);
    }

    #[test]
    fn digits() {
        assert_eq!(py_digit_value('7'), Some(7));
        assert_eq!(py_digit_value('\u{663}'), Some(3));
        assert_eq!(py_digit_value('\u{1FBF9}'), Some(9));
        assert_eq!(py_digit_value('a'), None);
        assert_eq!(py_digit_value('\u{2F}'), None);
        assert_eq!(py_digit_value('\u{3A}'), None);
        let re = regex::Regex::new(&format!("^{}+$", py_digit_class())).unwrap();
        assert!(re.is_match("0123\u{660}\u{FF19}"));
        assert!(!re.is_match("12a"));
    }
}
