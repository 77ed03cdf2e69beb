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
//! | `….generate`                         | [`Kosmos2ForConditionalGeneration::generate`], [`ImageSession`] |
//! | `TextStreamer`                       | [`Kosmos2ForConditionalGeneration::generate_text_stream`] |
//!
//! The parts live in their own crates, re-exported here: [`vision`] (CLIP ViT), [`projection`]
//! (latent-query cross-attention), [`text`] (decoder, KV cache, loss) and [`tensor`].

mod batch;
mod conditional;
mod config;
mod error;
mod generate;
pub mod generation;
mod model;
mod prefix_cache;
mod session;
pub mod task;
mod text_stream;
pub mod weights;

pub use batch::Kosmos2Batch;
pub use conditional::{Kosmos2ForConditionalGeneration, Kosmos2Output, LmOptions};
pub use config::Kosmos2Config;
pub use error::{Error, Result};
pub use generate::{prompts_from_processor, Kosmos2Lm};
pub use model::{
    ImageFeatures, Kosmos2ForwardOptions, Kosmos2Inputs, Kosmos2Model, Kosmos2ModelOutput,
};
pub use prefix_cache::PrefixStore;
pub use session::ImageSession;
pub use text_stream::{ProcessorDetokenizer, TextDelta};

pub use kosmos_projection as projection;
pub use kosmos_tensor as tensor;
pub use kosmos_text as text;
pub use kosmos_vision as vision;

pub use kosmos_tensor::{DType, Device, Tensor};
pub use kosmos_text::{KvCache, LogitsMode, PositionMode, TextInputs};
