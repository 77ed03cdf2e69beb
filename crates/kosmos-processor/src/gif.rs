//! GIF decoding as Pillow 13 opens a GIF: the first frame only, as a palette ("P") image
//! whose area outside the frame holds index 0 (or the frame's transparent index), on a
//! canvas that grows to include a frame extending past the logical screen.
//!
//! The `image` crate fills the area outside the first frame with transparent black, which
//! HF's white compositing turns into white where Pillow shows palette colour 0; hence this
//! small decoder on top of the `gif` crate.

use std::io::Cursor;

use image::RgbImage;

use crate::image::{composite_over_white, DecodeLimits, ImageError};

fn err(e: impl std::fmt::Display) -> ImageError {
    ImageError::Decode {
        format: "Gif".into(),
        message: e.to_string(),
    }
}

/// Decodes the first frame of a GIF to RGB with HF's `convert_to_rgb` rules (a frame with
/// a transparent index is composited over white).
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let max = (limits.max_pixels.saturating_mul(2)).max(1 << 20);
    if let Some(m) = std::num::NonZeroU64::new(max) {
        opts.set_memory_limit(gif::MemoryLimit::Bytes(m));
    }
    let mut dec = opts.read_info(Cursor::new(bytes)).map_err(err)?;
    let (sw, sh) = (usize::from(dec.width()), usize::from(dec.height()));
    limits.check_dims(sw as u64, sh as u64)?;
    let global = dec.global_palette().map(<[u8]>::to_vec);
    let frame = dec
        .read_next_frame()
        .map_err(err)?
        .ok_or_else(|| err("no image data"))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    // Pillow enlarges the image to the frame's extent.
    let (w, h) = (sw.max(left + fw), sh.max(top + fh));
    limits.check_dims(w as u64, h as u64)?;
    let fill = frame.transparent.unwrap_or(0);
    let mut idx = vec![fill; w * h];
    for (y, row) in frame.buffer.chunks_exact(fw.max(1)).take(fh).enumerate() {
        let o = (top + y) * w + left;
        idx[o..o + row.len()].copy_from_slice(row);
    }
    let palette = frame.palette.clone().or(global);
    let mut out = crate::scratch::take_u8(w * h * 3);
    for (o, &i) in out.chunks_exact_mut(3).zip(&idx) {
        let rgb = match &palette {
            Some(p) => {
                let k = usize::from(i) * 3;
                p.get(k..k + 3).map_or([0, 0, 0], |c| [c[0], c[1], c[2]])
            }
            None => [i, i, i], // no palette: Pillow opens the GIF as "L"
        };
        if frame.transparent == Some(i) {
            o.fill(composite_over_white(0, 0));
        } else {
            o.copy_from_slice(&rgb);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(|| err("inconsistent size"))
}
