//! Annotated images: each grounded phrase's boxes in one colour of a fixed palette, with the
//! phrase as a label (what users expect, from the official demo and the HF card):
//!
//! - one rectangle per box, line width scaled to the image (at least 2 px), drawn inside the box;
//! - the same colour for a phrase and all its boxes; colours follow the order in which distinct
//!   phrases first appear, so outputs are reproducible (and the JSON carries the same colour);
//! - the label above the box's top-left corner on a semi-transparent background in the box colour,
//!   moved inside the box when it would leave the top edge, shifted down when it would overlap an
//!   earlier label, and always kept inside the image;
//! - label text in black or white, whichever contrasts with the colour, from a built-in bitmap font
//!   scaled with the image.

use image::{Rgb, RgbImage};
use kosmos_processor::boxes::{to_pixel_box, PixelBox};
use kosmos_processor::Entity;

use crate::font::{draw_text, text_width, GLYPH};

/// The fixed palette (Sasha Trubetskoy's 20 distinct colours, the 12 most legible on photos).
pub const PALETTE: [[u8; 3]; 12] = [
    [230, 25, 75],   // red
    [60, 180, 75],   // green
    [0, 130, 200],   // blue
    [245, 130, 48],  // orange
    [145, 30, 180],  // purple
    [70, 240, 240],  // cyan
    [240, 50, 230],  // magenta
    [255, 225, 25],  // yellow
    [0, 128, 128],   // teal
    [210, 245, 60],  // lime
    [170, 110, 40],  // brown
    [250, 190, 212], // pink
];

/// Opacity of the label background.
pub const LABEL_ALPHA: f32 = 0.75;

/// The palette colour number `i` (cycling).
pub fn palette_color(i: usize) -> Rgb<u8> {
    Rgb(PALETTE[i % PALETTE.len()])
}

/// `#rrggbb`.
pub fn color_hex(c: Rgb<u8>) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// One phrase to draw: its label, colour and pixel boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The label text (the phrase).
    pub label: String,
    /// Box and label colour.
    pub color: Rgb<u8>,
    /// Boxes in pixels of the image.
    pub boxes: Vec<PixelBox>,
}

/// The palette index of each entity: distinct phrases get consecutive colours in order of first
/// appearance; a repeated phrase reuses its colour.
pub fn entity_color_indices(entities: &[Entity]) -> Vec<usize> {
    let mut seen: Vec<&str> = Vec::new();
    entities
        .iter()
        .map(|e| match seen.iter().position(|p| *p == e.phrase) {
            Some(i) => i,
            None => {
                seen.push(&e.phrase);
                seen.len() - 1
            }
        })
        .collect()
}

/// Annotations for grounded entities on a `width × height` image (boxes scaled as the demos do).
pub fn annotations(entities: &[Entity], width: u32, height: u32) -> Vec<Annotation> {
    entities
        .iter()
        .zip(entity_color_indices(entities))
        .filter(|(e, _)| !e.boxes.is_empty())
        .map(|(e, ci)| Annotation {
            label: e.phrase.clone(),
            color: palette_color(ci),
            boxes: e
                .boxes
                .iter()
                .map(|b| to_pixel_box(*b, width, height))
                .collect(),
        })
        .collect()
}

/// Line width and label size for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Box line width in pixels (at least 2).
    pub line_width: u32,
    /// Font scale: each font pixel is `text_scale × text_scale` image pixels.
    pub text_scale: u32,
}

impl Style {
    /// Scaled to the image's shorter side: 2 px lines up to 400 px, then 1 px per 200 px; 8 px
    /// text up to 600 px, then 8 px more per 400 px.
    pub fn for_image(width: u32, height: u32) -> Self {
        let short = width.min(height);
        Self {
            line_width: (short / 200).max(2),
            text_scale: (short.saturating_add(200) / 400).max(1),
        }
    }
}

/// A placed label (for callers and tests): the background rectangle `[x, y, x + w, y + h)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl LabelRect {
    fn overlaps(&self, o: &LabelRect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Sets the pixels of `[x0, x1) × [y0, y1)` (clipped) to `color`.
fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, color: Rgb<u8>) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, color);
        }
    }
}

/// `alpha · color + (1 − alpha) · pixel`, rounded.
pub fn blend(pixel: Rgb<u8>, color: Rgb<u8>, alpha: f32) -> Rgb<u8> {
    let mix = |p: u8, c: u8| (alpha * f32::from(c) + (1.0 - alpha) * f32::from(p)).round() as u8;
    Rgb([
        mix(pixel[0], color[0]),
        mix(pixel[1], color[1]),
        mix(pixel[2], color[2]),
    ])
}

