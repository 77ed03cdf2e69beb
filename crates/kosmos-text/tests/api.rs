//! The decoder's API on a small random model (no fixtures): swapping layers, head masks, hidden
//! states, per-row KV-cache lengths, row selection and input errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kosmos_tensor::{Device, Tensor};
use kosmos_text::{
    BlockInput, BlockOutput, DecoderBlock, Error, ForwardOptions, Identity, Kosmos2TextConfig,
    KvCache, LogitsMode, TextForCausalLM, TextInputs, TextNames,
};

fn cfg() -> Kosmos2TextConfig {
    Kosmos2TextConfig {
        vocab_size: 40,
        embed_dim: 16,
        layers: 2,
        ffn_dim: 32,
        attention_heads: 4,
        ..Default::default()
    }
}

/// Deterministic pseudo-random weights for every key of `cfg`.
fn random_model(cfg: &Kosmos2TextConfig) -> TextForCausalLM {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let weights: HashMap<String, Tensor> = TextNames::new("")
        .all_keys(cfg, false)
        .into_iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product();
            let base = if k.ends_with("layer_norm.weight")
                || k.ends_with("_ln.weight")
                || k.ends_with("layernorm.weight")
            {
                1.0
            } else {
                0.0
            };
            let v = (0..n).map(|_| base + next()).collect();
            (k, Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
        })
        .collect();
    TextForCausalLM::load(cfg, &weights, &TextNames::new("")).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const IDS: [u32; 6] = [0, 7, 9, 11, 13, 2];

/// Scales what the wrapped block adds to the residual stream.
#[derive(Debug)]
struct ScaleDelta(Box<dyn DecoderBlock>, f32);

impl DecoderBlock for ScaleDelta {
    fn forward(&self, input: BlockInput<'_>) -> kosmos_text::Result<BlockOutput> {
        let x = input.hidden_states.clone();
        let out = self.0.forward(input)?;
        let delta = out.hidden_states.sub(&x)?.scale(self.1)?;
        Ok(BlockOutput {
            hidden_states: x.add(&delta)?,
            attentions: out.attentions,
        })
    }
}

#[test]
fn swapping_a_layer_changes_the_output_and_swapping_back_restores_it() {
    let cfg = cfg();
    let mut lm = random_model(&cfg);
    let inputs = TextInputs::from_ids(&IDS, 1, 6).unwrap();
    let run = |lm: &TextForCausalLM| {
        vals(
            &lm.model
                .forward(&inputs, None, &ForwardOptions::default())
                .unwrap()
                .last_hidden_state,
        )
    };
    let before = run(&lm);
    let original = lm.model.replace_layer(1, Box::new(Identity)).unwrap();
    let skipped = run(&lm);
    assert!(
        max_diff(&before, &skipped) > 1e-3,
        "an identity layer changes the output"
    );
    // Wrap the original block: a scale of 1 is the original block again.
    lm.model
        .replace_layer(1, Box::new(ScaleDelta(original, 1.0)))
        .unwrap();
    assert!(max_diff(&before, &run(&lm)) < 1e-5);
    assert!(matches!(
        lm.model.replace_layer(2, Box::new(Identity)),
        Err(Error::LayerIndex { index: 2, len: 2 })
    ));
}

