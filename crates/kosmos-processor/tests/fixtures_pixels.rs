//! `pixels.safetensors`: image preprocessing bit-exact with HF's PIL path, for every shared
//! photo and every generated image (odd sizes, upsampling, 224×224 inputs, all PIL modes).

mod support;

use kosmos_processor::{ImageInput, ImageProcessor, PreprocessorConfig};
use safetensors::{Dtype, SafeTensors};
use support::{assets, image_path, processor_fixtures, read_json};

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Compares bit patterns; describes the first mismatch with its (c, y, x).
fn bits_diff(name: &str, got: &[f32], want: &[f32], h: usize, w: usize) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("{name}: length {} vs {}", got.len(), want.len()));
    }
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    bad.first().map(|&i| {
        let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
        format!(
            "{name}: {} of {} values differ; first at c={c} y={y} x={x}: got {} want {}",
            bad.len(),
            got.len(),
            got[i],
            want[i]
        )
    })
}

#[test]
fn pixel_values_are_bit_exact() {
    let Some(assets) = assets("pixel_values_are_bit_exact") else {
        return;
    };
    let meta = read_json("pixels.json");
    let bytes = std::fs::read(processor_fixtures().join("pixels.safetensors")).expect("fixture");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let cfg = PreprocessorConfig::from_file(
        &assets
            .join("kosmos-2-patch14-224")
            .join("preprocessor_config.json"),
    )
    .expect("config");
    let proc = ImageProcessor::new(cfg);

    // The LUT: our rescale + normalise of every byte equals HF's.
    let lut = st.tensor("lut").expect("lut");
    assert_eq!(lut.shape(), &[3, 256]);
    let lut = f32s(lut.data());
    for c in 0..3 {
        for v in 0..=255u8 {
            let img = image::RgbImage::from_pixel(1, 1, image::Rgb([v, v, v]));
            let mut one = ImageProcessor::new(PreprocessorConfig {
                do_resize: false,
                do_center_crop: false,
                ..PreprocessorConfig::kosmos2()
            });
            one = one.with_limits(*proc.limits());
            let got = one.preprocess_rgb(&img).expect("preprocess");
            assert_eq!(
                got[[c, 0, 0]].to_bits(),
                lut[c * 256 + v as usize].to_bits(),
                "lut {c} {v}"
            );
        }
    }

    let mut failures = Vec::new();
    let images = meta["images"].as_array().expect("images");
    assert!(images.len() >= 30);
    for im in images {
        let name = im["name"].as_str().expect("name");
        let input = ImageInput::Path(image_path(&assets, name));
        if let Some(key) = im["u8_key"].as_str() {
            let t = st.tensor(key).expect("u8 tensor");
            assert_eq!(t.dtype(), Dtype::U8);
            assert_eq!(t.shape(), &[3, 224, 224]);
            let rgb = kosmos_processor::image::load_rgb(&input, proc.limits())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let resized = proc.resize_and_crop(&rgb).expect("resize");
            let (w, h) = (resized.width() as usize, resized.height() as usize);
            assert_eq!((h, w), (224, 224), "{name}");
            let mut chw = vec![0u8; 3 * h * w];
            for (i, px) in resized.as_raw().chunks_exact(3).enumerate() {
                for c in 0..3 {
                    chw[c * h * w + i] = px[c];
                }
            }
            let bad = chw.iter().zip(t.data()).filter(|(a, b)| a != b).count();
            if bad != 0 {
                failures.push(format!("{name}: {bad} resized bytes differ from Pillow"));
            }
        }
        if let Some(key) = im["f32_key"].as_str() {
            let t = st.tensor(key).expect("f32 tensor");
            assert_eq!(t.dtype(), Dtype::F32);
            let got = proc
                .preprocess_one(&input)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = got.as_standard_layout();
            let got = got.as_slice().expect("contiguous");
            failures.extend(bits_diff(name, got, &f32s(t.data()), 224, 224));
        }
    }
    assert!(
        failures.is_empty(),
        "{} images differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
