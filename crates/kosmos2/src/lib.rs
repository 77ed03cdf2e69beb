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
//!
//! ## Five lines: caption an image and print its boxes
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets");
//! # let assets = std::env::var_os("KOSMOS2_ASSETS").map_or(assets, std::path::PathBuf::from);
//! # if !assets.join("images").is_dir() || !assets.join("kosmos-2-patch14-224").is_dir() {
//! #     let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
//! #     assert!(!ci, "CI=true: no shared assets at {} (set KOSMOS2_ASSETS)", assets.display());
//! #     eprintln!("skipping the crate example: no assets at {}", assets.display());
//! #     return Ok(());
//! # }
//! # // The tiny test model (random weights, the real vocabulary) has no tokenizer files, so the
//! # // processor comes from the real model's directory; for a full checkpoint both are `dir`.
//! # let model_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/models/tiny-realvocab");
//! # let processor_dir = assets.join("kosmos-2-patch14-224");
//! # let image = assets.join("images/snowman.jpg");
//! use kosmos2::{CaptionStyle, Kosmos2};
//! let kosmos = Kosmos2::builder(model_dir).processor_dir(processor_dir).load()?; // or Kosmos2::load(dir)
//! let out = kosmos.caption(image, CaptionStyle::Brief)?;
//! println!("{} ({:.0} ms to encode the image)", out.text, out.timing.image_encode_ms);
//! for e in &out.entities { println!("{}: {:?}", e.phrase, e.pixel_boxes); }
//! # assert!(out.text.starts_with("An image of"));
//! # Ok(())
//! # }
//! ```
//!
//! [`Kosmos2`] (module [`pipeline`]) runs every task of the demo (`caption`, `ground`, `refer`,
//! `vqa`) and [`Kosmos2::encode`] encodes an image once for several tasks.

mod agreement;
mod batch;
mod conditional;
mod config;
pub mod continuous;
mod error;
mod generate;
pub mod generation;
mod model;
pub mod pipeline;
mod precision;
mod prefix_cache;
mod quantize;
mod session;
pub mod task;
mod text_stream;
pub mod weights;

pub use agreement::{greedy_agreement, GreedyAgreement};
pub use batch::Kosmos2Batch;
pub use conditional::{Kosmos2ForConditionalGeneration, Kosmos2Output, LmOptions};
pub use config::Kosmos2Config;
pub use error::{Error, Result};
pub use generate::{prompts_from_processor, Kosmos2Lm};
pub use model::{
    ImageFeatures, Kosmos2ForwardOptions, Kosmos2Inputs, Kosmos2Model, Kosmos2ModelOutput,
};
pub use pipeline::{
    EncodedImage, GroundedEntity, GroundedOutput, Kosmos2, Kosmos2Builder, PipelineError,
    PipelineResult, Timing,
};
pub use precision::Precision;
pub use prefix_cache::PrefixStore;
pub use quantize::{quantize_checkpoint, QuantizeReport};
pub use session::ImageSession;
pub use task::{CaptionStyle, RegionBox, Task};
pub use text_stream::{ProcessorDetokenizer, TextDelta};

pub use kosmos_projection as projection;
pub use kosmos_tensor as tensor;
pub use kosmos_text as text;
pub use kosmos_vision as vision;

pub use kosmos_tensor::{DType, Device, Tensor};
pub use kosmos_text::{KvCache, LogitsMode, PositionMode, TextInputs};
