//! Text-decoder parity with HF on the model fixtures, isolated from the vision side: the fixture's
//! `image_embeds` go straight into the decoder. Every layer's hidden states, attentions, logits and
//! loss, for every fixture model and case, plus the cached-decode paths.
//! Error = max |got - want| / max |want| per tensor, tolerance 1e-4.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use kosmos_tensor::{DType, Device, Tensor};
use kosmos_text::{
    ForwardOptions, LogitsMode, PositionMode, StoreWeights, TextForCausalLM, TextInputs, TextNames,
};
use support::{model_dir, rel_err, text_fixture, Fixture, MODELS, TOL};

pub fn load_text(name: &str) -> (TextForCausalLM, std::path::PathBuf) {
    let dir = model_dir(&common::fixtures_dir(), name);
    let (cfg, store) = text_fixture(&dir);
    let src = StoreWeights::new(&store, DType::F32, &Device::Cpu);
    (
        TextForCausalLM::load(&cfg, &src, &TextNames::kosmos2()).unwrap(),
        dir,
    )
}

const CASES: [(&str, &str); 3] = [
    ("main", "reference.safetensors"),
    ("text_only", "reference_text_only.safetensors"),
    ("left_pad", "reference_left_pad.safetensors"),
];

fn run(name: &str, case: &str, file: &str) {
    let (lm, dir) = load_text(name);
    let fx = Fixture::open(&dir.join(file));
    let s = fx.shape("input_ids");
    let (b, t) = (s[0], s[1]);
    let (ids, am, labels) = (
        fx.u32("input_ids"),
        fx.u32("attention_mask"),
        fx.i64("labels"),
    );
    let (pm, img);
    let mut inputs = TextInputs::from_ids(&ids, b, t)
        .unwrap()
        .with_attention_mask(&am);
    if fx.has("image_embeds_position_mask") {
        pm = fx.u32("image_embeds_position_mask");
        img = fx.tensor("image_embeds");
        inputs = inputs.with_image_embeds(&img, &pm);
    }
    let opts = ForwardOptions {
        output_hidden_states: true,
        output_attentions: true,
        ..Default::default()
    };
    let out = lm
        .forward(&inputs, None, &opts, LogitsMode::All, Some(&labels))
        .unwrap();
    let tag = |w: &str| format!("{name}/{case}/text-only-decoder/{w}");
    for (i, h) in out.hidden_states.unwrap().iter().enumerate() {
        let k = format!("text.hidden_states.{i}");
        common::assert_parity(&tag(&k), &h.to_vec_f32().unwrap(), &fx.f32(&k), TOL);
    }
    for (i, a) in out.attentions.unwrap().iter().enumerate() {
        let k = format!("text.attentions.{i}");
        common::assert_parity(&tag(&k), &a.to_vec_f32().unwrap(), &fx.f32(&k), TOL);
    }
    let logits = out.logits.unwrap().to_vec_f32().unwrap();
    if fx.has("logits") {
        common::assert_parity(&tag("logits"), &logits, &fx.f32("logits"), TOL);
    } else {
        let v = lm.config().vocab_size;
        let head: Vec<f32> = logits
            .chunks_exact(v)
            .flat_map(|r| r[..512].to_vec())
            .collect();
        common::assert_parity(&tag("logits_head"), &head, &fx.f32("logits_head"), TOL);
    }
    common::assert_parity(&tag("loss"), &[out.loss.unwrap()], &fx.f32("loss"), TOL);
}

#[test]
fn every_fixture_every_case() {
    for name in MODELS {
        for (case, file) in CASES {
            run(name, case, file);
        }
    }
}

/// Prefill all but the last token with a cache, then decode the last one: the decode step's
/// logits equal the full forward's last-position logits (no padding, so both position rules agree).
#[test]
fn cached_decode_equals_full_forward() {
    for name in MODELS {
        let (lm, dir) = load_text(name);
        let fx = Fixture::open(&dir.join("reference.safetensors"));
        let s = fx.shape("input_ids");
        let (b, t, v) = (s[0], s[1], lm.config().vocab_size);
        let (ids, pm, img) = (
            fx.u32("input_ids"),
            fx.u32("image_embeds_position_mask"),
            fx.tensor("image_embeds"),
        );
        let want = last_logits(&fx, b, t, v);
        for mode in [PositionMode::HfCompat, PositionMode::RealTokens] {
            let got = prefill_then_decode(&lm, &ids, &pm, &img, None, b, t, mode);
            common::assert_parity(
                &format!("{name}/main/cached_decode_{mode:?}"),
                &got,
                &want,
                TOL,
            );
        }
    }
}

