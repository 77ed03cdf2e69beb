//! The KOSMOS-2 text decoder.
//!
//! This crate will hold `Kosmos2TextConfig`, the decoder mirroring HF's
//! `Kosmos2TextTransformer` (scaled embeddings with image insertion, sinusoidal
//! positions, sub-LN attention and FFN blocks, final LayerNorm, tied `lm_head`)
//! and its preallocated KV cache.
