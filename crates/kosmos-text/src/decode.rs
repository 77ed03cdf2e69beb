//! The allocation-free decode step: one new token per cache row through the stock decoder
//! (HF `Kosmos2TextTransformer.forward` with `seq_len = 1` and a cache), every intermediate in a
//! reused [`DecodeScratch`], keys and values written in place into the preallocated [`KvCache`].

use kosmos_tensor::nn::Linear;
use kosmos_tensor::ops::{self, DecodeAttention};
use kosmos_tensor::Device;

use crate::attention::TextAttention;
use crate::block::TextBlock;
use crate::cache::KvCache;
use crate::causal_lm::TextForCausalLM;
use crate::config::TextActivation;
use crate::error::{Error, Result};
use crate::ffn::TextFfn;
use crate::mask::mask_into;
use crate::positions::PositionMode;
use crate::transformer::TextTransformer;

/// One decode step's inputs: a token per cache row.
///
/// ```
/// use kosmos_text::{DecodeStep, PositionMode};
/// let mask = [0, 1, 1, 1, 1, 1];
/// let step = DecodeStep::new(&[7, 9])
///     .with_attention_mask(&mask)
///     .with_position_mode(PositionMode::RealTokens);
/// assert_eq!(step.ids, &[7, 9]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DecodeStep<'a> {
    /// The new token of each cache row.
    pub ids: &'a [u32],
    /// `[rows, cached + 1]` of 0/1 (1 = attend), as in [`crate::TextInputs::attention_mask`].
    pub attention_mask: Option<&'a [u32]>,
    /// Explicit position ids (one per row), overriding the pad rule.
    pub position_ids: Option<&'a [u32]>,
    /// How positions count the cached tokens.
    pub position_mode: PositionMode,
}

impl<'a> DecodeStep<'a> {
    /// A step feeding `ids[r]` to cache row `r`, HF's position rule, no mask.
    pub fn new(ids: &'a [u32]) -> Self {
        Self {
            ids,
            attention_mask: None,
            position_ids: None,
            position_mode: PositionMode::HfCompat,
        }
    }

    /// Adds the attention mask over the cached tokens and the new one (`[rows, cached + 1]`).
    pub fn with_attention_mask(mut self, mask: &'a [u32]) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Sets explicit position ids (one per row).
    pub fn with_position_ids(mut self, position_ids: &'a [u32]) -> Self {
        self.position_ids = Some(position_ids);
        self
    }

    /// Sets how positions count the cached tokens.
    pub fn with_position_mode(mut self, mode: PositionMode) -> Self {
        self.position_mode = mode;
        self
    }
}

/// Every intermediate of one decode step, reused from step to step.
///
/// Buffers are sized for the step's rows and keys on each call and only grow (geometrically, as
/// `Vec` does) when a step needs more than any before it: with the KV cache reserved for the whole
/// generation, steps after the first allocate nothing. A scratch may serve any model and batch
/// size; [`DecodeScratch::new`] sizes it up front.
///
/// ```
/// use kosmos_text::{DecodeScratch, Kosmos2TextConfig};
/// let cfg = Kosmos2TextConfig { embed_dim: 8, attention_heads: 2, ffn_dim: 16, vocab_size: 12,
///     ..Default::default() };
/// let scratch = DecodeScratch::new(&cfg, 2, 32);
/// assert_eq!(scratch.rows(), 0); // nothing decoded yet
/// assert!(scratch.logits().is_empty() && scratch.hidden().is_empty());
/// println!("{scratch:?}"); // sizes only
/// ```
#[derive(Clone, Default)]
pub struct DecodeScratch {
    /// The residual stream `[rows, D]`.
    h: Vec<f32>,
    /// The next residual stream (swapped with `h`).
    sum: Vec<f32>,
    /// LayerNorm outputs `[rows, D]`.
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, heads merged, `[rows, D]`.
    attn: Vec<f32>,
    /// `out_proj` / `fc2` output `[rows, D]`.
    o: Vec<f32>,
    /// `fc1` output `[rows, F]`.
    f1: Vec<f32>,
    /// `ffn_layernorm` output `[rows, F]`.
    f2: Vec<f32>,
    /// The last hidden state (after the final LayerNorm) `[rows, D]`.
    hidden: Vec<f32>,
    /// `[rows, V]`.
    logits: Vec<f32>,
    /// Attention probabilities `[rows, heads, keys]`.
    scores: Vec<f32>,
    /// The additive mask `[rows, keys]`.
    mask: Vec<f32>,
    /// One sinusoid row `[D]`.
    pos_row: Vec<f32>,
    positions: Vec<u32>,
    past: Vec<usize>,
    real: Vec<bool>,
    rows: usize,
    vocab: usize,
}

/// Sizes only (the buffers may hold megabytes).
impl std::fmt::Debug for DecodeScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeScratch")
            .field("rows", &self.rows)
            .field("vocab", &self.vocab)
            .field("hidden_capacity", &self.hidden.capacity())
            .field("ffn_capacity", &self.f1.capacity())
            .field("scores_capacity", &self.scores.capacity())
            .finish_non_exhaustive()
    }
}