/// Left-padded rows: decoding the last token from the cache reproduces the full forward with
/// [`PositionMode::RealTokens`], and with [`PositionMode::HfCompat`] it reproduces HF's decode
/// quirk (position = cache length + 2 counts the pads), which the full forward does not.
#[test]
fn cached_decode_with_left_padding_positions() {
    for name in MODELS {
        let (lm, dir) = load_text(name);
        let fx = Fixture::open(&dir.join("reference_left_pad.safetensors"));
        let s = fx.shape("input_ids");
        let (b, t, v) = (s[0], s[1], lm.config().vocab_size);
        let (ids, am) = (fx.u32("input_ids"), fx.u32("attention_mask"));
        let (pm, img) = (
            fx.u32("image_embeds_position_mask"),
            fx.tensor("image_embeds"),
        );
        let want = last_logits(&fx, b, t, v);
        let real = prefill_then_decode(
            &lm,
            &ids,
            &pm,
            &img,
            Some(&am),
            b,
            t,
            PositionMode::RealTokens,
        );
        common::assert_parity(
            &format!("{name}/left_pad/cached_decode_real_tokens"),
            &real,
            &want,
            TOL,
        );
        let hf = prefill_then_decode(
            &lm,
            &ids,
            &pm,
            &img,
            Some(&am),
            b,
            t,
            PositionMode::HfCompat,
        );
        for row in 0..b {
            let padded = am[row * t..(row + 1) * t].contains(&0);
            let err = rel_err(&hf[row * v..(row + 1) * v], &want[row * v..(row + 1) * v]);
            if padded {
                assert!(
                    err > 100.0 * TOL,
                    "{name} row {row}: HF decode positions should shift ({err:e})"
                );
            } else {
                assert!(err <= TOL, "{name} row {row}: {err:e}");
            }
        }
    }
}

fn last_logits(fx: &Fixture, b: usize, t: usize, v: usize) -> Vec<f32> {
    if fx.has("logits") {
        fx.f32("logits")
            .chunks_exact(t * v)
            .flat_map(|r| r[(t - 1) * v..].to_vec())
            .collect()
    } else {
        assert_eq!(fx.shape("logits_last"), [b, v]);
        fx.f32("logits_last")
    }
}

#[allow(clippy::too_many_arguments)]
fn prefill_then_decode(
    lm: &TextForCausalLM,
    ids: &[u32],
    pm: &[u32],
    img: &Tensor,
    am: Option<&[u32]>,
    b: usize,
    t: usize,
    mode: PositionMode,
) -> Vec<f32> {
    let rows = |x: &[u32], from: usize, len: usize| -> Vec<u32> {
        x.chunks_exact(t)
            .flat_map(|r| r[from..from + len].to_vec())
            .collect()
    };
    let (ids0, pm0, ids1) = (rows(ids, 0, t - 1), rows(pm, 0, t - 1), rows(ids, t - 1, 1));
    let opts = ForwardOptions {
        position_mode: mode,
        ..Default::default()
    };
    let mut cache = lm.model.new_cache(b, t).unwrap();
    let am0 = am.map(|m| rows(m, 0, t - 1));
    let mut pre = TextInputs::from_ids(&ids0, b, t - 1)
        .unwrap()
        .with_image_embeds(img, &pm0);
    if let Some(m) = &am0 {
        pre = pre.with_attention_mask(m);
    }
    lm.forward(&pre, Some(&mut cache), &opts, LogitsMode::None, None)
        .unwrap();
    assert_eq!(cache.seq_lens(), vec![t - 1; b]);
    let mut step = TextInputs::from_ids(&ids1, b, 1).unwrap();
    if let Some(m) = am {
        step = step.with_attention_mask(m);
    }
    let out = lm
        .forward(&step, Some(&mut cache), &opts, LogitsMode::Last, None)
        .unwrap();
    out.logits.unwrap().to_vec_f32().unwrap()
}
