//! The KOSMOS-2 processor, bit-exact with HF's `Kosmos2Processor`.
//!
//! This crate will hold the tokenizer, Pillow-exact image preprocessing, prompt and
//! bounding-box encoding, and grounding post-processing. It depends on no tensor
//! crate, so it can be used on its own.
