//! A built-in 8×8 bitmap font for box labels (the public-domain `font8x8` glyphs: ASCII, Latin-1
//! and Greek), drawn at an integer scale. No system font is read at run time.

use font8x8::legacy::{BASIC_LEGACY, GREEK_LEGACY, LATIN_LEGACY};
use image::{Rgb, RgbImage};

/// Glyph cell size in font pixels (each glyph is 8 × 8).
pub const GLYPH: u32 = 8;

/// The 8 rows of a character's glyph; bit `x` of row `y` (least significant bit first) is the
/// pixel at column `x`. Characters the font lacks are drawn as `?`.
pub fn glyph(c: char) -> [u8; 8] {
    let code = c as u32;
    let g = match code {
        0x20..=0x7e => Some(BASIC_LEGACY[code as usize]),
        0xa0..=0xff => Some(LATIN_LEGACY[(code - 0xa0) as usize]),
        0x390..=0x3c9 => Some(GREEK_LEGACY[(code - 0x390) as usize]),
        _ => None,
    };
    match g {
        Some(g) if c == ' ' || g.iter().any(|&r| r != 0) => g,
        _ => BASIC_LEGACY[b'?' as usize],
    }
}

/// Width in image pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Draws `text` with its top-left corner at `(x, y)`, clipped to the image.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let s = i64::from(scale.max(1));
    for (i, c) in text.chars().enumerate() {
        let gx = x + i as i64 * i64::from(GLYPH) * s;
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                let px = gx + col * s;
                let py = y + row as i64 * s;
                for dy in 0..s {
                    for dx in 0..s {
                        let (qx, qy) = (px + dx, py + dy);
                        if (0..w).contains(&qx) && (0..h).contains(&qy) {
                            img.put_pixel(qx as u32, qy as u32, color);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyph_bits_are_lsb_left() {
        // 'A' row 0 of font8x8 is 0x0C: columns 2 and 3.
        assert_eq!(glyph('A')[0], 0x0C);
        let mut img = RgbImage::new(8, 8);
        draw_text(&mut img, 0, 0, "A", 1, Rgb([255, 255, 255]));
        assert_eq!(img.get_pixel(2, 0), &Rgb([255, 255, 255]));
        assert_eq!(img.get_pixel(3, 0), &Rgb([255, 255, 255]));
        assert_eq!(img.get_pixel(0, 0), &Rgb([0, 0, 0]));
    }

    #[test]
    fn fallback_and_scale() {
        assert_eq!(glyph('\u{4e2d}'), glyph('?'));
        assert_eq!(glyph('é'), LATIN_LEGACY[0xe9 - 0xa0]);
        assert_ne!(glyph('é'), glyph('?'));
        assert_eq!(text_width("abc", 2), 48);
        let mut img = RgbImage::new(20, 20);
        // Scale 2: column 2 of 'A' covers x = 4..6 at rows 0..2; clipped drawing never panics.
        draw_text(&mut img, 0, 0, "A", 2, Rgb([9, 9, 9]));
        assert_eq!(img.get_pixel(4, 1), &Rgb([9, 9, 9]));
        assert_eq!(img.get_pixel(3, 1), &Rgb([0, 0, 0]));
        draw_text(&mut img, -5, 15, "WWW", 3, Rgb([1, 1, 1]));
    }
}
