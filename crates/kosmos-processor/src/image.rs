//! Image decoding and HF 5.24's `convert_to_rgb`, reproducing Pillow's conversions.
//!
//! What Pillow (and so HF) does, and what this module does the same way:
//! - images with an alpha band (RGBA, LA, palette or grey/RGB with a `tRNS` transparency)
//!   are composited over opaque **white** with Pillow's integer `alpha_composite`, then the
//!   alpha is dropped;
//! - grey becomes RGB by replication;
//! - 16-bit RGB(A) and grey+alpha PNGs keep the high byte (Pillow's `;16B` unpackers);
//!   16-bit grey (`I;16`) is **clipped** to 255, as Pillow's `I;16 → RGB` conversion does;
//! - CMYK JPEGs are converted with Pillow's `cmyk2rgb` (see [`crate::jpeg`]);
//! - GIFs give their first frame, on Pillow's canvas (see [`crate::gif`]).
//!
//! **EXIF orientation is not applied**, because HF does not apply it either: a photo
//! whose EXIF says "rotate 90°" is processed as stored, exactly as in Python.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

/// Pillow's `Image.MAX_IMAGE_PIXELS` (1024·1024·1024 / 4 / 3).
pub const PILLOW_MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// The default pixel limit: Pillow raises `DecompressionBombError` above twice
/// `MAX_IMAGE_PIXELS`, so HF rejects exactly the images this limit rejects.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * PILLOW_MAX_IMAGE_PIXELS;

/// An image given to the processor.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// A file to read and decode (the format is detected from the content, as Pillow does).
    Path(PathBuf),
    /// Encoded bytes (JPEG, PNG, WebP, GIF, BMP, TIFF).
    Bytes(Vec<u8>),
    /// An already decoded image; converted to RGB like a decoded file.
    Decoded(DynamicImage),
}

impl From<PathBuf> for ImageInput {
    fn from(p: PathBuf) -> Self {
        ImageInput::Path(p)
    }
}

impl From<&Path> for ImageInput {
    fn from(p: &Path) -> Self {
        ImageInput::Path(p.to_path_buf())
    }
}

impl From<Vec<u8>> for ImageInput {
    fn from(b: Vec<u8>) -> Self {
        ImageInput::Bytes(b)
    }
}

impl From<DynamicImage> for ImageInput {
    fn from(i: DynamicImage) -> Self {
        ImageInput::Decoded(i)
    }
}

impl From<RgbImage> for ImageInput {
    fn from(i: RgbImage) -> Self {
        ImageInput::Decoded(DynamicImage::ImageRgb8(i))
    }
}

/// An error while reading, decoding or converting an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image file could not be read.
    #[error("{}: cannot read image: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not in a supported image format.
    #[error("unrecognised image format")]
    UnknownFormat,
    /// The decoder rejected the data.
    #[error("cannot decode {format} image: {message}")]
    Decode {
        /// The detected format.
        format: String,
        /// The decoder's message.
        message: String,
    },
    /// The image has more pixels than the configured limit (decompression-bomb guard).
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
        /// The limit in force.
        max_pixels: u64,
    },
    /// The image has no pixels.
    #[error("image has zero width or height")]
    Empty,
    /// A pixel format Pillow cannot convert to RGB the same way (e.g. float images).
    #[error("unsupported pixel format {0}")]
    UnsupportedPixelFormat(String),
}

/// Decoding limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `width × height` (default [`DEFAULT_MAX_PIXELS`]).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    pub(crate) fn check_dims(&self, width: u64, height: u64) -> Result<(), ImageError> {
        self.check(width, height)
    }

    fn check(&self, width: u64, height: u64) -> Result<(), ImageError> {
        if width == 0 || height == 0 {
            return Err(ImageError::Empty);
        }
        if width.saturating_mul(height) > self.max_pixels {
            return Err(ImageError::TooLarge {
                width,
                height,
                max_pixels: self.max_pixels,
            });
        }
        Ok(())
    }
}

