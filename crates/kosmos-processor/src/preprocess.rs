//! The CLIP image processor's PIL path (HF `CLIPImageProcessorPil`): resize, center crop,
//! rescale, normalize, producing `pixel_values`.

use image::RgbImage;
use ndarray::{Array3, Array4, Axis};

use crate::config::{PreprocessorConfig, ResizeTarget};
use crate::image::{load_rgb, DecodeLimits, ImageError, ImageInput};
use crate::resize::resize_rgb8;

/// A batch of preprocessed images, `[B, 3, H, W]` f32 in RGB order.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues(pub Array4<f32>);

impl PixelValues {
    /// The `[B, 3, H, W]` tensor.
    pub fn array(&self) -> &Array4<f32> {
        &self.0
    }

    /// Consumes the wrapper.
    pub fn into_array(self) -> Array4<f32> {
        self.0
    }

    /// `[B, 3, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        let s = self.0.shape();
        [s[0], s[1], s[2], s[3]]
    }
}

/// Applies a [`PreprocessorConfig`] to images, bit-exact with HF 5.24's PIL backend.
#[derive(Debug, Clone)]
pub struct ImageProcessor {
    config: PreprocessorConfig,
    limits: DecodeLimits,
    /// `lut[c][v]`: the final f32 for channel `c` and 8-bit value `v` (rescale then normalise,
    /// in HF's exact dtype sequence).
    lut: [[f32; 256]; 3],
}

