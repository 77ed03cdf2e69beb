//! The all-position logits of a fixture's image + prompt forward pass, for the kosmos2 integration
//! tests that compare loads of one model (include with `#[path = "forward/mod.rs"] mod forward;`,
//! next to `mod support;`).

use kosmos2::{
    Kosmos2ForConditionalGeneration, Kosmos2ForwardOptions, Kosmos2Inputs, LmOptions, LogitsMode,
    TextInputs,
};

use crate::support::Fixture;

/// `model`'s logits at every position of the fixture's `input_ids` with its `pixel_values`.
pub fn fixture_logits(model: &Kosmos2ForConditionalGeneration, fx: &Fixture) -> Vec<f32> {
    let s = fx.shape("input_ids");
    let (ids, pm) = (fx.u32("input_ids"), fx.u32("image_embeds_position_mask"));
    let pixels = fx.tensor("pixel_values");
    let inputs = Kosmos2Inputs::new(TextInputs::from_ids(&ids, s[0], s[1]).unwrap())
        .with_pixel_values(&pixels, &pm);
    let lm = LmOptions {
        logits: LogitsMode::All,
        labels: None,
    };
    let out = model
        .forward(&inputs, None, &Kosmos2ForwardOptions::default(), &lm)
        .unwrap();
    out.logits.unwrap().to_vec_f32().unwrap()
}
