//! The allocation-free decode step ([`TextForCausalLM::decode_step`]) against the general forward
//! pass (forced onto its allocating path with `output_hidden_states`), on every fixture model:
//! greedy decoding from the fixtures' prompts, with and without left padding, in both position
//! modes, through a row drop (`select_rows`) and rows of different cache lengths. Logits within
//! 1e-4 relative error at every step, greedy ids identical.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use kosmos_tensor::{ops, DType, Device, Tensor};
use kosmos_text::{
    DecodeScratch, DecodeStep, ForwardOptions, KvCache, LogitsMode, PositionMode, StoreWeights,
    TextForCausalLM, TextInputs, TextNames,
};
use support::{model_dir, rel_err, text_fixture, Fixture, MODELS, TOL};

const STEPS: usize = 6;

fn load(name: &str) -> (TextForCausalLM, std::path::PathBuf) {
    let dir = model_dir(&common::fixtures_dir(), name);
    let (cfg, store) = text_fixture(&dir);
    let src = StoreWeights::new(&store, DType::F32, &Device::Cpu);
    let lm = TextForCausalLM::load(&cfg, &src, &TextNames::kosmos2()).unwrap();
    (lm, dir)
}

/// Prefills the fixture prompt into a cache with room for `extra` more tokens; returns the cache,
/// the first greedy tokens and the attention mask so far (`None` when nothing is padded).
fn prefill(
    lm: &TextForCausalLM,
    fx: &Fixture,
    mode: PositionMode,
    extra: usize,
) -> (KvCache, Vec<u32>, Option<Vec<Vec<u32>>>) {
    let s = fx.shape("input_ids");
    let (b, t) = (s[0], s[1]);
    let (ids, am) = (fx.u32("input_ids"), fx.u32("attention_mask"));
    let (pm, img) = (
        fx.u32("image_embeds_position_mask"),
        fx.tensor("image_embeds"),
    );
    let padded = am.contains(&0);
    let mut inputs = TextInputs::from_ids(&ids, b, t)
        .unwrap()
        .with_image_embeds(&img, &pm);
    if padded {
        inputs = inputs.with_attention_mask(&am);
    }
    let opts = ForwardOptions {
        position_mode: mode,
        ..Default::default()
    };
    let mut cache = lm.model.new_cache(b, t + extra).unwrap();
    let out = lm
        .forward(&inputs, Some(&mut cache), &opts, LogitsMode::Last, None)
        .unwrap();
    let next = ops::argmax_last_dim(&out.logits.unwrap()).unwrap();
    let masks = padded.then(|| am.chunks(t).map(<[u32]>::to_vec).collect());
    (cache, next, masks)
}

/// One step on the general (allocating) path: `output_hidden_states` keeps it off the fast path.
fn slow_step(
    lm: &TextForCausalLM,
    cache: &mut KvCache,
    tokens: &[u32],
    mask: Option<&[u32]>,
    mode: PositionMode,
) -> Vec<f32> {
    let mut inputs = TextInputs::from_ids(tokens, tokens.len(), 1).unwrap();
    if let Some(m) = mask {
        inputs = inputs.with_attention_mask(m);
    }
    let opts = ForwardOptions {
        output_hidden_states: true,
        position_mode: mode,
        ..Default::default()
    };
    let out = lm
        .forward(&inputs, Some(cache), &opts, LogitsMode::Last, None)
        .unwrap();
    out.logits.unwrap().to_vec_f32().unwrap()
}

fn greedy(logits: &[f32], v: usize) -> Vec<u32> {
    logits
        .chunks(v)
        .map(|r| ops::argmax_slice(r).unwrap())
        .collect()
}

/// Runs `STEPS` greedy steps on both paths from the same prefill, dropping row 0 after step 2
/// when there are several rows; asserts logits parity and identical ids at every step.
fn compare(name: &str, case: &str, lm: &TextForCausalLM, fx: &Fixture, mode: PositionMode) {
    let v = lm.config().vocab_size;
    let (mut fast_cache, first, mut masks) = prefill(lm, fx, mode, STEPS);
    let mut slow_cache = fast_cache.clone();
    let mut scratch = DecodeScratch::default();
    let mut tokens = first;
    for step in 0..STEPS {
        if step == 2 && tokens.len() > 1 {
            let keep: Vec<usize> = (1..tokens.len()).collect();
            fast_cache = fast_cache.select_rows(&keep).unwrap();
            slow_cache = slow_cache.select_rows(&keep).unwrap();
            tokens.remove(0);
            if let Some(m) = masks.as_mut() {
                m.remove(0);
            }
        }
        if let Some(m) = masks.as_mut() {
            m.iter_mut().for_each(|r| r.push(1));
        }
        let flat = masks.as_ref().map(|m| m.concat());
        let want = slow_step(lm, &mut slow_cache, &tokens, flat.as_deref(), mode);
        let mut dstep = DecodeStep::new(&tokens).with_position_mode(mode);
        if let Some(f) = &flat {
            dstep = dstep.with_attention_mask(f);
        }
        let got = lm
            .decode_step(&dstep, &mut fast_cache, &mut scratch)
            .unwrap();
        let err = rel_err(got, &want);
        assert!(
            err <= TOL,
            "{name}/{case}/{mode:?} step {step}: logits rel err {err:e}"
        );
        let (g, w) = (greedy(got, v), greedy(&want, v));
        assert_eq!(g, w, "{name}/{case}/{mode:?} step {step}: greedy ids");
        assert_eq!(fast_cache.seq_lens(), slow_cache.seq_lens());
        assert_eq!(fast_cache.real_lens(), slow_cache.real_lens());
        tokens = g;
    }
}