/// Loads any [`ImageInput`] as 8-bit RGB, exactly as HF's `convert_to_rgb` on the image
/// Pillow would open.
pub fn load_rgb(input: &ImageInput, limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    match input {
        ImageInput::Path(path) => {
            let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
                path: path.clone(),
                source,
            })?;
            decode_rgb(&bytes, limits)
        }
        ImageInput::Bytes(bytes) => decode_rgb(bytes, limits),
        ImageInput::Decoded(img) => {
            limits.check(u64::from(img.width()), u64::from(img.height()))?;
            to_rgb_pillow(img)
        }
    }
}

/// Decodes encoded bytes to 8-bit RGB with Pillow's conversion rules.
///
/// JPEG goes through [`crate::jpeg`], a decoder that reproduces libjpeg-turbo's output
/// (the library inside Pillow); the other formats go through the `image` crate, whose
/// lossless decoders give the same samples as Pillow.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| ImageError::UnknownFormat)?;
    let format = reader.format().ok_or(ImageError::UnknownFormat)?;
    match format {
        ImageFormat::Jpeg => return crate::jpeg::decode_rgb(bytes, limits.max_pixels),
        ImageFormat::Gif => return crate::gif::decode_rgb(bytes, limits),
        _ => {}
    }
    let decode_err = |e: image::ImageError| ImageError::Decode {
        format: format!("{format:?}"),
        message: e.to_string(),
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(image::Limits::default());
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    limits.check(u64::from(w), u64::from(h))?;
    // 16-bit RGBA is the widest output (8 bytes per pixel); allow decoder scratch on top.
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(u64::from(w) * u64::from(h) * 16 + (64 << 20));
    image::ImageDecoder::set_limits(&mut decoder, lim).map_err(decode_err)?;
    let color = image::ImageDecoder::color_type(&decoder);
    let total = usize::try_from(image::ImageDecoder::total_bytes(&decoder)).map_err(|_| {
        ImageError::TooLarge {
            width: u64::from(w),
            height: u64::from(h),
            max_pixels: limits.max_pixels,
        }
    })?;
    let mut buf = crate::scratch::take_u8(total);
    image::ImageDecoder::read_image(decoder, &mut buf).map_err(decode_err)?;
    let rgb = raw_to_rgb(color, &buf, w, h);
    crate::scratch::give_u8(buf);
    rgb
}

/// Pillow's `alpha_composite(white, RGBA(v, a))` for one channel
/// (`libImaging/AlphaComposite.c` with an opaque white destination).
#[inline]
pub fn composite_over_white(v: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    // With dst = (255, 255, 255, 255): outa255 = 255·255, coef1 = a·128, coef2 = (255−a)·128.
    let a = u32::from(a);
    let t = u32::from(v) * (a << 7) + 255 * ((255 - a) << 7) + (0x80 << 7);
    ((((t >> 8) + t) >> 8) >> 7) as u8
}

/// Converts a decoded image to RGB exactly as HF 5.24's `convert_to_rgb` does on the
/// corresponding Pillow image (see the module docs for the rules).
pub fn to_rgb_pillow(img: &DynamicImage) -> Result<RgbImage, ImageError> {
    raw_to_rgb(img.color(), img.as_bytes(), img.width(), img.height())
}