impl DecodeScratch {
    /// A scratch with room for `batch` rows attending to `keys` tokens, with logits.
    pub fn new(cfg: &crate::Kosmos2TextConfig, batch: usize, keys: usize) -> Self {
        let mut s = Self::default();
        s.size(
            cfg.embed_dim,
            cfg.ffn_dim,
            cfg.attention_heads,
            batch,
            keys,
            keys,
            cfg.vocab_size,
        );
        // Keep the capacity, show no results until a step ran.
        for buf in [
            &mut s.h,
            &mut s.sum,
            &mut s.x,
            &mut s.q,
            &mut s.k,
            &mut s.v,
            &mut s.attn,
            &mut s.o,
            &mut s.f1,
            &mut s.f2,
            &mut s.hidden,
            &mut s.logits,
            &mut s.scores,
        ] {
            buf.clear();
        }
        s.positions.clear();
        s.real.clear();
        s.rows = 0;
        s.vocab = 0;
        s
    }

    /// Sizes every buffer for one step with `keys` keys, keeping room for `cap_keys` (the cache's
    /// capacity), so the per-key buffers do not grow step by step.
    #[allow(clippy::too_many_arguments)]
    fn size(
        &mut self,
        d: usize,
        f: usize,
        heads: usize,
        rows: usize,
        keys: usize,
        cap_keys: usize,
        vocab: usize,
    ) {
        for buf in [
            &mut self.h,
            &mut self.sum,
            &mut self.x,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.attn,
            &mut self.o,
            &mut self.hidden,
        ] {
            buf.resize(rows * d, 0.0);
        }
        self.f1.resize(rows * f, 0.0);
        self.f2.resize(rows * f, 0.0);
        self.logits.resize(rows * vocab, 0.0);
        let cap_keys = cap_keys.max(keys);
        // `Vec::reserve` counts from the current length.
        self.scores
            .reserve((rows * heads * cap_keys).saturating_sub(self.scores.len()));
        self.scores.resize(rows * heads * keys, 0.0);
        // `mask_into` refills the mask.
        self.mask
            .reserve((rows * cap_keys).saturating_sub(self.mask.len()));
        self.pos_row.resize(d, 0.0);
        self.positions.resize(rows, 0);
        self.past.reserve(rows.saturating_sub(self.past.len()));
        self.real.resize(rows, false);
        self.rows = rows;
        self.vocab = vocab;
    }

    /// Rows of the last step.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The last step's final hidden states (after the final LayerNorm), `[rows, embed_dim]`.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// The last step's logits `[rows, vocab]` (empty when the step computed none).
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// The last step's logits, mutable (logits processors edit them in place).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }

    /// Row `r` of the last step's logits.
    pub fn logits_row(&self, r: usize) -> Option<&[f32]> {
        let v = self.vocab;
        (v > 0 && r < self.rows).then(|| &self.logits[r * v..(r + 1) * v])
    }

    /// The last step's position ids, one per row.
    pub fn position_ids(&self) -> &[u32] {
        &self.positions
    }
}

/// The stock block, attention and FFN behind `block`, if it is the stock one.
fn stock_parts(block: &dyn crate::DecoderBlock) -> Option<(&TextBlock, &TextAttention, &TextFfn)> {
    let b = block.as_text_block()?;
    Some((b, b.self_attn.as_text_attention()?, b.ffn.as_text_ffn()?))
}