#[test]
fn decode_step_matches_forward_on_every_fixture() {
    for name in MODELS {
        let (lm, dir) = load(name);
        for (case, file) in [
            ("main", "reference.safetensors"),
            ("left_pad", "reference_left_pad.safetensors"),
        ] {
            let fx = Fixture::open(&dir.join(file));
            for mode in [PositionMode::HfCompat, PositionMode::RealTokens] {
                compare(name, case, &lm, &fx, mode);
            }
        }
    }
}

/// Rows of different cache lengths (one row truncated): the new tokens go after each row's own
/// tokens, the stale slots are masked, as on the general path.
#[test]
fn decode_step_with_unequal_row_lengths() {
    let (lm, dir) = load("tiny");
    let v = lm.config().vocab_size;
    let fx = Fixture::open(&dir.join("reference.safetensors"));
    let mode = PositionMode::RealTokens;
    let (mut fast, tokens, masks) = prefill(&lm, &fx, mode, STEPS);
    assert!(masks.is_none() && tokens.len() > 1, "fixture shape changed");
    let len = fast.seq_lens()[0];
    fast.truncate_row(0, len - 3);
    let mut slow = fast.clone();
    let mut scratch = DecodeScratch::default();
    let mut tokens = tokens;
    for step in 0..3 {
        let want = slow_step(&lm, &mut slow, &tokens, None, mode);
        let got = lm
            .decode_step(
                &DecodeStep::new(&tokens).with_position_mode(mode),
                &mut fast,
                &mut scratch,
            )
            .unwrap();
        let err = rel_err(got, &want);
        assert!(err <= TOL, "step {step}: {err:e}");
        tokens = greedy(got, v);
        assert_eq!(tokens, greedy(&want, v));
    }
}

/// The plain `forward` takes the decode fast path for one-token steps; it agrees with the general
/// path and keeps the cache's bookkeeping.
#[test]
fn forward_fast_path_equals_general_path() {
    let (lm, dir) = load("tiny-wide");
    let fx = Fixture::open(&dir.join("reference_left_pad.safetensors"));
    let mode = PositionMode::HfCompat;
    let (mut fast, tokens, masks) = prefill(&lm, &fx, mode, 2);
    let mut slow = fast.clone();
    let mut masks = masks.expect("the left_pad fixture pads");
    masks.iter_mut().for_each(|r| r.push(1));
    let flat = masks.concat();
    let want = slow_step(&lm, &mut slow, &tokens, Some(&flat), mode);
    let inputs = TextInputs::from_ids(&tokens, tokens.len(), 1)
        .unwrap()
        .with_attention_mask(&flat);
    let out = lm
        .forward(
            &inputs,
            Some(&mut fast),
            &ForwardOptions::default(),
            LogitsMode::Last,
            None,
        )
        .unwrap();
    let got = out.logits.unwrap();
    assert_eq!(got.dims(), &[tokens.len(), 1, lm.config().vocab_size]);
    let err = rel_err(&got.to_vec_f32().unwrap(), &want);
    assert!(err <= TOL, "{err:e}");
    assert_eq!(fast.seq_lens(), slow.seq_lens());
}

/// Bad inputs are typed errors, and a failed step leaves the cache lengths alone.
#[test]
fn decode_step_rejects_bad_inputs() {
    let (lm, _) = load("tiny");
    let mut cache = lm.model.new_cache(2, 8).unwrap();
    let mut scratch = DecodeScratch::default();
    let step = |ids: &'static [u32]| DecodeStep::new(ids);
    assert!(lm
        .decode_step(&step(&[]), &mut cache, &mut scratch)
        .is_err());
    assert!(lm
        .decode_step(&step(&[5]), &mut cache, &mut scratch)
        .is_err());
    assert!(lm
        .decode_step(&step(&[5, 100_000]), &mut cache, &mut scratch)
        .is_err());
    assert!(lm
        .decode_step(
            &step(&[5, 6]).with_attention_mask(&[1, 1, 1]),
            &mut cache,
            &mut scratch
        )
        .is_err());
    assert!(lm
        .decode_step(
            &step(&[5, 6]).with_position_ids(&[3]),
            &mut cache,
            &mut scratch
        )
        .is_err());
    assert_eq!(cache.seq_lens(), &[0, 0]);
    let bad_head = kosmos_tensor::nn::Linear::new(
        Tensor::zeros(&[4, 3], DType::F32, &Device::Cpu).unwrap(),
        None,
    );
    assert!(lm
        .model
        .decode_step(&step(&[5, 6]), &mut cache, Some(&bad_head), &mut scratch)
        .is_err());
    // A good step after the failures works and advances every row by one.
    lm.decode_step(&step(&[5, 6]), &mut cache, &mut scratch)
        .unwrap();
    assert_eq!(cache.seq_lens(), &[1, 1]);
}

/// With a replaced block the decode step is refused (typed error), and `forward` runs the
/// one-token step on the general path instead.
#[test]
fn replaced_blocks_fall_back_to_the_general_path() {
    let (mut lm, _) = load("tiny");
    assert!(lm.model.supports_decode_step());
    lm.model
        .replace_layer(1, Box::new(kosmos_text::Identity))
        .unwrap();
    assert!(!lm.model.supports_decode_step());
    let mut cache = lm.model.new_cache(1, 4).unwrap();
    let mut scratch = DecodeScratch::default();
    assert!(lm
        .decode_step(&DecodeStep::new(&[5]), &mut cache, &mut scratch)
        .is_err());
    let inputs = TextInputs::from_ids(&[5], 1, 1).unwrap();
    let out = lm
        .forward(
            &inputs,
            Some(&mut cache),
            &ForwardOptions::default(),
            LogitsMode::Last,
            None,
        )
        .unwrap();
    assert_eq!(out.logits.unwrap().dims(), &[1, 1, lm.config().vocab_size]);
}
