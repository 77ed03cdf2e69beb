//! One test per text-side error-prone detail of the reference (§10, §12), each against the HF
//! fixtures: the stock implementation matches, and the plausible mistake is caught.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::f64::consts::PI;

use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};
use kosmos_text::{
    AttentionOutput, BlockInput, DecoderAttention, DecoderBlock, DecoderFfn, ForwardOptions,
    Kosmos2TextConfig, LayerCache, LogitsMode, StoreWeights, TextAttention, TextBlock, TextFfn,
    TextForCausalLM, TextInputs, TextNames,
};
use support::{model_dir, rel_err, text_fixture, Fixture, TOL};

struct Setup {
    lm: TextForCausalLM,
    cfg: Kosmos2TextConfig,
    store: WeightStore,
    fx: Fixture,
    b: usize,
    t: usize,
}

fn setup(name: &str, file: &str) -> Setup {
    let dir = model_dir(&common::fixtures_dir(), name);
    let (cfg, store) = text_fixture(&dir);
    let src = StoreWeights::new(&store, DType::F32, &Device::Cpu);
    let lm = TextForCausalLM::load(&cfg, &src, &TextNames::kosmos2()).unwrap();
    let fx = Fixture::open(&dir.join(file));
    let s = fx.shape("input_ids");
    Setup {
        lm,
        cfg,
        store,
        fx,
        b: s[0],
        t: s[1],
    }
}

impl Setup {
    fn src(&self) -> StoreWeights<'_> {
        StoreWeights::new(&self.store, DType::F32, &Device::Cpu)
    }

    /// The embedding HF feeds block 0 (`text.hidden_states.0`), computed by `TextTransformer::embed`.
    fn embed(&self, position_ids: Option<&[u32]>) -> Vec<f32> {
        let (ids, pm, img) = (
            self.fx.u32("input_ids"),
            self.fx.u32("image_embeds_position_mask"),
            self.fx.tensor("image_embeds"),
        );
        let inputs = TextInputs::from_ids(&ids, self.b, self.t)
            .unwrap()
            .with_image_embeds(&img, &pm);
        let pos = match position_ids {
            Some(p) => p.to_vec(),
            None => self
                .lm
                .model
                .position_ids(&inputs, &vec![0; self.b])
                .unwrap(),
        };
        self.lm
            .model
            .embed(&inputs, &pos, 0)
            .unwrap()
            .to_vec_f32()
            .unwrap()
    }

    /// Block 0 run on the fixture's input embedding, compared with the fixture's block-0 output.
    fn block0_error(&self, block: &dyn DecoderBlock) -> f64 {
        let x = self.fx.tensor("text.hidden_states.0");
        let am = self.fx.u32("attention_mask");
        let mask =
            kosmos_text::attention_mask(self.b, self.t, &vec![0; self.b], Some(&am), &Device::Cpu)
                .unwrap();
        let out = block
            .forward(BlockInput {
                hidden_states: &x,
                attention_mask: mask.as_ref(),
                cache: None,
                head_mask: None,
                output_attentions: false,
            })
            .unwrap();
        rel_err(
            &out.hidden_states.to_vec_f32().unwrap(),
            &self.fx.f32("text.block_output.0"),
        )
    }

    /// The FFN of block 0 on the fixture's data: its output compared with the fixture's block-0
    /// output minus the (stock) attention half of the block, i.e. the FFN's own contribution.
    fn ffn0_error(&self, ffn: &dyn DecoderFfn) -> f64 {
        let x = self.fx.tensor("text.hidden_states.0");
        let am = self.fx.u32("attention_mask");
        let mask =
            kosmos_text::attention_mask(self.b, self.t, &vec![0; self.b], Some(&am), &Device::Cpu)
                .unwrap();
        let block = self.block0();
        let normed = block.self_attn_layer_norm.forward(&x).unwrap();
        let attn = self
            .attention0()
            .forward(&normed, mask.as_ref(), None, None, false)
            .unwrap();
        let mid = x.add(&attn.hidden_states).unwrap();
        let got = ffn
            .forward(&block.final_layer_norm.forward(&mid).unwrap())
            .unwrap();
        let want = self.fx.tensor("text.block_output.0").sub(&mid).unwrap();
        rel_err(&got.to_vec_f32().unwrap(), &want.to_vec_f32().unwrap())
    }

    fn block0(&self) -> TextBlock {
        TextBlock::load(&self.cfg, &self.src(), &TextNames::kosmos2().block(0)).unwrap()
    }

    fn attention0(&self) -> TextAttention {
        TextAttention::load(
            &self.cfg,
            &self.src(),
            &TextNames::kosmos2().block(0).self_attn,
        )
        .unwrap()
    }

    fn ffn0(&self) -> TextFfn {
        TextFfn::load(&self.cfg, &self.src(), &TextNames::kosmos2().block(0).ffn).unwrap()
    }
}

