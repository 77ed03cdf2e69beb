//! `Encoder`, mirroring HF `Kosmos2VisionEncoder`: the stack of encoder blocks.

use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::block::EncoderBlock;
use crate::config::Kosmos2VisionConfig;
use crate::error::{Error, Result};
use crate::layer::EncoderLayer;

/// What the encoder returns.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// The last block's output `[B, T, D]`.
    pub last_hidden_state: Tensor,
    /// The input of block 0 followed by every block's output (`len + 1` tensors), when asked for.
    pub hidden_states: Option<Vec<Tensor>>,
    /// Every block's attention probabilities `[B, H, T, T]`, when asked for.
    pub attentions: Option<Vec<Tensor>>,
}

/// The encoder blocks, run in order. Any block can be swapped for a custom [`EncoderBlock`].
#[derive(Debug)]
pub struct Encoder {
    layers: Vec<Box<dyn EncoderBlock>>,
}

impl Encoder {
    /// An encoder over the given blocks.
    pub fn new(layers: Vec<Box<dyn EncoderBlock>>) -> Self {
        Self { layers }
    }

    /// Loads the `num_hidden_layers` stock [`EncoderLayer`]s.
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                EncoderLayer::load(store, cfg, i, dtype, device)
                    .map(|l| Box::new(l) as Box<dyn EncoderBlock>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(layers))
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when the encoder has no blocks.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Block `index`, if it exists.
    pub fn layer(&self, index: usize) -> Option<&dyn EncoderBlock> {
        self.layers.get(index).map(|l| l.as_ref())
    }

    /// Replaces block `index` with `layer` and returns the previous block.
    ///
    /// ```
    /// use kosmos_tensor::{Device, Tensor};
    /// use kosmos_vision::{BlockOutput, Encoder, EncoderBlock, Result};
    ///
    /// /// A block that doubles its input.
    /// #[derive(Debug)]
    /// struct Double;
    /// impl EncoderBlock for Double {
    ///     fn forward(&self, x: &Tensor, _output_attentions: bool) -> Result<BlockOutput> {
    ///         Ok(BlockOutput { hidden_states: x.scale(2.0)?, attentions: None })
    ///     }
    /// }
    /// /// A block that adds one.
    /// #[derive(Debug)]
    /// struct AddOne;
    /// impl EncoderBlock for AddOne {
    ///     fn forward(&self, x: &Tensor, _output_attentions: bool) -> Result<BlockOutput> {
    ///         let one = Tensor::from_vec(vec![1.0; x.elem_count()], x.dims(), x.device())?;
    ///         Ok(BlockOutput { hidden_states: x.add(&one)?, attentions: None })
    ///     }
    /// }
    ///
    /// let mut encoder = Encoder::new(vec![Box::new(Double), Box::new(Double)]);
    /// let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 1, 2], &Device::Cpu)?;
    /// assert_eq!(encoder.forward(&x, false, false)?.last_hidden_state.to_vec_f32()?, [4.0, 8.0]);
    ///
    /// let old = encoder.replace_layer(1, Box::new(AddOne))?;
    /// assert_eq!(format!("{old:?}"), "Double");
    /// assert_eq!(encoder.forward(&x, false, false)?.last_hidden_state.to_vec_f32()?, [3.0, 5.0]);
    /// assert!(encoder.replace_layer(2, Box::new(AddOne)).is_err());
    /// # Ok::<(), kosmos_vision::Error>(())
    /// ```
    pub fn replace_layer(
        &mut self,
        index: usize,
        layer: Box<dyn EncoderBlock>,
    ) -> Result<Box<dyn EncoderBlock>> {
        let len = self.layers.len();
        let slot = self
            .layers
            .get_mut(index)
            .ok_or(Error::LayerIndex { index, len })?;
        Ok(std::mem::replace(slot, layer))
    }

    /// Runs every block on `inputs_embeds [B, T, D]`.
    ///
    /// As in HF, `hidden_states[0]` is the encoder's input and `hidden_states[i + 1]` is block
    /// `i`'s output; the last one equals `last_hidden_state`.
    pub fn forward(
        &self,
        inputs_embeds: &Tensor,
        output_hidden_states: bool,
        output_attentions: bool,
    ) -> Result<EncoderOutput> {
        let mut hidden_states = output_hidden_states.then(|| vec![inputs_embeds.clone()]);
        let mut attentions = output_attentions.then(Vec::new);
        let mut h = inputs_embeds.clone();
        for (index, layer) in self.layers.iter().enumerate() {
            let out = layer.forward(&h, output_attentions)?;
            h = out.hidden_states;
            if let Some(all) = hidden_states.as_mut() {
                all.push(h.clone());
            }
            if let Some(all) = attentions.as_mut() {
                all.push(
                    out.attentions
                        .ok_or(Error::MissingAttentions { layer: index })?,
                );
            }
        }
        Ok(EncoderOutput {
            last_hidden_state: h,
            hidden_states,
            attentions,
        })
    }
}
