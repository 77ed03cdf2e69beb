//! kosmos2: fast, exact KOSMOS-2 inference in Rust.
//!
//! This facade crate will hold `Kosmos2Config`, model loading from a model
//! directory, `Kosmos2Model` / `Kosmos2ForConditionalGeneration` forward passes,
//! generation, and the grounded task API (caption, ground, refer, VQA).