/// §12.1: image embeddings are inserted BEFORE the `sqrt(D)` scaling, so they are scaled too.
#[test]
fn image_embeds_are_inserted_before_scaling() {
    for name in support::MODELS {
        let s = setup(name, "reference.safetensors");
        let want = s.fx.f32("text.hidden_states.0");
        let got = s.embed(None);
        let err = rel_err(&got, &want);
        assert!(err <= 1e-6, "{name}: embedding error {err:e}");
        // The mistake: scale the token embeddings, then insert the unscaled image embeddings.
        let (d, scale) = (s.cfg.embed_dim, s.cfg.embed_scale());
        let (pm, img) = (
            s.fx.u32("image_embeds_position_mask"),
            s.fx.f32("image_embeds"),
        );
        let mut wrong = got.clone();
        let rows = pm
            .iter()
            .enumerate()
            .filter(|(_, &m)| m == 1)
            .map(|(r, _)| r);
        for (r, e) in rows.zip(img.chunks_exact(d)) {
            for (w, &e) in wrong[r * d..(r + 1) * d].iter_mut().zip(e) {
                *w += e - e * scale;
            }
        }
        assert!(
            rel_err(&wrong, &want) > 1e3 * TOL,
            "{name}: insertion after scaling not detected"
        );
    }
}

/// §12.5: positions count non-pad tokens only (pads get the zero row 1, real tokens 2, 3, …), and
/// the sinusoid uses `[sin | cos]` halves with step ln(1e4)/(D/2 - 1).
#[test]
fn positions_skip_pads_and_use_the_fairseq_sinusoid() {
    for name in support::MODELS {
        let s = setup(name, "reference_left_pad.safetensors");
        let want = s.fx.f32("text.hidden_states.0");
        assert!(rel_err(&s.embed(None), &want) <= 1e-6, "{name}");
        // The mistake: plain 2..T+1 positions that ignore the left pads.
        let naive: Vec<u32> = (0..s.b)
            .flat_map(|_| (0..s.t as u32).map(|i| i + 2))
            .collect();
        let padded = s.fx.u32("attention_mask").contains(&0);
        assert!(padded, "{name}: the left-pad case has pads");
        assert!(
            rel_err(&s.embed(Some(&naive)), &want) > 10.0 * TOL,
            "{name}: pad-blind positions not detected"
        );
        // The sinusoid itself: the fixture's pad positions hold exactly the scaled pad embedding
        // (zero position row), and real tokens hold embedding·scale + [sin | cos](p·f).
        let ids = s.fx.u32("input_ids");
        let d = s.cfg.embed_dim;
        let table = s.lm.model.embed_tokens.to_vec_f32().unwrap();
        for (r, &id) in ids.iter().enumerate() {
            let row = &want[r * d..(r + 1) * d];
            let emb = &table[id as usize * d..(id as usize + 1) * d];
            if id == 1 {
                for (&h, &e) in row.iter().zip(emb) {
                    assert_eq!(
                        h,
                        e * s.cfg.embed_scale(),
                        "{name}: pad position is not the zero row"
                    );
                }
            }
        }
    }
}