impl ImageProcessor {
    /// Builds the processor; the rescale/normalise steps are folded into a lookup table.
    pub fn new(config: PreprocessorConfig) -> Self {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            // np.array(mean, dtype=float32) after the f64 → f32 rescale.
            let mean = config.image_mean[c] as f32;
            let std = config.image_std[c] as f32;
            for (v, out) in table.iter_mut().enumerate() {
                // rescale: (u8 as f64 · factor) cast to f32; otherwise astype(float32).
                let mut x = if config.do_rescale {
                    (v as f64 * config.rescale_factor) as f32
                } else {
                    v as f32
                };
                if config.do_normalize {
                    x = (x - mean) / std;
                }
                *out = x;
            }
        }
        Self {
            config,
            limits: DecodeLimits::default(),
            lut,
        }
    }

    /// Sets the decompression-bomb limit.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// The decoding limits in use.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The `(height, width)` HF's resize produces for an image of `width × height`.
    pub fn resize_size(&self, width: usize, height: usize) -> (usize, usize) {
        match self.config.size {
            ResizeTarget::Exact { height, width } => (height, width),
            ResizeTarget::ShortestEdge(s) => {
                // get_resize_output_image_size(default_to_square=False)
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                let new_long = ((s * long) as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// Resizes and crops an RGB image, returning the 8-bit result (`h × w × 3`).
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage, ImageError> {
        let (mut w, mut h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err(ImageError::Empty);
        }
        let mut data = if self.config.do_resize {
            let (oh, ow) = self.resize_size(w, h);
            let out = resize_rgb8(
                img.as_raw(),
                w,
                h,
                ow.max(1),
                oh.max(1),
                self.config.resample,
            );
            (w, h) = (ow.max(1), oh.max(1));
            out
        } else {
            img.as_raw().clone()
        };
        if self.config.do_center_crop
            && (w, h) != (self.config.crop_size.1, self.config.crop_size.0)
        {
            (data, w, h) = center_crop(&data, w, h, self.config.crop_size);
        }
        RgbImage::from_raw(w as u32, h as u32, data)
            .ok_or_else(|| ImageError::UnsupportedPixelFormat("inconsistent buffer size".into()))
    }

    /// Preprocesses one RGB image to `[3, H, W]`.
    pub fn preprocess_rgb(&self, img: &RgbImage) -> Result<Array3<f32>, ImageError> {
        let out = self.resize_and_crop(img)?;
        let (w, h) = (out.width() as usize, out.height() as usize);
        let mut arr = Array3::<f32>::zeros((3, h, w));
        let plane = h * w;
        if let Some(dst) = arr.as_slice_mut() {
            let (r, rest) = dst.split_at_mut(plane);
            let (g, b) = rest.split_at_mut(plane);
            for (i, px) in out.as_raw().chunks_exact(3).enumerate() {
                r[i] = self.lut[0][px[0] as usize];
                g[i] = self.lut[1][px[1] as usize];
                b[i] = self.lut[2][px[2] as usize];
            }
        }
        crate::scratch::give_u8(out.into_raw());
        Ok(arr)
    }

    /// Loads and preprocesses one image.
    pub fn preprocess_one(&self, input: &ImageInput) -> Result<Array3<f32>, ImageError> {
        let rgb = load_rgb(input, &self.limits)?;
        let out = self.preprocess_rgb(&rgb);
        crate::scratch::give_u8(rgb.into_raw());
        out
    }

    /// Decodes encoded image bytes and preprocesses them (no copy of the bytes).
    pub fn preprocess_bytes(&self, bytes: &[u8]) -> Result<Array3<f32>, ImageError> {
        let rgb = crate::image::decode_rgb(bytes, &self.limits)?;
        let out = self.preprocess_rgb(&rgb);
        crate::scratch::give_u8(rgb.into_raw());
        out
    }

    /// Loads and preprocesses a batch into `[B, 3, H, W]`.
    pub fn preprocess(
        &self,
        inputs: &[ImageInput],
    ) -> Result<PixelValues, crate::error::ProcessorError> {
        self.preprocess_iter(inputs.iter())
    }

    /// [`Self::preprocess`] over borrowed inputs.
    pub fn preprocess_iter<'a>(
        &self,
        inputs: impl Iterator<Item = &'a ImageInput>,
    ) -> Result<PixelValues, crate::error::ProcessorError> {
        use crate::error::ProcessorError;
        let mut planes = Vec::new();
        for (item, input) in inputs.enumerate() {
            planes.push(
                self.preprocess_one(input)
                    .map_err(|source| ProcessorError::Image { item, source })?,
            );
        }
        stack(planes)
    }
}

/// Stacks `[3, H, W]` arrays into `[B, 3, H, W]`, requiring equal sizes.
pub(crate) fn stack(planes: Vec<Array3<f32>>) -> Result<PixelValues, crate::error::ProcessorError> {
    use crate::error::ProcessorError;
    let Some(first) = planes.first() else {
        return Ok(PixelValues(Array4::zeros((0, 3, 0, 0))));
    };
    let (h, w) = (first.shape()[1], first.shape()[2]);
    for p in &planes {
        if p.shape()[1] != h || p.shape()[2] != w {
            return Err(ProcessorError::RaggedImages {
                first: (h, w),
                other: (p.shape()[1], p.shape()[2]),
            });
        }
    }
    let views: Vec<_> = planes.iter().map(|p| p.view()).collect();
    ndarray::stack(Axis(0), &views)
        .map(PixelValues)
        .map_err(|e| ProcessorError::InvalidOption(format!("cannot stack images: {e}")))
}

/// HF `center_crop` on an HWC u8 image: crops around the centre, or zero-pads first when
/// the image is smaller than the crop.
fn center_crop(
    data: &[u8],
    w: usize,
    h: usize,
    (ch, cw): (usize, usize),
) -> (Vec<u8>, usize, usize) {
    if w == cw && h == ch {
        return (data.to_vec(), w, h);
    }
    // top = (h − ch) // 2 with Python floor division (negative when padding is needed).
    let floor_half = |a: usize, b: usize| (a as i64 - b as i64).div_euclid(2);
    let (top, left) = (floor_half(h, ch), floor_half(w, cw));
    let (nh, nw) = (h.max(ch), w.max(cw));
    // When the crop is larger, HF pads to (nh, nw) with the image at ceil(diff / 2).
    let (pad_top, pad_left) = ((nh - h).div_ceil(2), (nw - w).div_ceil(2));
    let mut out = vec![0u8; ch * cw * 3];
    for oy in 0..ch {
        // Row in the padded canvas, then in the source.
        let py = top + pad_top as i64 + oy as i64;
        let sy = py - pad_top as i64;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for ox in 0..cw {
            let px = left + pad_left as i64 + ox as i64;
            let sx = px - pad_left as i64;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            let s = (sy as usize * w + sx as usize) * 3;
            let d = (oy * cw + ox) * 3;
            out[d..d + 3].copy_from_slice(&data[s..s + 3]);
        }
    }
    (out, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut_matches_reference_check_values() {
        // §8.3 check: two_dogs channel 0 values are (v/255 − mean)/std in f32.
        let p = ImageProcessor::new(PreprocessorConfig::kosmos2());
        let v = (0..256).find(|&v| p.lut[0][v] == -0.65358526f32);
        assert!(v.is_some(), "no 8-bit value maps to the HF check value");
    }

    #[test]
    fn center_crop_and_pad() {
        let data: Vec<u8> = (0..5 * 4 * 3).map(|v| v as u8).collect();
        let (out, w, h) = center_crop(&data, 5, 4, (2, 3));
        assert_eq!((w, h), (3, 2));
        // top = 1, left = 1: rows 1..3, cols 1..4.
        assert_eq!(&out[..3], &data[(5 + 1) * 3..(5 + 1) * 3 + 3]);
        let (out, w, h) = center_crop(&data[..3], 1, 1, (3, 3));
        assert_eq!((w, h), (3, 3));
        assert_eq!(&out[12..15], &data[..3]);
        assert_eq!(out.iter().filter(|&&v| v != 0).count(), 2);
    }

    #[test]
    fn empty_image_is_an_error() {
        let p = ImageProcessor::new(PreprocessorConfig::kosmos2());
        assert!(matches!(
            p.preprocess_rgb(&RgbImage::new(0, 5)),
            Err(ImageError::Empty)
        ));
    }

    #[test]
    fn shortest_edge_size() {
        let mut cfg = PreprocessorConfig::kosmos2();
        cfg.size = ResizeTarget::ShortestEdge(180);
        let p = ImageProcessor::new(cfg);
        assert_eq!(p.resize_size(640, 480), (180, 240));
        assert_eq!(p.resize_size(480, 640), (240, 180));
    }
}
