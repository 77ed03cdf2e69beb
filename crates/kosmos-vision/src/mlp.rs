//! `VisionMlp`, mirroring HF `Kosmos2VisionMLP` (CLIP's MLP): fc1 → quick_gelu → fc2.

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{DType, Device, Tensor, WeightStore};

use crate::block::EncoderMlp;
use crate::config::{Kosmos2VisionConfig, VisionActivation};
use crate::error::Result;
use crate::weights::EncoderLayerKeys;

/// Two linear layers with the configured activation between them.
#[derive(Debug, Clone)]
pub struct VisionMlp {
    fc1: Linear,
    fc2: Linear,
    activation: VisionActivation,
}

impl VisionMlp {
    /// Builds the MLP from its two layers.
    pub fn new(fc1: Linear, fc2: Linear, activation: VisionActivation) -> Self {
        Self {
            fc1,
            fc2,
            activation,
        }
    }

    /// Loads the MLP of encoder layer `index`.
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        index: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let keys = EncoderLayerKeys::new(index);
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self::new(
            keys.fc1.load(store, f, d, dtype, device)?,
            keys.fc2.load(store, d, f, dtype, device)?,
            cfg.hidden_act,
        ))
    }
}

impl EncoderMlp for VisionMlp {
    fn forward(&self, hidden_states: &Tensor) -> Result<Tensor> {
        // fc1 with the activation in its epilogue (bitwise fc1, then the activation).
        let h = self
            .fc1
            .forward_act(hidden_states, self.activation.into())?;
        Ok(self.fc2.forward(&h)?)
    }
}