#[test]
fn hidden_states_are_layers_plus_one_and_end_with_the_final_output() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let inputs = TextInputs::from_ids(&IDS, 1, 6).unwrap();
    let opts = ForwardOptions {
        output_hidden_states: true,
        output_attentions: true,
        ..Default::default()
    };
    let out = lm.model.forward(&inputs, None, &opts).unwrap();
    let hs = out.hidden_states.unwrap();
    assert_eq!(hs.len(), cfg.layers + 1);
    assert_eq!(vals(&hs[cfg.layers]), vals(&out.last_hidden_state));
    let attn = out.attentions.unwrap();
    assert_eq!(attn.len(), cfg.layers);
    assert_eq!(attn[0].dims(), &[1, 4, 6, 6]);
    // Causal: every probability above the diagonal is zero, every row sums to one.
    let a = vals(&attn[0]);
    for (k, p) in a.iter().enumerate() {
        if k % 6 > (k / 6) % 6 {
            assert_eq!(*p, 0.0);
        }
    }
    for row in a.chunks(6) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn head_mask_scales_heads() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let inputs = TextInputs::from_ids(&IDS, 1, 6).unwrap();
    let base = ForwardOptions {
        output_attentions: true,
        ..Default::default()
    };
    let plain = lm.model.forward(&inputs, None, &base).unwrap();
    let ones = vec![1.0; cfg.layers * cfg.attention_heads];
    let same = lm
        .model
        .forward(
            &inputs,
            None,
            &ForwardOptions {
                head_mask: Some(&ones),
                ..base.clone()
            },
        )
        .unwrap();
    assert_eq!(
        vals(&plain.last_hidden_state),
        vals(&same.last_hidden_state)
    );
    let mut off = ones.clone();
    off[1] = 0.0; // layer 0, head 1
    let masked = lm
        .model
        .forward(
            &inputs,
            None,
            &ForwardOptions {
                head_mask: Some(&off),
                ..base.clone()
            },
        )
        .unwrap();
    let a = vals(&masked.attentions.as_ref().unwrap()[0]);
    assert!(
        a[36..72].iter().all(|&p| p == 0.0),
        "head 1 of layer 0 is silenced"
    );
    assert_eq!(
        &a[..36],
        &vals(&plain.attentions.as_ref().unwrap()[0])[..36]
    );
    assert!(
        max_diff(
            &vals(&plain.last_hidden_state),
            &vals(&masked.last_hidden_state)
        ) > 1e-4
    );
    let short = [1.0; 3];
    assert!(lm
        .model
        .forward(
            &inputs,
            None,
            &ForwardOptions {
                head_mask: Some(&short),
                ..base
            }
        )
        .is_err());
}

/// Decoding `next` after `prefix` from a cache.
fn decode_after(lm: &TextForCausalLM, cache: &mut KvCache, next: &[u32]) -> Vec<f32> {
    let step = TextInputs::from_ids(next, next.len(), 1).unwrap();
    let out = lm
        .forward(
            &step,
            Some(cache),
            &ForwardOptions::default(),
            LogitsMode::Last,
            None,
        )
        .unwrap();
    vals(out.logits.as_ref().unwrap())
}

#[test]
fn rows_with_different_cache_lengths_decode_like_separate_runs() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let v = cfg.vocab_size;
    // Prefill two rows of 6 tokens, then cut row 0 back to 3 tokens.
    let two = [IDS, [0, 5, 6, 7, 8, 9]].concat();
    let mut cache = lm.model.new_cache(2, 8).unwrap();
    lm.forward(
        &TextInputs::from_ids(&two, 2, 6).unwrap(),
        Some(&mut cache),
        &ForwardOptions::default(),
        LogitsMode::None,
        None,
    )
    .unwrap();
    cache.truncate_row(0, 3);
    assert_eq!(cache.seq_lens(), &[3, 6]);
    let got = decode_after(&lm, &mut cache, &[21, 22]);
    assert_eq!(cache.seq_lens(), &[4, 7]);
    // Row 0 alone: its first three tokens, then 21.
    for (row, prefix, next) in [(0, &two[..3], 21), (1, &two[6..], 22)] {
        let mut alone = lm.model.new_cache(1, 8).unwrap();
        let pre = TextInputs::from_ids(prefix, 1, prefix.len()).unwrap();
        lm.forward(
            &pre,
            Some(&mut alone),
            &ForwardOptions::default(),
            LogitsMode::None,
            None,
        )
        .unwrap();
        let want = decode_after(&lm, &mut alone, &[next]);
        assert!(
            max_diff(&got[row * v..(row + 1) * v], &want) < 1e-5,
            "row {row}"
        );
    }
}

#[test]
fn selected_rows_continue_like_the_originals() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let mut cache = lm.model.new_cache(1, 4).unwrap();
    lm.forward(
        &TextInputs::from_ids(&IDS[..3], 1, 3).unwrap(),
        Some(&mut cache),
        &ForwardOptions::default(),
        LogitsMode::None,
        None,
    )
    .unwrap();
    let mut three = cache.select_rows(&[0, 0, 0]).unwrap();
    let got = decode_after(&lm, &mut three, &[4, 5, 4]);
    let want = decode_after(&lm, &mut cache, &[4]);
    let v = cfg.vocab_size;
    assert!(max_diff(&got[..v], &want) < 1e-6);
    assert!(max_diff(&got[2 * v..], &want) < 1e-6);
    assert!(max_diff(&got[v..2 * v], &want) > 1e-4);
    // The cache grew past its capacity of 4 on the way.
    assert!(cache.capacity() >= 4 && cache.seq_lens() == [4]);
}

