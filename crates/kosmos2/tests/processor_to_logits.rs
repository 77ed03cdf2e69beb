//! Image + text → logits in one call: the real `Kosmos2Processor` on real photos feeds
//! `forward_processed` of the tiny-realvocab fixture, whose reference inputs were made by HF's
//! processor from the same prompts and photos.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use kosmos2::{
    DType, Device, Kosmos2Batch, Kosmos2ForConditionalGeneration, Kosmos2ForwardOptions, LmOptions,
    LogitsMode,
};
use kosmos_processor::{Kosmos2Processor, Padding, PaddingSide, ProcessOptions, ProcessorInput};
use support::{model_dir, Fixture, TOL};

#[test]
fn processor_output_goes_straight_to_logits() {
    let Some(assets) = common::assets_dir("processor_output_goes_straight_to_logits") else {
        return;
    };
    let dir = model_dir(&common::fixtures_dir(), "tiny-realvocab");
    let generation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generation.json")).unwrap())
            .unwrap();
    let meta = &generation["processor"];
    let prompts: Vec<&str> = meta["main_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let images: Vec<&str> = meta["image_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();

    let processor = Kosmos2Processor::from_dir(assets.join("kosmos-2-patch14-224")).unwrap();
    let inputs: Vec<ProcessorInput> = prompts
        .iter()
        .zip(&images)
        .map(|(p, f)| ProcessorInput::text(*p).with_image(common::image_path(&assets, f)))
        .collect();
    let opts = ProcessOptions {
        padding: Padding::Longest,
        padding_side: Some(PaddingSide::Right),
        ..Default::default()
    };
    let processed = processor.process(&inputs, &opts).unwrap();

    let fx = Fixture::open(&dir.join("reference.safetensors"));
    let batch = Kosmos2Batch::from_processor(&processed, &Device::Cpu).unwrap();
    assert_eq!(
        batch.input_ids,
        fx.u32("input_ids"),
        "processor ids equal HF's"
    );
    assert_eq!(
        batch.image_embeds_position_mask.as_deref(),
        Some(&fx.u32("image_embeds_position_mask")[..])
    );

    // Pixel exactness is the processor's own contract (tested in kosmos-processor); here the
    // fixture's pixels stand in so that this test checks the model side of the one-call path.
    let mut exact = batch.clone();
    exact.pixel_values = Some(fx.tensor("pixel_values"));

    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let lm = LmOptions {
        logits: LogitsMode::Last,
        labels: None,
    };
    let opts = Kosmos2ForwardOptions::default();
    let out = model
        .forward(&exact.inputs().unwrap(), None, &opts, &lm)
        .unwrap();
    let logits = out.logits.unwrap().to_vec_f32().unwrap();
    common::assert_parity(
        "tiny-realvocab/processor/logits_last",
        &logits,
        &fx.f32("logits_last"),
        TOL,
    );

    // The one-call path is exactly the batch path.
    let one_call = model.forward_processed(&processed, &opts, &lm).unwrap();
    let two_steps = model
        .forward(&batch.inputs().unwrap(), None, &opts, &lm)
        .unwrap();
    assert_eq!(
        one_call.logits.unwrap().to_vec_f32().unwrap(),
        two_steps.logits.unwrap().to_vec_f32().unwrap()
    );
}
