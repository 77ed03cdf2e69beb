//! The KOSMOS-2 vision tower: CLIP ViT-L/14 at 224 pixels.
//!
//! Mirrors HF's `Kosmos2VisionModel` (`vision_model.model.*` weights), block by block:
//!
//! | HF module                                | here                        |
//! |------------------------------------------|-----------------------------|
//! | `Kosmos2VisionConfig`                     | [`Kosmos2VisionConfig`]     |
//! | `Kosmos2VisionEmbeddings`                 | [`VisionEmbeddings`]        |
//! | `Kosmos2VisionAttention`                  | [`VisionAttention`]         |
//! | `Kosmos2VisionMLP`                        | [`VisionMlp`]               |
//! | `Kosmos2VisionEncoderLayer`               | [`EncoderLayer`]            |
//! | `Kosmos2VisionEncoder`                    | [`Encoder`]                 |
//! | `Kosmos2VisionModel` / `…Transformer`     | [`VisionModel`]             |
//! | `post_layernorm` + `F.normalize` in `Kosmos2Model.get_image_features` | [`VisionModel::image_features`] |
//!
//! Weight names live in [`weights`]. To replace one layer (or the attention or MLP inside one
//! layer) with your own implementation, implement [`EncoderBlock`] (or [`EncoderAttention`],
//! [`EncoderMlp`]) and use [`Encoder::replace_layer`] through [`VisionModel::encoder_mut`].
//!
//! ```
//! use kosmos_tensor::{DType, Device, Tensor, WeightStore};
//! use kosmos_vision::{Kosmos2VisionConfig, VisionForwardOptions, VisionModel};
//!
//! // The `tiny` fixture checkpoint: a random-weight KOSMOS-2 with a 2-layer, 32-wide vision tower.
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny");
//! let store = WeightStore::open(&dir.join("model.safetensors"))?;
//! let config = Kosmos2VisionConfig {
//!     hidden_size: 32,
//!     intermediate_size: 64,
//!     num_hidden_layers: 2,
//!     num_attention_heads: 4,
//!     image_size: 28,
//!     ..Kosmos2VisionConfig::kosmos2_patch14_224()
//! };
//! let model = VisionModel::load(&store, &config, DType::F32, &Device::Cpu)?;
//!
//! let pixels = Tensor::zeros(&[1, 3, 28, 28], DType::F32, &Device::Cpu)?;
//! let opts = VisionForwardOptions { output_hidden_states: true, ..Default::default() };
//! let out = model.forward(&pixels, &opts)?;
//! assert_eq!(out.last_hidden_state.dims(), [1, 5, 32]); // CLS + 2×2 patches
//! assert_eq!(out.hidden_states.map(|h| h.len()), Some(3)); // embeddings + one per layer
//!
//! // The projection's input: post_layernorm on every token, then L2-normalised.
//! let features = model.image_features(&out.last_hidden_state)?;
//! let norms: Vec<f32> = features.to_vec_f32()?.chunks(32).map(|t| t.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
//! assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
//! # Ok::<(), kosmos_vision::Error>(())
//! ```

mod attention;
mod block;
mod config;
mod embeddings;
mod encoder;
mod error;
mod interpolate;
mod layer;
mod mlp;
mod model;
pub mod weights;

pub use attention::VisionAttention;
pub use block::{BlockOutput, EncoderAttention, EncoderBlock, EncoderMlp};
pub use config::{Kosmos2VisionConfig, VisionActivation};
pub use embeddings::VisionEmbeddings;
pub use encoder::{Encoder, EncoderOutput};
pub use error::{Error, Result};
pub use layer::EncoderLayer;
pub use mlp::VisionMlp;
pub use model::{VisionForwardOptions, VisionModel, VisionOutput, IMAGE_FEATURES_NORM_EPS};