/// §4.3: the causal + padding mask, summed in f32, gives HF's attention probabilities in every
/// row — including the rows of pad queries, whose keys are all masked by a finite value.
#[test]
fn attention_mask_matches_hf_including_pad_rows() {
    for name in support::MODELS {
        let s = setup(name, "reference_left_pad.safetensors");
        let (ids, am) = (s.fx.u32("input_ids"), s.fx.u32("attention_mask"));
        let (pm, img) = (
            s.fx.u32("image_embeds_position_mask"),
            s.fx.tensor("image_embeds"),
        );
        let inputs = TextInputs::from_ids(&ids, s.b, s.t)
            .unwrap()
            .with_attention_mask(&am)
            .with_image_embeds(&img, &pm);
        let opts = ForwardOptions {
            output_attentions: true,
            ..Default::default()
        };
        let out =
            s.lm.forward(&inputs, None, &opts, LogitsMode::None, None)
                .unwrap();
        let attn = out.attentions.unwrap();
        for (i, a) in attn.iter().enumerate() {
            let key = format!("text.attentions.{i}");
            let (got, want) = (a.to_vec_f32().unwrap(), s.fx.f32(&key));
            assert!(rel_err(&got, &want) <= TOL, "{name} {key}");
            // Causal: no query attends to a later key; padding: no real query attends to a pad key.
            let (h, t) = (s.cfg.attention_heads, s.t);
            for (k, p) in got.iter().enumerate() {
                let (bi, qi, ki) = (k / (h * t * t), (k / t) % t, k % t);
                // (Pad queries keep finite NEG entries everywhere, so their rows are not causal.)
                let real_query = am[bi * t + qi] == 1;
                if real_query && (ki > qi || am[bi * t + ki] == 0) {
                    assert_eq!(
                        *p, 0.0,
                        "{name} {key}: masked probability at b{bi} q{qi} k{ki}"
                    );
                }
            }
        }
    }
}

/// `inner_attn_ln` moved after `out_proj` (a plausible misreading of "sub-LN").
#[derive(Debug)]
struct LnAfterOutProj(TextAttention);

impl DecoderAttention for LnAfterOutProj {
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache<'_>>,
        head_mask: Option<&[f32]>,
        output_attentions: bool,
    ) -> kosmos_text::Result<AttentionOutput> {
        let mut inner = self.0.clone();
        let ln = inner
            .inner_attn_ln
            .take()
            .expect("stock attention has inner_attn_ln");
        let out = inner.forward(x, mask, cache, head_mask, output_attentions)?;
        Ok(AttentionOutput {
            hidden_states: ln.forward(&out.hidden_states)?,
            attentions: out.attentions,
        })
    }
}

/// §12.4: `inner_attn_ln` sits after the head merge and BEFORE `out_proj`.
#[test]
fn inner_attn_ln_is_before_out_proj() {
    for name in support::MODELS {
        let s = setup(name, "reference.safetensors");
        assert!(s.block0_error(&s.block0()) <= TOL, "{name}: stock block");
        let wrong = s
            .block0()
            .with_attention(Box::new(LnAfterOutProj(s.attention0())));
        assert!(
            s.block0_error(&wrong) > 10.0 * TOL,
            "{name}: LN after out_proj not detected"
        );
    }
}

/// An FFN with a configurable activation and LayerNorm placement.
#[derive(Debug)]
struct VariantFfn {
    ffn: TextFfn,
    tanh_gelu: bool,
    ln_before_activation: bool,
}

fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())) as f32
}

impl DecoderFfn for VariantFfn {
    fn forward(&self, x: &Tensor) -> kosmos_text::Result<Tensor> {
        let mut h = self.ffn.fc1.forward(x)?;
        if self.ln_before_activation {
            h = self.ffn.ffn_layernorm.forward(&h)?;
        }
        h = if self.tanh_gelu {
            let v: Vec<f32> = h.to_vec_f32()?.into_iter().map(gelu_tanh).collect();
            Tensor::from_vec(v, h.dims(), h.device())?
        } else {
            ops::gelu_erf(&h)?
        };
        if !self.ln_before_activation {
            h = self.ffn.ffn_layernorm.forward(&h)?;
        }
        Ok(self.ffn.fc2.forward(&h)?)
    }
}

