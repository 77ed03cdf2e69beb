//! The KOSMOS-2 image-to-text projection.
//!
//! [`ImageToTextProjection`] mirrors HF's `Kosmos2ImageToTextProjection`
//! (`image_to_text_projection.*` weights): a dense layer from the vision width to the text
//! width, 64 learned latent queries, and a cross-attention ([`CrossAttention`], HF's
//! `KosmosTextAttention` without `inner_attn_ln`) whose queries are the latent queries and whose
//! keys/values are `[dense(image features); latent queries]`. Its output, `image_embeds`,
//! replaces the 64 image placeholder tokens of the text model. Weight names live in [`weights`].
//!
//! ```
//! use kosmos_projection::{ImageToTextProjection, ProjectionConfig};
//! use kosmos_tensor::{DType, Device, Tensor, WeightStore};
//!
//! // The `tiny` fixture checkpoint: vision width 32, text width 32, 4 heads, 4 latent queries.
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny");
//! let store = WeightStore::open(&dir.join("model.safetensors"))?;
//! let config = ProjectionConfig { latent_query_num: 4, vision_hidden_size: 32, embed_dim: 32, attention_heads: 4 };
//! let projection = ImageToTextProjection::load(&store, &config, DType::F32, &Device::Cpu)?;
//!
//! // Features of 2 images with 5 tokens each (CLS + 4 patches).
//! let features = Tensor::zeros(&[2, 5, 32], DType::F32, &Device::Cpu)?;
//! let out = projection.forward(&features, true)?;
//! assert_eq!(out.image_embeds.dims(), [2, 4, 32]);
//! // Each latent query attends over the 5 image tokens and the 4 latent queries.
//! assert_eq!(out.attentions.map(|a| a.dims().to_vec()), Some(vec![2, 4, 4, 9]));
//! # Ok::<(), kosmos_projection::Error>(())
//! ```

mod attention;
mod config;
mod error;
mod projection;
pub mod weights;

pub use attention::CrossAttention;
pub use config::ProjectionConfig;
pub use error::{Error, Result};
pub use projection::{ImageToTextProjection, ProjectionOutput};
