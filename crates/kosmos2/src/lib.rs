//! kosmos2: fast, exact KOSMOS-2 inference in Rust.
//!
//! | HF                                   | here                                   |
//! |--------------------------------------|----------------------------------------|
//! | `Kosmos2Config`                      | [`Kosmos2Config`]                      |
//! | `Kosmos2Model`                       | [`Kosmos2Model`]                       |
//! | `Kosmos2ForConditionalGeneration`    | [`Kosmos2ForConditionalGeneration`]    |
//! | `Kosmos2ModelOutput`                 | [`Kosmos2ModelOutput`]                 |
//! | `…ForConditionalGenerationModelOutput` | [`Kosmos2Output`]                    |
//! | `get_image_features`                 | [`Kosmos2Model::get_image_features`]   |
//!
//! The parts live in their own crates, re-exported here: [`vision`] (CLIP ViT), [`projection`]
//! (latent-query cross-attention), [`text`] (decoder, KV cache, loss) and [`tensor`].

mod batch;
mod conditional;
mod config;
mod error;
pub mod generation;
mod model;
pub mod task;
pub mod weights;

pub use batch::Kosmos2Batch;
pub use conditional::{Kosmos2ForConditionalGeneration, Kosmos2Output, LmOptions};
pub use config::Kosmos2Config;
pub use error::{Error, Result};
pub use model::{
    ImageFeatures, Kosmos2ForwardOptions, Kosmos2Inputs, Kosmos2Model, Kosmos2ModelOutput,
};

pub use kosmos_projection as projection;
pub use kosmos_tensor as tensor;
pub use kosmos_text as text;
pub use kosmos_vision as vision;

pub use kosmos_tensor::{DType, Device, Tensor};
pub use kosmos_text::{KvCache, LogitsMode, PositionMode, TextInputs};
