//! bf16 weights packed at load (`PackedBf16`, on an AVX512_BF16 CPU) against the same bf16 weights
//! kept row-major (loaded under a lower SIMD level, where `packed::packs_on_load` is false), both run
//! on this CPU's level: the image + prompt forward of every fixture model (vision tower, projection
//! and text decoder) and a greedy generation. The two differ only in f32 summation order (the
//! GEMMs over more than 16 rows are even bitwise the same), so the logits must agree far inside
//! the f32 parity tolerance and the greedy ids exactly.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "forward/mod.rs"]
mod forward;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use forward::fixture_logits;
use kosmos2::generation::{generate, GenerationConfig, Prompt, PromptBatch};
use kosmos2::{DType, Device, Kosmos2ForConditionalGeneration, Kosmos2Lm};
use kosmos_tensor::simd::{with_isa, Isa};
use support::{model_dir, rel_err, Fixture, MODELS};

#[test]
fn packed_and_row_major_bf16_agree() {
    if !Isa::Avx512Bf16.is_supported() {
        eprintln!("skipped: bf16 weights are packed only on an AVX512_BF16 CPU");
        return;
    }
    for name in MODELS {
        let dir = model_dir(&common::fixtures_dir(), name);
        let packed =
            Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::BF16).unwrap();
        let rows = with_isa(Isa::Avx512, || {
            Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::BF16)
        })
        .unwrap()
        .unwrap();
        let fx = Fixture::open(&dir.join("reference.safetensors"));
        let (a, b) = (fixture_logits(&packed, &fx), fixture_logits(&rows, &fx));
        let err = rel_err(&a, &b);
        assert!(
            err <= 1e-5,
            "{name}: packed vs row-major logits rel err {err:e}"
        );

        let batch = PromptBatch::new(
            vec![
                Prompt::text(vec![0, 70, 71]),
                Prompt::text(vec![0, 5, 6, 7, 8]),
            ],
            1,
        )
        .unwrap();
        let cfg = GenerationConfig {
            max_new_tokens: 12,
            eos_token_id: vec![],
            pad_token_id: Some(1),
            ..GenerationConfig::default()
        };
        let ga = generate(&mut Kosmos2Lm::new(&packed), &batch, &cfg).unwrap();
        let gb = generate(&mut Kosmos2Lm::new(&rows), &batch, &cfg).unwrap();
        assert_eq!(ga.sequences, gb.sequences, "{name}: greedy ids");
    }
}
