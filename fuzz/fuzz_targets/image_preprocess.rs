//! Image decoding and preprocessing on arbitrary bytes: must never panic or allocate
//! without bound (a 4-megapixel limit keeps each run small).
#![no_main]

use kosmos_processor::{DecodeLimits, ImageProcessor, PreprocessorConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = ImageProcessor::new(PreprocessorConfig::kosmos2()).with_limits(DecodeLimits {
        max_pixels: 4_000_000,
    });
    if let Ok(arr) = p.preprocess_bytes(data) {
        assert_eq!(arr.shape(), &[3, 224, 224]);
        assert!(arr.iter().all(|v| v.is_finite()));
    }
});