/// Black or white, whichever reads better on `color`.
pub fn text_color(color: Rgb<u8>) -> Rgb<u8> {
    let y = 0.299 * f32::from(color[0]) + 0.587 * f32::from(color[1]) + 0.114 * f32::from(color[2]);
    if y > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// The box's pixel rectangle `[x1, x2) × [y1, y2)`, clipped, at least one pixel wide and high.
fn box_rect(b: &PixelBox, w: u32, h: u32) -> (u32, u32, u32, u32) {
    let x1 = b.x1.min(w - 1);
    let y1 = b.y1.min(h - 1);
    let x2 = b.x2.min(w).max(x1 + 1);
    let y2 = b.y2.min(h).max(y1 + 1);
    (x1, y1, x2, y2)
}

/// Draws the rectangle outline of `b`, `lw` pixels wide, inside the box.
fn draw_box(img: &mut RgbImage, b: &PixelBox, lw: u32, color: Rgb<u8>) {
    let (x1, y1, x2, y2) = box_rect(b, img.width(), img.height());
    fill(img, x1, y1, x2, (y1 + lw).min(y2), color); // top
    fill(img, x1, y2.saturating_sub(lw).max(y1), x2, y2, color); // bottom
    fill(img, x1, y1, (x1 + lw).min(x2), y2, color); // left
    fill(img, x2.saturating_sub(lw).max(x1), y1, x2, y2, color); // right
}

/// Where a label goes: above the box's top-left corner, inside the box when there is no room
/// above, moved down past earlier labels, and clamped into the image.
fn place_label(
    b: &PixelBox,
    (lw_px, lh): (u32, u32),
    line_width: u32,
    (w, h): (u32, u32),
    placed: &[LabelRect],
) -> LabelRect {
    let (x1, y1, _, _) = box_rect(b, w, h);
    let x = x1.min(w.saturating_sub(lw_px));
    let mut y = if y1 >= lh { y1 - lh } else { y1 + line_width };
    let max_y = h.saturating_sub(lh);
    y = y.min(max_y);
    let mut rect = LabelRect {
        x,
        y,
        w: lw_px.min(w),
        h: lh.min(h),
    };
    // As the demo: step down one label height while overlapping, stop at the bottom.
    for _ in 0..=placed.len() {
        if !placed.iter().any(|p| p.overlaps(&rect)) || rect.y >= max_y {
            break;
        }
        rect.y = (rect.y + lh).min(max_y);
    }
    rect
}

/// The label text shortened (with `..`) to fit `max_width` pixels at `scale`.
fn fit_label(label: &str, scale: u32, pad: u32, max_width: u32) -> String {
    let room = max_width.saturating_sub(2 * pad) / (GLYPH * scale);
    let n = label.chars().count() as u32;
    if n <= room {
        return label.to_string();
    }
    let keep = room.saturating_sub(2).max(1) as usize;
    let mut s: String = label.chars().take(keep).collect();
    if room >= 3 {
        s.push_str("..");
    }
    s
}

/// Draws every annotation on `img` (all boxes first, then the labels on top) and returns the
/// label rectangles in drawing order (one per box).
pub fn draw_annotations(img: &mut RgbImage, anns: &[Annotation], style: &Style) -> Vec<LabelRect> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Vec::new();
    }
    for a in anns {
        for b in &a.boxes {
            draw_box(img, b, style.line_width, a.color);
        }
    }
    // A label must fit the image: fall back to scale 1 on small images.
    let mut scale = style.text_scale.max(1);
    while scale > 1 && GLYPH * scale + 2 * scale > h {
        scale -= 1;
    }
    let pad = scale.max(1);
    let lh = GLYPH * scale + 2 * pad;
    let mut placed: Vec<LabelRect> = Vec::new();
    for a in anns {
        let text = fit_label(&a.label, scale, pad, w);
        let lw = text_width(&text, scale) + 2 * pad;
        for b in &a.boxes {
            let rect = place_label(b, (lw, lh), style.line_width, (w, h), &placed);
            for y in rect.y..rect.y + rect.h {
                for x in rect.x..rect.x + rect.w {
                    let p = *img.get_pixel(x, y);
                    img.put_pixel(x, y, blend(p, a.color, LABEL_ALPHA));
                }
            }
            draw_text(
                img,
                i64::from(rect.x + pad),
                i64::from(rect.y + pad),
                &text,
                scale,
                text_color(a.color),
            );
            placed.push(rect);
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: Rgb<u8> = Rgb([128, 128, 128]);

    fn grey(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, GREY)
    }

    fn ann(label: &str, color: usize, boxes: &[[u32; 4]]) -> Annotation {
        Annotation {
            label: label.into(),
            color: palette_color(color),
            boxes: boxes
                .iter()
                .map(|&[x1, y1, x2, y2]| PixelBox { x1, y1, x2, y2 })
                .collect(),
        }
    }

    #[test]
    fn box_edges_have_the_box_colour_and_the_inside_is_untouched() {
        let mut img = grey(200, 100);
        let style = Style::for_image(200, 100);
        assert_eq!(style.line_width, 2);
        let labels = draw_annotations(&mut img, &[ann("dog", 0, &[[20, 40, 120, 90]])], &style);
        let c = palette_color(0);
        // left, right, bottom edges (both pixels of the 2-px line) and the top edge's right end.
        for (x, y) in [
            (20, 60),
            (21, 60),
            (119, 60),
            (118, 60),
            (70, 89),
            (70, 88),
            (110, 40),
            (110, 41),
        ] {
            assert_eq!(img.get_pixel(x, y), &c, "({x}, {y})");
        }
        assert_eq!(img.get_pixel(22, 60), &GREY);
        assert_eq!(img.get_pixel(70, 65), &GREY);
        assert_eq!(img.get_pixel(19, 60), &GREY);
        assert_eq!(img.get_pixel(120, 60), &GREY);
        // The label sits right above the box, at its left edge, on the blended colour.
        let l = labels[0];
        assert_eq!((l.x, l.y + l.h), (20, 40));
        assert_eq!(l.h, 8 + 2);
        assert_eq!(l.w, 3 * 8 + 2);
        assert_eq!(img.get_pixel(20, l.y), &blend(GREY, c, LABEL_ALPHA));
        // Some glyph pixels are drawn in the text colour.
        let ink = (l.y..l.y + l.h)
            .flat_map(|y| (l.x..l.x + l.w).map(move |x| (x, y)))
            .filter(|&(x, y)| *img.get_pixel(x, y) == text_color(c))
            .count();
        assert!(ink > 10, "{ink} text pixels");
    }

    #[test]
    fn label_moves_inside_at_the_top_edge_and_stays_in_the_image() {
        let mut img = grey(100, 80);
        let style = Style::for_image(100, 80);
        let labels = draw_annotations(
            &mut img,
            &[ann("a very long phrase indeed", 2, &[[70, 0, 100, 80]])],
            &style,
        );
        let l = labels[0];
        // No room above: the label goes under the top line, inside the box.
        assert_eq!(l.y, style.line_width);
        assert!(l.x + l.w <= 100 && l.y + l.h <= 80, "{l:?}");
        // Shifted left to stay inside the image.
        assert!(l.x < 70);
        assert_eq!(img.get_pixel(99, 40), &palette_color(2));
    }

    #[test]
    fn labels_do_not_overlap() {
        let mut img = grey(300, 300);
        let style = Style::for_image(300, 300);
        let labels = draw_annotations(
            &mut img,
            &[
                ann("one", 0, &[[50, 100, 200, 200]]),
                ann("two", 1, &[[52, 101, 150, 250]]),
            ],
            &style,
        );
        assert_eq!(labels.len(), 2);
        assert!(!labels[0].overlaps(&labels[1]), "{labels:?}");
    }

    #[test]
    fn scales_with_the_image() {
        let s = Style::for_image(2000, 1500);
        assert_eq!(s.line_width, 7);
        assert_eq!(s.text_scale, 4);
        let mut img = grey(2000, 1500);
        let labels = draw_annotations(&mut img, &[ann("x", 3, &[[100, 500, 900, 1400]])], &s);
        assert_eq!(labels[0].h, 8 * 4 + 2 * 4);
        for d in 0..7 {
            assert_eq!(img.get_pixel(100 + d, 900), &palette_color(3));
        }
        assert_eq!(img.get_pixel(107, 900), &GREY);
        let tiny = Style::for_image(10, 10);
        assert_eq!((tiny.line_width, tiny.text_scale), (2, 1));
    }

    #[test]
    fn degenerate_and_tiny_images_do_not_panic() {
        let mut img = grey(5, 5);
        let labels = draw_annotations(
            &mut img,
            &[ann("phrase", 0, &[[4, 4, 4, 4], [0, 0, 5, 5]])],
            &Style::for_image(5, 5),
        );
        assert!(labels.iter().all(|l| l.x + l.w <= 5 && l.y + l.h <= 5));
        assert_eq!(
            fit_label("abcdef", 1, 1, 34),
            "abcdef".chars().take(2).collect::<String>() + ".."
        );
    }

    #[test]
    fn colours_follow_distinct_phrases() {
        let e = |p: &str| Entity {
            phrase: p.into(),
            span: (0, 0),
            byte_span: None,
            boxes: vec![[0.0, 0.0, 0.5, 0.5]],
        };
        let ents = [e("a dog"), e("a cat"), e("a dog"), e("a ball")];
        assert_eq!(entity_color_indices(&ents), vec![0, 1, 0, 2]);
        let anns = annotations(&ents, 64, 32);
        assert_eq!(anns[2].color, palette_color(0));
        assert_eq!(
            anns[0].boxes[0],
            PixelBox {
                x1: 0,
                y1: 0,
                x2: 32,
                y2: 16
            }
        );
        assert_eq!(color_hex(palette_color(0)), "#e6194b");
        assert_eq!(text_color(palette_color(7)), Rgb([0, 0, 0]));
        assert_eq!(text_color(palette_color(4)), Rgb([255, 255, 255]));
    }
}