/// [`to_rgb_pillow`] on a raw decoder buffer (16-bit samples in native byte order).
fn raw_to_rgb(
    color: image::ColorType,
    data: &[u8],
    w: u32,
    h: u32,
) -> Result<RgbImage, ImageError> {
    use image::ColorType as C;
    if w == 0 || h == 0 {
        return Err(ImageError::Empty);
    }
    let n = w as usize * h as usize;
    let need = n * usize::from(color.bytes_per_pixel());
    if data.len() < need {
        return Err(ImageError::UnsupportedPixelFormat(
            "inconsistent buffer size".into(),
        ));
    }
    let data = &data[..need];
    let mut out = crate::scratch::take_u8(n * 3);
    let px = out.chunks_exact_mut(3);
    let u16s = |b: &[u8]| -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_ne_bytes([c[0], c[1]]))
            .collect()
    };
    match color {
        C::Rgb8 => out.copy_from_slice(data),
        C::L8 => {
            for (o, &l) in px.zip(data) {
                o.fill(l);
            }
        }
        C::La8 => {
            for (o, p) in px.zip(data.chunks_exact(2)) {
                o.fill(composite_over_white(p[0], p[1]));
            }
        }
        C::Rgba8 => {
            for (o, p) in px.zip(data.chunks_exact(4)) {
                o[0] = composite_over_white(p[0], p[3]);
                o[1] = composite_over_white(p[1], p[3]);
                o[2] = composite_over_white(p[2], p[3]);
            }
        }
        C::L16 => {
            // Pillow opens 16-bit grey as I;16, and I;16 → RGB clips at 255.
            for (o, l) in px.zip(u16s(data)) {
                o.fill(l.min(255) as u8);
            }
        }
        C::La16 => {
            // Pillow opens 16-bit grey+alpha PNGs as RGBA from the high bytes.
            for (o, p) in px.zip(u16s(data).chunks_exact(2)) {
                o.fill(composite_over_white((p[0] >> 8) as u8, (p[1] >> 8) as u8));
            }
        }
        C::Rgb16 => {
            for (o, v) in out.iter_mut().zip(u16s(data)) {
                *o = (v >> 8) as u8;
            }
        }
        C::Rgba16 => {
            for (o, p) in px.zip(u16s(data).chunks_exact(4)) {
                let a = (p[3] >> 8) as u8;
                o[0] = composite_over_white((p[0] >> 8) as u8, a);
                o[1] = composite_over_white((p[1] >> 8) as u8, a);
                o[2] = composite_over_white((p[2] >> 8) as u8, a);
            }
        }
        other => {
            crate::scratch::give_u8(out);
            return Err(ImageError::UnsupportedPixelFormat(format!("{other:?}")));
        }
    }
    RgbImage::from_raw(w, h, out)
        .ok_or_else(|| ImageError::UnsupportedPixelFormat("inconsistent buffer size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_matches_pillow_spot_values() {
        // Values from Pillow 13: alpha_composite(white, RGBA(v,v,v,a)).convert("RGB").
        assert_eq!(composite_over_white(0, 0), 255);
        assert_eq!(composite_over_white(0, 255), 0);
        assert_eq!(composite_over_white(200, 255), 200);
        assert_eq!(composite_over_white(255, 1), 255);
        // Closed form check against the float formula within rounding.
        for v in 0..=255u8 {
            for a in 0..=255u8 {
                let exact = (f64::from(v) * f64::from(a) + 255.0 * (255.0 - f64::from(a))) / 255.0;
                let got = f64::from(composite_over_white(v, a));
                assert!((got - exact).abs() <= 1.0, "{v} {a}: {got} vs {exact}");
            }
        }
    }

    #[test]
    fn sixteen_bit_rules() {
        let g = image::ImageBuffer::from_raw(4, 1, vec![0u16, 255, 256, 65535]).unwrap();
        let rgb = to_rgb_pillow(&DynamicImage::ImageLuma16(g)).unwrap();
        assert_eq!(
            rgb.as_raw(),
            &[0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        let c = image::ImageBuffer::from_raw(1, 1, vec![35485u16, 5269, 19641]).unwrap();
        let rgb = to_rgb_pillow(&DynamicImage::ImageRgb16(c)).unwrap();
        assert_eq!(rgb.as_raw(), &[138, 20, 76]);
    }

    #[test]
    fn limits_and_garbage() {
        let lim = DecodeLimits { max_pixels: 10 };
        let img = DynamicImage::ImageRgb8(RgbImage::new(4, 4));
        assert!(matches!(
            load_rgb(&ImageInput::Decoded(img), &lim),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_rgb(b"not an image at all", &DecodeLimits::default()),
            Err(ImageError::UnknownFormat)
        ));
    }
}
