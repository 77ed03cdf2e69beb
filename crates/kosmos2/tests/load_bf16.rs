//! Loading the f32 `tiny` fixture checkpoint as bf16 / f16: every weight the facade exposes equals
//! `half`'s round-to-nearest-even conversion of the stored f32 value, bit for bit (the conversion
//! runs in parallel SIMD chunks and releases the source pages of the map as it goes).

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "forward/mod.rs"]
mod forward;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use kosmos2::{DType, Device, Kosmos2ForConditionalGeneration, Tensor};
use kosmos_tensor::{bf16, f16, CpuSlice, WeightStore};
use support::model_dir;

fn stored_f32(store: &WeightStore, name: &str) -> Vec<f32> {
    let (shape, dtype) = store.info(name).unwrap();
    assert_eq!(dtype, DType::F32, "the fixture stores {name} in f32");
    store
        .get(name, &shape, DType::F32, &Device::Cpu)
        .unwrap()
        .to_vec_f32()
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u16> {
    match t.contiguous_slice() {
        Some(CpuSlice::BF16(s)) => s.iter().map(|v| v.to_bits()).collect(),
        Some(CpuSlice::F16(s)) => s.iter().map(|v| v.to_bits()).collect(),
        other => panic!("expected half-precision storage, got {other:?}"),
    }
}

#[test]
fn half_precision_load_equals_half_conversion_of_the_f32_weights() {
    let dir = model_dir(&common::fixtures_dir(), "tiny");
    let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let convert = |v: &[f32]| -> Vec<u16> {
            v.iter()
                .map(|&x| match dtype {
                    DType::BF16 => bf16::from_f32(x).to_bits(),
                    _ => f16::from_f32(x).to_bits(),
                })
                .collect()
        };
        let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, dtype).unwrap();
        let text = &model.model.text_model;
        let vision = &model.model.vision_model;
        let checks: [(&str, &Tensor); 6] = [
            ("text_model.model.embed_tokens.weight", &text.embed_tokens),
            (
                "text_model.model.layer_norm.weight",
                &text.layer_norm.weight,
            ),
            ("text_model.model.layer_norm.bias", &text.layer_norm.bias),
            (
                "vision_model.model.post_layernorm.weight",
                &vision.post_layernorm().weight,
            ),
            (
                "vision_model.model.post_layernorm.bias",
                &vision.post_layernorm().bias,
            ),
            // The tied head is the same converted tensor as the embedding.
            (
                "text_model.model.embed_tokens.weight",
                model.lm_head.dense_weight().expect("a dense head"),
            ),
        ];
        for (name, t) in checks {
            assert_eq!(t.dtype(), dtype, "{name}");
            assert!(!t.is_memory_mapped(), "{name} is converted, not a view");
            assert_eq!(
                bits(t),
                convert(&stored_f32(&store, name)),
                "{name} as {dtype}"
            );
        }
    }
}

#[test]
fn store_converts_every_fixture_tensor_exactly() {
    let dir = model_dir(&common::fixtures_dir(), "tiny");
    let store = WeightStore::open(&dir.join("model.safetensors")).unwrap();
    for name in store.keys() {
        let (shape, stored) = store.info(&name).unwrap();
        if stored != DType::F32 {
            continue;
        }
        let f = stored_f32(&store, &name);
        let b = store.get(&name, &shape, DType::BF16, &Device::Cpu).unwrap();
        let want: Vec<u16> = f.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        assert_eq!(bits(&b), want, "{name}");
    }
}

#[test]
fn released_vision_pages_give_the_same_image_features() {
    use kosmos2::Kosmos2ForwardOptions;
    let dir = model_dir(&common::fixtures_dir(), "tiny");
    let fx = support::Fixture::open(&dir.join("reference.safetensors"));
    let pixels = fx.tensor("pixel_values");
    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let opts = Kosmos2ForwardOptions::default();
    let first = model.model.get_image_features(&pixels, &opts).unwrap();
    model.model.release_vision_pages();
    let again = model.model.get_image_features(&pixels, &opts).unwrap();
    assert_eq!(
        first.image_embeds.to_vec_f32().unwrap(),
        again.image_embeds.to_vec_f32().unwrap()
    );
}

#[test]
fn released_text_pages_give_the_same_logits() {
    let dir = model_dir(&common::fixtures_dir(), "tiny");
    let fx = support::Fixture::open(&dir.join("reference.safetensors"));
    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let first = forward::fixture_logits(&model, &fx);
    model.model.release_text_pages();
    model.model.release_vision_pages();
    assert_eq!(first, forward::fixture_logits(&model, &fx));
}
