//! Decoding of every supported format and mode equals the RGB HF 5.24 gets from Pillow 13
//! (`tests/data/formats`, written by `tests/data/gen_formats.py`): baseline and
//! progressive JPEG with 4:4:4 / 4:2:2 / 4:2:0 subsampling, odd sizes, grey, CMYK, restart
//! markers; GIF (palette, transparency), BMP, lossy and lossless WebP, TIFF, with and
//! without alpha.

use std::path::PathBuf;

use kosmos_processor::image::decode_rgb;
use kosmos_processor::DecodeLimits;

#[test]
fn every_format_decodes_like_pillow() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats");
    let list = std::fs::read_to_string(dir.join("list.txt")).expect("list.txt");
    let mut bad = Vec::new();
    let mut n = 0;
    for line in list.lines().filter(|l| !l.is_empty()) {
        let mut it = line.split_whitespace();
        let (name, w, h) = (
            it.next().expect("name"),
            it.next()
                .and_then(|v| v.parse::<u32>().ok())
                .expect("width"),
            it.next()
                .and_then(|v| v.parse::<u32>().ok())
                .expect("height"),
        );
        let bytes = std::fs::read(dir.join(name)).expect("image");
        let want = std::fs::read(dir.join(format!("{name}.rgb"))).expect("rgb");
        match decode_rgb(&bytes, &DecodeLimits::default()) {
            Ok(rgb) if (rgb.width(), rgb.height()) != (w, h) => {
                bad.push(format!("{name}: size {}x{}", rgb.width(), rgb.height()))
            }
            Ok(rgb) => {
                let diff = rgb
                    .as_raw()
                    .iter()
                    .zip(&want)
                    .filter(|(a, b)| a != b)
                    .count();
                if diff != 0 {
                    bad.push(format!("{name}: {diff} bytes differ"));
                }
            }
            Err(e) => bad.push(format!("{name}: {e}")),
        }
        n += 1;
    }
    assert!(n >= 40, "only {n} images listed");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/formats");
    for name in [
        "rgb_40x27_ss2_p1.jpg",
        "rgb_40x27_ss2_p0.jpg",
        "a_q80.webp",
        "a.gif",
    ] {
        let bytes = std::fs::read(dir.join(name)).expect("image");
        for cut in [3, bytes.len() / 3, bytes.len() / 2] {
            // Must not panic; truncated baseline JPEGs may still decode (libjpeg pads).
            let _ = decode_rgb(&bytes[..cut], &DecodeLimits::default());
        }
        let mut flipped = bytes.clone();
        for i in (20..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5A;
        }
        let _ = decode_rgb(&flipped, &DecodeLimits::default());
    }
    assert!(decode_rgb(b"\xff\xd8\xff\xd9", &DecodeLimits::default()).is_err());
}

#[test]
fn pixel_limit_stops_bombs_before_decoding() {
    // A JPEG header claiming 60000 x 60000 pixels, with no data behind it.
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0, 17, 8, 0xEA, 0x60, 0xEA, 0x60, 3];
    for id in 1..=3u8 {
        jpeg.extend_from_slice(&[id, 0x11, 0]);
    }
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    let err = decode_rgb(&jpeg, &DecodeLimits::default()).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    let err = decode_rgb(&jpeg, &DecodeLimits { max_pixels: 10 }).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}
