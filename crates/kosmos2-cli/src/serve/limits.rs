//! Request limits and the decoding of images sent inline (base64 or `data:` URLs).

use image::RgbImage;
use kosmos_processor::image::{load_rgb, DecodeLimits, ImageError};
use kosmos_processor::ImageInput;

use super::error::ApiError;

/// What one request may ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_request_bytes: usize,
    /// Largest image, `width × height`.
    pub max_image_pixels: u64,
    /// Longest prompt, in tokens (the 64 image tokens and the specials included).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens`.
    pub max_tokens: usize,
    /// `max_tokens` when the request does not say.
    pub default_max_tokens: usize,
    /// Accept `http(s)://` and `file://` image URLs (off by default: the server would fetch or
    /// read what a client names). Only `file://` is implemented; `http(s)` is always refused.
    pub allow_file_urls: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 20 << 20,
            max_image_pixels: 40_000_000,
            max_prompt_tokens: 1024,
            max_tokens: 512,
            default_max_tokens: 128,
            allow_file_urls: false,
        }
    }
}

/// The bytes of an image given as a `data:` URL, a bare base64 string, or (when enabled) a
/// `file://` URL.
pub fn image_bytes(url: &str, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let url = url.trim();
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::invalid(
                "invalid_image_url",
                "a data URL needs a comma before its payload: data:image/png;base64,...",
            ));
        };
        if !meta.ends_with(";base64") {
            return Err(ApiError::invalid(
                "invalid_image_url",
                "only base64 data URLs are supported (data:image/...;base64,...)",
            ));
        }
        return decode_base64(data);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(ApiError::invalid(
            "image_url_not_allowed",
            "http(s) image URLs are not fetched by this server: send the image inline as a data: URL",
        ));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !limits.allow_file_urls {
            return Err(ApiError::invalid(
                "image_url_not_allowed",
                "file:// image URLs are off (start the server with --allow-file-urls): send the image inline as a data: URL",
            ));
        }
        return std::fs::read(path)
            .map_err(|e| ApiError::invalid("invalid_image_url", format!("{path}: {e}")));
    }
    decode_base64(url)
}

fn decode_base64(data: &str) -> Result<Vec<u8>, ApiError> {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::decode(cleaned.as_bytes()).map_err(|e| {
        ApiError::invalid(
            "invalid_base64",
            format!("the image is not valid base64: {e}"),
        )
    })
}

/// Decodes image bytes to RGB as the processor does, within the pixel limit.
pub fn decode_image(bytes: Vec<u8>, limits: &Limits) -> Result<RgbImage, ApiError> {
    let dl = DecodeLimits {
        max_pixels: limits.max_image_pixels,
    };
    load_rgb(&ImageInput::Bytes(bytes), &dl).map_err(|e| match e {
        ImageError::TooLarge { .. } => ApiError::too_large("image_too_large", e.to_string()),
        other => ApiError::invalid(
            "invalid_image",
            format!("the image cannot be decoded: {other}"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_and_refusals() {
        let l = Limits::default();
        assert_eq!(
            image_bytes("data:image/png;base64,aGVsbG8=", &l).unwrap(),
            b"hello"
        );
        assert_eq!(image_bytes("aGVs bG8=", &l).unwrap(), b"hello");
        assert_eq!(
            image_bytes("data:image/png;base64,@@@", &l)
                .unwrap_err()
                .code,
            "invalid_base64"
        );
        assert_eq!(
            image_bytes("https://x/y.png", &l).unwrap_err().code,
            "image_url_not_allowed"
        );
        assert_eq!(
            image_bytes("file:///etc/passwd", &l).unwrap_err().code,
            "image_url_not_allowed"
        );
        assert_eq!(
            decode_image(b"hello".to_vec(), &l).unwrap_err().code,
            "invalid_image"
        );
    }
}
