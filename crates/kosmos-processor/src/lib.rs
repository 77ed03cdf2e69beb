//! The KOSMOS-2 processor, bit-exact with HF's `Kosmos2Processor` (transformers 5.24,
//! Pillow 13, tokenizers 0.23).
//!
//! - [`Kosmos2Processor::from_dir`] loads `tokenizer.json` (or `sentencepiece.bpe.model`),
//!   `preprocessor_config.json` and `tokenizer_config.json`.
//! - [`Kosmos2Processor::process`] builds `input_ids`, `attention_mask`,
//!   `image_embeds_position_mask` and `pixel_values` with HF's exact rules.
//! - [`image`], [`resize`] and [`preprocess`] reproduce Pillow's decoding, RGB conversion and
//!   fixed-point BICUBIC resize, then HF's rescale and normalise, bit for bit.
//! - [`boxes`] converts boxes to and from `<patch_index_XXXX>` tokens.
//! - [`post_process_generation`] extracts the caption and the grounded entities.
//!
//! This crate depends on no tensor crate, so it can be used on its own.
//!
//! ```
//! use kosmos_processor::boxes::{coordinate_to_patch_index, patch_index_to_coordinate};
//! use kosmos_processor::post_process_generation;
//!
//! let (ul, lr) = coordinate_to_patch_index([0.390625, 0.046875, 0.984375, 0.828125], 32).unwrap();
//! assert_eq!((ul, lr), (44, 863));
//! assert_eq!(patch_index_to_coordinate(44, 863, 32), [0.390625, 0.046875, 0.984375, 0.828125]);
//!
//! let g = post_process_generation(
//!     "<grounding> It is<phrase> a dog</phrase><object><patch_index_0044><patch_index_0863></object>.",
//!     true,
//! )
//! .unwrap();
//! assert_eq!(g.caption, "It is a dog.");
//! assert_eq!(g.entities[0].phrase, "a dog");
//! assert_eq!(g.entities[0].span, (6, 11));
//! ```

pub mod boxes;
pub mod config;
pub mod error;
pub mod gif;
pub mod image;
pub mod jpeg;
pub mod postprocess;
pub mod preprocess;
pub mod processor;
pub mod prompt;
pub mod pystr;
pub mod resize;
mod scratch;
pub mod spm;
pub mod tokenizer;

pub use boxes::{BoxError, BoxSpec, PixelBox};
pub use config::{PaddingSide, PreprocessorConfig, TokenizerConfig};
pub use error::ProcessorError;
pub use image::{DecodeLimits, ImageError, ImageInput};
pub use postprocess::{post_process_generation, Entity, Grounded, PostProcessError};
pub use preprocess::{ImageProcessor, PixelValues};
pub use processor::{Kosmos2Processor, Padding, ProcessOptions, ProcessorInput, ProcessorOutput};
pub use prompt::PhraseBoxes;
pub use tokenizer::KosmosTokenizer;