/// §12.4: `ffn_layernorm` (over ffn_dim) sits BETWEEN the activation and `fc2`.
#[test]
fn ffn_layernorm_is_between_gelu_and_fc2() {
    for name in support::MODELS {
        let s = setup(name, "reference.safetensors");
        assert!(s.ffn0_error(&s.ffn0()) <= TOL, "{name}: stock FFN");
        let same = VariantFfn {
            ffn: s.ffn0(),
            tanh_gelu: false,
            ln_before_activation: false,
        };
        assert!(
            s.block0_error(&s.block0().with_ffn(Box::new(same))) <= TOL,
            "{name}: variant equals stock"
        );
        let wrong = VariantFfn {
            ffn: s.ffn0(),
            tanh_gelu: false,
            ln_before_activation: true,
        };
        assert!(
            s.ffn0_error(&wrong) > 10.0 * TOL,
            "{name}: LN placement not detected"
        );
    }
}

/// §12.4 / §10.5: the text FFN uses the exact erf GELU, not the tanh approximation.
#[test]
fn text_gelu_is_erf_not_tanh() {
    for name in support::MODELS {
        let s = setup(name, "reference.safetensors");
        let tanh = VariantFfn {
            ffn: s.ffn0(),
            tanh_gelu: true,
            ln_before_activation: false,
        };
        let (stock, err) = (s.ffn0_error(&s.ffn0()), s.ffn0_error(&tanh));
        // The two GELUs differ by at most ~2e-4 absolute, so the gap is small but far above the
        // stock FFN's own error (~5e-7): the tanh form fails the parity tolerance, erf passes tightly.
        assert!(stock <= 1e-5, "{name}: stock FFN error {stock:e}");
        assert!(
            err > TOL && err > 50.0 * stock,
            "{name}: tanh GELU not detected ({err:e} vs stock {stock:e})"
        );
    }
}

/// §4.2 (inputs_embeds path): given unscaled embeddings instead of ids, the decoder scales them and
/// numbers positions 2..T+1; with no pads this is the ids path exactly.
#[test]
fn inputs_embeds_path_matches_ids_without_pads() {
    for name in support::MODELS {
        let s = setup(name, "reference_text_only.safetensors");
        let ids = s.fx.u32("input_ids");
        assert!(!ids.contains(&1), "{name}: the text-only case has no pads");
        let d = s.cfg.embed_dim;
        let embeds = ops::embedding(&ids, &s.lm.model.embed_tokens)
            .unwrap()
            .reshape(&[s.b, s.t, d])
            .unwrap();
        let inputs = TextInputs::from_embeds(&embeds).unwrap();
        let out =
            s.lm.forward(
                &inputs,
                None,
                &ForwardOptions::default(),
                LogitsMode::None,
                None,
            )
            .unwrap();
        let err = rel_err(
            &out.last_hidden_state.to_vec_f32().unwrap(),
            &s.fx.f32("text.last_hidden_state"),
        );
        assert!(err <= TOL, "{name}: {err:e}");
    }
}

/// The LM loss shifts labels by one and averages over the non -100 labels, like HF.
#[test]
fn loss_is_shifted_and_ignores_minus_100() {
    for name in support::MODELS {
        let s = setup(name, "reference.safetensors");
        let labels = s.fx.i64("labels");
        assert!(
            labels.contains(&-100),
            "{name}: labels have ignored entries"
        );
        let (ids, pm, img) = (
            s.fx.u32("input_ids"),
            s.fx.u32("image_embeds_position_mask"),
            s.fx.tensor("image_embeds"),
        );
        let inputs = TextInputs::from_ids(&ids, s.b, s.t)
            .unwrap()
            .with_image_embeds(&img, &pm);
        let out =
            s.lm.forward(
                &inputs,
                None,
                &ForwardOptions::default(),
                LogitsMode::All,
                Some(&labels),
            )
            .unwrap();
        let want = s.fx.f32("loss")[0];
        assert!(rel_err(&[out.loss.unwrap()], &[want]) <= TOL, "{name}");
        // Unshifted labels give a different loss.
        let logits = out.logits.unwrap();
        let mut unshifted = labels[1..].to_vec();
        unshifted.push(-100);
        let wrong = kosmos_text::lm_loss(&logits, &unshifted).unwrap().mean;
        assert!(rel_err(&[wrong], &[want]) > 10.0 * TOL, "{name}");
    }
}
