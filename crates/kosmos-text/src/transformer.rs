//! The decoder stack; mirrors HF `Kosmos2TextTransformer` (embeddings, blocks, final LayerNorm).

use kosmos_tensor::nn::LayerNorm;
use kosmos_tensor::{ops, Device, Tensor};

use crate::block::{BlockInput, DecoderBlock, TextBlock};
use crate::cache::KvCache;
use crate::config::Kosmos2TextConfig;
use crate::decode::DecodeStep;
use crate::error::{Error, Result};
use crate::inputs::{ForwardOptions, TextInputs, TextOutput, TextTokens};
use crate::mask::attention_mask;
use crate::positions::{
    position_ids_from_input_ids, position_ids_from_inputs_embeds, PositionMode, SinusoidalPositions,
};
use crate::weights::{load_layer_norm, TextNames, WeightSource};

/// The text decoder: scaled token embeddings with image insertion, sinusoidal positions, the
/// blocks and the final LayerNorm. Produces hidden states; [`crate::TextForCausalLM`] adds `lm_head`.
#[derive(Debug)]
pub struct TextTransformer {
    config: Kosmos2TextConfig,
    /// `embed_tokens.weight`, `[vocab_size, embed_dim]`.
    pub embed_tokens: Tensor,
    /// The sinusoidal positions (computed, not stored in the checkpoint).
    pub embed_positions: SinusoidalPositions,
    layers: Vec<Box<dyn DecoderBlock>>,
    /// The final LayerNorm.
    pub layer_norm: LayerNorm,
}

impl TextTransformer {
    /// Loads the decoder's weights (everything under `<root>model.`).
    pub fn load(
        cfg: &Kosmos2TextConfig,
        src: &dyn WeightSource,
        names: &TextNames,
    ) -> Result<Self> {
        cfg.validate()?;
        let embed_tokens = src.tensor(&names.embed_tokens(), &[cfg.vocab_size, cfg.embed_dim])?;
        let layers = (0..cfg.layers)
            .map(|i| {
                Ok(Box::new(TextBlock::load(cfg, src, &names.block(i))?) as Box<dyn DecoderBlock>)
            })
            .collect::<Result<Vec<_>>>()?;
        let layer_norm =
            load_layer_norm(src, &names.layer_norm(), cfg.embed_dim, cfg.layer_norm_eps)?;
        Self::from_parts(cfg, embed_tokens, layers, layer_norm)
    }