#[test]
fn cache_continues_a_full_forward() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let full = lm
        .forward(
            &TextInputs::from_ids(&IDS, 1, 6).unwrap(),
            None,
            &ForwardOptions::default(),
            LogitsMode::All,
            None,
        )
        .unwrap();
    let mut cache = lm.model.new_cache(1, 2).unwrap(); // grows as needed
    let mut got = Vec::new();
    for (i, &id) in IDS.iter().enumerate() {
        let out = lm
            .forward(
                &TextInputs::from_ids(&[id], 1, 1).unwrap(),
                Some(&mut cache),
                &ForwardOptions::default(),
                LogitsMode::Last,
                None,
            )
            .unwrap();
        assert_eq!(cache.seq_lens(), &[i + 1]);
        got.extend(vals(out.logits.as_ref().unwrap()));
    }
    assert!(max_diff(&got, &vals(full.logits.as_ref().unwrap())) < 1e-5);
}

#[test]
fn bad_inputs_give_typed_errors() {
    let cfg = cfg();
    let lm = random_model(&cfg);
    let opts = ForwardOptions::default();
    let img = Tensor::from_vec(vec![0.5; 2 * 16], &[1, 2, 16], &Device::Cpu).unwrap();
    let pm = [0, 1, 1, 1, 0, 0];
    let inputs = TextInputs::from_ids(&IDS, 1, 6)
        .unwrap()
        .with_image_embeds(&img, &pm);
    assert!(matches!(
        lm.model.forward(&inputs, None, &opts),
        Err(Error::ImageTokenCount {
            positions: 3,
            rows: 2,
            ..
        })
    ));
    let bad_mask = [1, 1, 2, 1, 1, 1];
    let inputs = TextInputs::from_ids(&IDS, 1, 6)
        .unwrap()
        .with_attention_mask(&bad_mask);
    assert!(matches!(
        lm.model.forward(&inputs, None, &opts),
        Err(Error::InvalidInput { .. })
    ));
    let short_mask = [1, 1];
    let inputs = TextInputs::from_ids(&IDS, 1, 6)
        .unwrap()
        .with_attention_mask(&short_mask);
    assert!(matches!(
        lm.model.forward(&inputs, None, &opts),
        Err(Error::InputShape { .. })
    ));
    let oob = [0, 99];
    let inputs = TextInputs::from_ids(&oob, 1, 2).unwrap();
    assert!(matches!(
        lm.model.forward(&inputs, None, &opts),
        Err(Error::Tensor(_))
    ));
    let mut cache = lm.model.new_cache(2, 4).unwrap();
    let inputs = TextInputs::from_ids(&IDS, 1, 6).unwrap();
    assert!(matches!(
        lm.model.forward(&inputs, Some(&mut cache), &opts),
        Err(Error::Cache(_))
    ));
    assert!(matches!(
        TextInputs::from_ids(&IDS, 2, 2),
        Err(Error::InputShape { .. })
    ));
    let labels = [0, 1];
    assert!(lm
        .forward(
            &TextInputs::from_ids(&IDS, 1, 6).unwrap(),
            None,
            &opts,
            LogitsMode::All,
            Some(&labels)
        )
        .is_err());
}

/// Records the rayon pool thread each call of the wrapped block ran on (`None`: outside the pool).
#[derive(Debug)]
struct RecordThread(Box<dyn DecoderBlock>, Arc<Mutex<Vec<Option<usize>>>>);

impl DecoderBlock for RecordThread {
    fn forward(&self, input: BlockInput<'_>) -> kosmos_text::Result<BlockOutput> {
        if let Ok(mut seen) = self.1.lock() {
            seen.push(rayon::current_thread_index());
        }
        self.0.forward(input)
    }
}

#[test]
fn a_cpu_forward_runs_its_blocks_on_a_pool_thread() {
    // The caller (this test's thread) is outside rayon's pool; the pass must move onto a pool
    // thread once, so that its parallel ops fork from there instead of each waking the pool and
    // putting the caller to sleep.
    assert_eq!(rayon::current_thread_index(), None);
    let cfg = cfg();
    let mut lm = random_model(&cfg);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let original = lm.model.replace_layer(0, Box::new(Identity)).unwrap();
    lm.model
        .replace_layer(0, Box::new(RecordThread(original, Arc::clone(&seen))))
        .unwrap();
    let inputs = TextInputs::from_ids(&IDS, 1, 6).unwrap();
    lm.model
        .forward(&inputs, None, &ForwardOptions::default())
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        matches!(seen.as_slice(), [Some(_)]),
        "layer 0 ran once, on a pool thread: {seen:?}"
    );
}
