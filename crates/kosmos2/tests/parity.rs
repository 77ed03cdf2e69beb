//! Parity with HF on the committed model fixtures (`tests/fixtures/models/`): text hidden states of
//! every layer, attentions, image embeds, logits and loss, for every fixture checkpoint, in f32.
//! Error = max |got - want| / max |want| per tensor, tolerance 1e-4.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../kosmos-text/tests/support/mod.rs"]
mod support;

use kosmos2::{
    DType, Device, Kosmos2ForConditionalGeneration, Kosmos2ForwardOptions, Kosmos2Inputs,
    LmOptions, LogitsMode, Tensor, TextInputs,
};
use support::{model_dir, Fixture, MODELS, TOL};

fn load(name: &str) -> (Kosmos2ForConditionalGeneration, std::path::PathBuf) {
    let dir = model_dir(&common::fixtures_dir(), name);
    let model = Kosmos2ForConditionalGeneration::load(&dir, &Device::Cpu, DType::F32)
        .expect("load fixture model");
    (model, dir)
}

fn check(component: String, got: &[f32], want: &[f32]) {
    common::assert_parity(&component, got, want, TOL);
}

/// Which reference file and how its images are given.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    Main,
    TextOnly,
    LeftPad,
}

impl Case {
    fn file(self) -> &'static str {
        match self {
            Case::Main => "reference.safetensors",
            Case::TextOnly => "reference_text_only.safetensors",
            Case::LeftPad => "reference_left_pad.safetensors",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::Main => "main",
            Case::TextOnly => "text_only",
            Case::LeftPad => "left_pad",
        }
    }
}

fn run_case(name: &str, case: Case) {
    let (model, dir) = load(name);
    let fx = Fixture::open(&dir.join(case.file()));
    let pixels = Fixture::open(&dir.join("reference.safetensors")).tensor("pixel_values");
    let shape = fx.shape("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let ids = fx.u32("input_ids");
    let attention_mask = fx.u32("attention_mask");
    let labels = fx.i64("labels");
    let position_mask = (case != Case::TextOnly).then(|| fx.u32("image_embeds_position_mask"));
    let text = TextInputs::from_ids(&ids, b, t)
        .unwrap()
        .with_attention_mask(&attention_mask);
    let mut inputs = Kosmos2Inputs::new(text);
    if let Some(pm) = &position_mask {
        inputs = inputs.with_pixel_values(&pixels, pm);
    }
    let opts = Kosmos2ForwardOptions {
        output_hidden_states: true,
        output_attentions: true,
        ..Default::default()
    };
    let lm = LmOptions {
        logits: LogitsMode::All,
        labels: Some(&labels),
    };
    let out = model.forward(&inputs, None, &opts, &lm).expect("forward");
    let tag = |what: &str| format!("{name}/{}/{what}", case.name());
    let cfg = model.model.config().text_config.clone();

    if case != Case::TextOnly {
        let ie = out.image_embeds.as_ref().expect("image_embeds");
        check(
            tag("image_embeds"),
            &ie.to_vec_f32().unwrap(),
            &fx.f32("image_embeds"),
        );
    } else {
        assert!(out.image_embeds.is_none());
    }
    let hs = out.hidden_states.as_ref().expect("hidden states");
    assert_eq!(hs.len(), cfg.layers + 1);
    for (i, h) in hs.iter().enumerate() {
        let key = format!("text.hidden_states.{i}");
        check(tag(&key), &h.to_vec_f32().unwrap(), &fx.f32(&key));
    }
    let attn = out.attentions.as_ref().expect("attentions");
    assert_eq!(attn.len(), cfg.layers);
    for (i, a) in attn.iter().enumerate() {
        let key = format!("text.attentions.{i}");
        assert_eq!(a.dims(), fx.shape(&key).as_slice(), "{key}");
        check(tag(&key), &a.to_vec_f32().unwrap(), &fx.f32(&key));
    }
    check(
        tag("text.last_hidden_state"),
        &out.last_hidden_state.to_vec_f32().unwrap(),
        &fx.f32("text.last_hidden_state"),
    );

    let logits = out.logits.as_ref().expect("logits").to_vec_f32().unwrap();
    let v = cfg.vocab_size;
    assert_eq!(logits.len(), b * t * v);
    if fx.has("logits") {
        check(tag("logits"), &logits, &fx.f32("logits"));
    } else {
        let last: Vec<f32> = (0..b)
            .flat_map(|r| logits[(r * t + t - 1) * v..(r * t + t) * v].to_vec())
            .collect();
        check(tag("logits_last"), &last, &fx.f32("logits_last"));
        let head: Vec<f32> = logits
            .chunks_exact(v)
            .flat_map(|row| row[..512].to_vec())
            .collect();
        check(tag("logits_head"), &head, &fx.f32("logits_head"));
    }
    let lse: Vec<f32> = logits
        .chunks_exact(v)
        .map(|row| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            (m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()) as f32
        })
        .collect();
    check(tag("logits_logsumexp"), &lse, &fx.f32("logits_logsumexp"));
    let argmax: Vec<i64> = logits
        .chunks_exact(v)
        .map(|row| {
            let mut best = 0;
            for (j, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = j;
                }
            }
            best as i64
        })
        .collect();
    assert_eq!(argmax, fx.i64("logits_argmax"), "{}", tag("logits_argmax"));
    let loss = out.loss.expect("loss");
    check(tag("loss"), &[loss], &fx.f32("loss"));
}