impl TextTransformer {
    /// Whether [`decode_step`](Self::decode_step) can run: every block is the stock [`TextBlock`]
    /// (with the stock attention and FFN) and the weights are on the CPU.
    pub fn supports_decode_step(&self) -> bool {
        matches!(self.device(), Device::Cpu)
            && (0..self.num_layers()).all(|i| self.layer(i).and_then(stock_parts).is_some())
    }

    /// One decode step without allocating: feeds `step.ids[r]` to cache row `r`, writes the keys
    /// and values in place into `cache` (after each row's cached tokens), and leaves the final
    /// hidden states in [`DecodeScratch::hidden`] and, when `lm_head` (`[vocab, embed_dim]`) is
    /// given, the logits in [`DecodeScratch::logits`].
    ///
    /// The result is [`forward`](Self::forward) on a one-token step with this cache: the same
    /// positions and masks, and for one row the same GEMV and LayerNorm arithmetic; the attention's
    /// summation order differs, and for 2..=16 rows the projections use the batch-invariant GEMV
    /// instead of a GEMM (f32 rounding only). Allocation happens only when the cache or the scratch
    /// must grow: reserve the cache for the whole generation ([`KvCache::reserve`]) and steps
    /// allocate nothing. Replaced blocks ([`TextTransformer::replace_layer`]) are an error here
    /// ([`supports_decode_step`](Self::supports_decode_step)); `forward` still runs them.
    pub fn decode_step(
        &self,
        step: &DecodeStep<'_>,
        cache: &mut KvCache,
        lm_head: Option<&Linear>,
        scratch: &mut DecodeScratch,
    ) -> Result<()> {
        // One pool entry per step, not one per op (`ops::in_pool_on`); the step is CPU-only.
        ops::in_pool(|| self.decode_step_pooled(step, cache, lm_head, scratch))
    }