    /// Builds a decoder from parts (`layers.len()` must equal `cfg.layers`).
    pub fn from_parts(
        cfg: &Kosmos2TextConfig,
        embed_tokens: Tensor,
        layers: Vec<Box<dyn DecoderBlock>>,
        layer_norm: LayerNorm,
    ) -> Result<Self> {
        cfg.validate()?;
        if layers.len() != cfg.layers {
            return Err(Error::InvalidConfig(format!(
                "{} blocks given for a config with {} layers",
                layers.len(),
                cfg.layers
            )));
        }
        if embed_tokens.dims() != [cfg.vocab_size, cfg.embed_dim] {
            return Err(Error::InvalidConfig(format!(
                "embed_tokens has shape {:?}, expected [{}, {}]",
                embed_tokens.dims(),
                cfg.vocab_size,
                cfg.embed_dim
            )));
        }
        Ok(Self {
            config: cfg.clone(),
            embed_tokens,
            embed_positions: SinusoidalPositions::new(cfg.embed_dim, cfg.padding_idx()?),
            layers,
            layer_norm,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Kosmos2TextConfig {
        &self.config
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Block `i`.
    pub fn layer(&self, i: usize) -> Option<&dyn DecoderBlock> {
        self.layers.get(i).map(|b| b.as_ref())
    }

    /// Installs `block` as block `i` and returns the block it replaces (see [`DecoderBlock`]).
    pub fn replace_layer(
        &mut self,
        i: usize,
        block: Box<dyn DecoderBlock>,
    ) -> Result<Box<dyn DecoderBlock>> {
        let len = self.layers.len();
        let slot = self
            .layers
            .get_mut(i)
            .ok_or(Error::LayerIndex { index: i, len })?;
        Ok(std::mem::replace(slot, block))
    }

    /// An empty KV cache for this decoder: `batch` rows, room for `capacity` tokens each.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.config, batch, capacity, self.device())
    }

    /// HF `forward_embedding`: token (or given) embeddings, image embeddings inserted where
    /// `image_embeds_position_mask` is 1 (only when `past` is all zero), THEN the f32 multiply by
    /// `embed_scale`, then the sinusoidal positions. Returns `[batch, seq_len, embed_dim]`.
    pub fn embed(
        &self,
        inputs: &TextInputs<'_>,
        position_ids: &[u32],
        past_max: usize,
    ) -> Result<Tensor> {
        let (b, t, d) = (inputs.batch, inputs.seq_len, self.config.embed_dim);
        let mut x = match inputs.tokens {
            TextTokens::Ids(ids) => ops::embedding(ids, &self.embed_tokens)?.to_vec_f32()?,
            TextTokens::Embeds(e) => {
                if e.dims() != [b, t, d] {
                    return Err(Error::InputShape {
                        what: "inputs_embeds",
                        expected: format!("[{b}, {t}, {d}]"),
                        found: format!("{:?}", e.dims()),
                    });
                }
                e.to_vec_f32()?
            }
        };
        if let (Some(img), 0) = (inputs.image_embeds, past_max) {
            let mask = inputs
                .image_embeds_position_mask
                .ok_or(Error::InvalidInput {
                    what: "image_embeds_position_mask",
                    msg: "image_embeds were given without the mask of their positions".into(),
                })?;
            insert_image_embeds(&mut x, img, mask, b * t, d)?;
        }
        let scale = self.config.embed_scale();
        if scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        self.embed_positions.add_to(position_ids, &mut x);
        Ok(Tensor::from_vec(x, &[b, t, d], self.device())?)
    }

    /// The position ids of this step (explicit ones, or the pad rule with `past` per row).
    pub fn position_ids(&self, inputs: &TextInputs<'_>, past: &[usize]) -> Result<Vec<u32>> {
        let (b, t) = (inputs.batch, inputs.seq_len);
        if let Some(p) = inputs.position_ids {
            if p.len() != b * t {
                return Err(Error::InputShape {
                    what: "position_ids",
                    expected: format!("[{b}, {t}]"),
                    found: format!("{} values", p.len()),
                });
            }
            return Ok(p.to_vec());
        }
        let pad = self.embed_positions.padding_idx();
        Ok(match inputs.tokens {
            TextTokens::Ids(ids) => position_ids_from_input_ids(ids, t, pad, past),
            TextTokens::Embeds(_) => position_ids_from_inputs_embeds(t, pad, past),
        })
    }

    /// Runs the decoder on one step of `[batch, seq_len]` tokens, appending to `cache` if given.
    ///
    /// With a cache, positions and the causal mask continue after each row's cached tokens, and
    /// `inputs.attention_mask` (if any) must cover the cached tokens too, as in HF.
    pub fn forward(
        &self,
        inputs: &TextInputs<'_>,
        cache: Option<&mut KvCache>,
        opts: &ForwardOptions<'_>,
    ) -> Result<TextOutput> {
        // One pool entry per pass, not one per op.
        ops::in_pool_on(self.device(), || self.forward_pooled(inputs, cache, opts))
    }

    /// [`forward`](Self::forward) on a pool thread (on the CPU).
    fn forward_pooled(
        &self,
        inputs: &TextInputs<'_>,
        mut cache: Option<&mut KvCache>,
        opts: &ForwardOptions<'_>,
    ) -> Result<TextOutput> {
        let (b, t) = (inputs.batch, inputs.seq_len);
        let cfg = &self.config;
        if let TextTokens::Ids(ids) = inputs.tokens {
            if ids.len() != b * t {
                return Err(Error::InputShape {
                    what: "input_ids",
                    expected: format!("[{b}, {t}]"),
                    found: format!("{} ids", ids.len()),
                });
            }
        }
        let (past, real_past) = match cache.as_deref() {
            Some(c) => {
                c.check_fits(self.layers.len(), cfg.attention_heads, cfg.head_dim(), b)?;
                (c.seq_lens().to_vec(), c.real_lens())
            }
            None => (vec![0; b], vec![0; b]),
        };
        let past_max = past.iter().copied().max().unwrap_or(0);
        if let (Some(c), TextTokens::Ids(ids)) = (cache.as_deref_mut(), inputs.tokens) {
            let plain = !opts.output_hidden_states
                && !opts.output_attentions
                && opts.head_mask.is_none()
                && (inputs.image_embeds.is_none() || past_max > 0);
            if t == 1 && plain && self.supports_decode_step() {
                return self.forward_decode(inputs, ids, c, opts.position_mode);
            }
        }
        if let Some(c) = cache.as_deref_mut() {
            c.reserve(past_max + t)?;
        }
        let position_past = match opts.position_mode {
            PositionMode::HfCompat => &past,
            PositionMode::RealTokens => &real_past,
        };
        let position_ids = self.position_ids(inputs, position_past)?;
        let mut h = self.embed(inputs, &position_ids, past_max)?;
        let mask = attention_mask(b, t, &past, inputs.attention_mask, self.device())?;
        let heads = cfg.attention_heads;
        if let Some(hm) = opts.head_mask {
            if hm.len() != self.layers.len() * heads {
                return Err(Error::InputShape {
                    what: "head_mask",
                    expected: format!("[{}, {heads}]", self.layers.len()),
                    found: format!("{} factors", hm.len()),
                });
            }
        }

        let mut hidden_states = opts.output_hidden_states.then(Vec::new);
        let mut attentions = opts.output_attentions.then(Vec::new);
        let mut layer_caches: Vec<_> = match cache.as_deref_mut() {
            Some(c) => c.layer_caches().map(Some).collect(),
            None => (0..self.layers.len()).map(|_| None).collect(),
        };
        for (i, (layer, layer_cache)) in self.layers.iter().zip(layer_caches.iter_mut()).enumerate()
        {
            if let Some(hs) = hidden_states.as_mut() {
                hs.push(h.clone());
            }
            let out = layer.forward(BlockInput {
                hidden_states: &h,
                attention_mask: mask.as_ref(),
                cache: layer_cache.take(),
                head_mask: opts.head_mask.map(|hm| &hm[i * heads..(i + 1) * heads]),
                output_attentions: opts.output_attentions,
            })?;
            if let Some(a) = attentions.as_mut() {
                a.extend(out.attentions);
            }
            h = out.hidden_states;
        }
        drop(layer_caches);
        let last_hidden_state = self.layer_norm.forward(&h)?;
        if let Some(hs) = hidden_states.as_mut() {
            hs.push(last_hidden_state.clone());
        }
        if let Some(c) = cache {
            let real: Vec<bool> = match inputs.tokens {
                TextTokens::Ids(ids) => ids
                    .iter()
                    .map(|&id| id != self.embed_positions.padding_idx())
                    .collect(),
                TextTokens::Embeds(_) => vec![true; b * t],
            };
            c.advance(t, &real)?;
        }
        Ok(TextOutput {
            last_hidden_state,
            hidden_states,
            attentions,
        })
    }
}

impl TextTransformer {
    /// A one-token step with a cache through [`TextTransformer::decode_step`], with the cache's own
    /// workspace: only the returned hidden state is allocated.
    fn forward_decode(
        &self,
        inputs: &TextInputs<'_>,
        ids: &[u32],
        cache: &mut KvCache,
        position_mode: PositionMode,
    ) -> Result<TextOutput> {
        let step = DecodeStep {
            ids,
            attention_mask: inputs.attention_mask,
            position_ids: inputs.position_ids,
            position_mode,
        };
        let mut scratch = cache.take_scratch();
        let done = self.decode_step(&step, cache, None, &mut scratch);
        let hidden = done.and_then(|()| {
            Ok(Tensor::from_slice(
                scratch.hidden(),
                &[inputs.batch, 1, self.config.embed_dim],
                self.device(),
            )?)
        });
        cache.put_scratch(scratch);
        Ok(TextOutput {
            last_hidden_state: hidden?,
            hidden_states: None,
            attentions: None,
        })
    }
}

/// Overwrites the rows of `x` (`[rows, d]`) where `mask` is 1 with the image embeddings, in
/// row-major order of the 1s (HF `inputs_embeds[mask] = image_embeds.view(-1, d)`).
fn insert_image_embeds(
    x: &mut [f32],
    img: &Tensor,
    mask: &[u32],
    rows: usize,
    d: usize,
) -> Result<()> {
    if mask.len() != rows {
        return Err(Error::InputShape {
            what: "image_embeds_position_mask",
            expected: format!("{rows} values (batch x seq_len)"),
            found: format!("{}", mask.len()),
        });
    }
    if let Some(bad) = mask.iter().find(|&&v| v > 1) {
        return Err(Error::InvalidInput {
            what: "image_embeds_position_mask",
            msg: format!("values must be 0 or 1, found {bad}"),
        });
    }
    let (images, per_image) = match *img.dims() {
        [n, q, dd] if dd == d => (n, q),
        ref other => {
            return Err(Error::InputShape {
                what: "image_embeds",
                expected: format!("[images, tokens, {d}]"),
                found: format!("{other:?}"),
            })
        }
    };
    let positions = mask.iter().filter(|&&v| v == 1).count();
    if positions != images * per_image {
        return Err(Error::ImageTokenCount {
            positions,
            rows: images * per_image,
            images,
            per_image,
        });
    }
    let src = img.to_vec_f32()?;
    let targets = mask
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == 1)
        .map(|(r, _)| r);
    for (r, s) in targets.zip(src.chunks_exact(d)) {
        x[r * d..(r + 1) * d].copy_from_slice(s);
    }
    Ok(())
}