#[test]
fn tiny_main() {
    run_case("tiny", Case::Main);
}

#[test]
fn tiny_text_only() {
    run_case("tiny", Case::TextOnly);
}

#[test]
fn tiny_left_pad() {
    run_case("tiny", Case::LeftPad);
}

#[test]
fn tiny_wide_main() {
    run_case("tiny-wide", Case::Main);
}

#[test]
fn tiny_wide_text_only() {
    run_case("tiny-wide", Case::TextOnly);
}

#[test]
fn tiny_wide_left_pad() {
    run_case("tiny-wide", Case::LeftPad);
}

#[test]
fn tiny_realvocab_main() {
    run_case("tiny-realvocab", Case::Main);
}

#[test]
fn tiny_realvocab_text_only() {
    run_case("tiny-realvocab", Case::TextOnly);
}

#[test]
fn tiny_realvocab_left_pad() {
    run_case("tiny-realvocab", Case::LeftPad);
}

#[test]
fn lm_head_is_tied_or_read_as_the_fixture_says() {
    for name in MODELS {
        let (model, _) = load(name);
        // tiny-wide stores an untied head that differs from embed_tokens; the others drop the tied one.
        assert_eq!(model.is_tied(), name != "tiny-wide", "{name}");
        let same = model.lm_head.dense_weight().unwrap().to_vec_f32().unwrap()
            == model.model.text_model.embed_tokens.to_vec_f32().unwrap();
        assert_eq!(same, name != "tiny-wide", "{name}");
    }
}

/// `Last` logits equal the last row of `All` logits, and the loss does not depend on the mode.
#[test]
fn last_position_logits_match_all_positions() {
    let (model, dir) = load("tiny");
    let fx = Fixture::open(&dir.join("reference.safetensors"));
    let shape = fx.shape("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let (ids, pm, labels) = (
        fx.u32("input_ids"),
        fx.u32("image_embeds_position_mask"),
        fx.i64("labels"),
    );
    let pixels: Tensor = fx.tensor("pixel_values");
    let inputs = Kosmos2Inputs::new(TextInputs::from_ids(&ids, b, t).unwrap())
        .with_pixel_values(&pixels, &pm);
    let opts = Kosmos2ForwardOptions::default();
    let last = model.forward(
        &inputs,
        None,
        &opts,
        &LmOptions {
            logits: LogitsMode::Last,
            labels: Some(&labels),
        },
    );
    let last = last.unwrap();
    let l = last.logits.unwrap();
    let v = model.model.config().text_config.vocab_size;
    assert_eq!(l.dims(), &[b, 1, v]);
    let want: Vec<f32> = fx
        .f32("logits")
        .chunks_exact(t * v)
        .flat_map(|r| r[(t - 1) * v..].to_vec())
        .collect();
    check(
        "tiny/main/logits_last_mode".into(),
        &l.to_vec_f32().unwrap(),
        &want,
    );
    check(
        "tiny/main/loss_last_mode".into(),
        &[last.loss.unwrap()],
        &fx.f32("loss"),
    );
}
