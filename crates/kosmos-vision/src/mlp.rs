//! `VisionMlp`, mirroring HF `Kosmos2VisionMLP` (CLIP's MLP): fc1 → quick_gelu → fc2.

use kosmos_tensor::nn::Linear;
use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

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
        let h = self.fc1.forward(hidden_states)?;
        let h = match self.activation {
            VisionActivation::QuickGelu => ops::quick_gelu(&h)?,
            VisionActivation::Gelu => ops::gelu_erf(&h)?,
        };
        Ok(self.fc2.forward(&h)?)
    }
}