    /// [`decode_step`](Self::decode_step) on a pool thread.
    fn decode_step_pooled(
        &self,
        step: &DecodeStep<'_>,
        cache: &mut KvCache,
        lm_head: Option<&Linear>,
        scratch: &mut DecodeScratch,
    ) -> Result<()> {
        let cfg = self.config();
        let (d, f) = (cfg.embed_dim, cfg.ffn_dim);
        let (heads, hd) = cache.head_shape();
        let b = step.ids.len();
        if b == 0 {
            return Err(Error::InputShape {
                what: "input_ids",
                expected: "one id per cache row".into(),
                found: "0 ids".into(),
            });
        }
        cache.check_fits(self.num_layers(), cfg.attention_heads, cfg.head_dim(), b)?;
        if !self.supports_decode_step() {
            return Err(Error::InvalidInput {
                what: "decode_step",
                msg: "needs the stock blocks on the CPU (a block was replaced); use forward".into(),
            });
        }
        let vocab = match lm_head.map(Linear::dims) {
            Some([v, width]) if width == d && v > 0 => v,
            Some(dims) => {
                return Err(Error::InputShape {
                    what: "lm_head",
                    expected: format!("[vocab, {d}]"),
                    found: format!("{dims:?}"),
                })
            }
            None => 0,
        };
        if let Some(p) = step.position_ids {
            if p.len() != b {
                return Err(Error::InputShape {
                    what: "position_ids",
                    expected: format!("[{b}, 1]"),
                    found: format!("{} values", p.len()),
                });
            }
        }
        let s = scratch;
        s.past.clear();
        s.past.extend_from_slice(cache.seq_lens());
        let keys = s.past.iter().copied().max().unwrap_or(0) + 1;
        cache.reserve(keys)?;
        let cap = cache.capacity();
        s.size(d, f, heads, b, keys, cap, vocab);
        let has_mask = mask_into(b, 1, &s.past, step.attention_mask, &mut s.mask)?;

        // Positions (HF `create_position_ids_from_input_ids` with one token) and embeddings.
        let pad = self.embed_positions.padding_idx();
        for r in 0..b {
            let id = step.ids[r];
            s.real[r] = id != pad;
            s.positions[r] = match step.position_ids {
                Some(p) => p[r],
                None if id == pad => pad,
                None => {
                    let past = match step.position_mode {
                        PositionMode::HfCompat => s.past[r],
                        PositionMode::RealTokens => cache.real_len(r),
                    };
                    pad + past as u32 + 1
                }
            };
        }
        ops::embedding_into(step.ids, &self.embed_tokens, &mut s.h)?;
        let scale = cfg.embed_scale();
        if scale != 1.0 {
            s.h.iter_mut().for_each(|v| *v *= scale);
        }
        for (&p, row) in s.positions.iter().zip(s.h.chunks_exact_mut(d)) {
            self.embed_positions.row(p, &mut s.pos_row);
            row.iter_mut().zip(&s.pos_row).for_each(|(a, &b)| *a += b);
        }

        let shape = DecodeAttention {
            batch: b,
            heads,
            head_dim: hd,
            capacity: cap,
            keys,
        };
        for i in 0..self.num_layers() {
            let Some((blk, attn, ffn)) = self.layer(i).and_then(stock_parts) else {
                return Err(Error::LayerIndex {
                    index: i,
                    len: self.num_layers(),
                });
            };
            // Kosmos2TextBlock: h += self_attn(self_attn_layer_norm(h)).
            blk.self_attn_layer_norm.forward_into(&s.h, &mut s.x)?;
            attn.q_proj.forward_into(&s.x, &mut s.q)?;
            attn.k_proj.forward_into(&s.x, &mut s.k)?;
            attn.v_proj.forward_into(&s.x, &mut s.v)?;
            let (kc, vc) = cache.layer_slices_mut(i)?;
            for r in 0..b {
                for hh in 0..heads {
                    let dst = ((r * heads + hh) * cap + s.past[r]) * hd;
                    let src = r * d + hh * hd;
                    kc[dst..dst + hd].copy_from_slice(&s.k[src..src + hd]);
                    vc[dst..dst + hd].copy_from_slice(&s.v[src..src + hd]);
                }
            }
            let mask = has_mask.then_some(&s.mask[..]);
            ops::attention_decode_into(
                &s.q,
                kc,
                vc,
                shape,
                mask,
                attn.scaling,
                &mut s.scores,
                &mut s.attn,
            )?;
            let merged = match &attn.inner_attn_ln {
                Some(ln) => {
                    ln.forward_into(&s.attn, &mut s.x)?;
                    &s.x
                }
                None => &s.attn,
            };
            attn.out_proj.forward_into(merged, &mut s.o)?;
            // h = residual + attn; x = final_layer_norm(h), fused.
            let ln = &blk.final_layer_norm;
            ops::add_layer_norm_into(
                &s.o, &s.h, &ln.weight, &ln.bias, ln.eps, &mut s.sum, &mut s.x,
            )?;
            std::mem::swap(&mut s.h, &mut s.sum);
            // Kosmos2TextFFN: fc2(ffn_layernorm(act(fc1(x)))), then the residual.
            ffn.fc1.forward_into(&s.x, &mut s.f1)?;
            match ffn.activation {
                TextActivation::Gelu => ops::gelu_erf_inplace(&mut s.f1),
                TextActivation::QuickGelu => ops::quick_gelu_inplace(&mut s.f1),
            }
            ffn.ffn_layernorm.forward_into(&s.f1, &mut s.f2)?;
            ffn.fc2.forward_into(&s.f2, &mut s.o)?;
            s.h.iter_mut().zip(&s.o).for_each(|(h, &y)| *h += y);
        }
        self.layer_norm.forward_into(&s.h, &mut s.hidden)?;
        cache.advance(1, &s.real)?;
        if let Some(head) = lm_head {
            head.forward_into(&s.hidden, &mut s.logits)?;
        }
        Ok(())
    }
}

impl TextForCausalLM {
    /// [`TextTransformer::decode_step`] with this model's `lm_head`: returns the logits
    /// `[rows, vocab]`, borrowed from `scratch`. Allocates nothing once the cache and the scratch
    /// have room.
    pub fn decode_step<'s>(
        &self,
        step: &DecodeStep<'_>,
        cache: &mut KvCache,
        scratch: &'s mut DecodeScratch,
    ) -> Result<&'s [f32]> {
        self.model
            .decode_step(step, cache, Some(&self.lm_head), scratch)?;
        Ok(scratch.logits())
    }
}
