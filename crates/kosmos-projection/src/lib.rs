//! The KOSMOS-2 image-to-text projection.
//!
//! This crate will hold `ImageToTextProjection`, mirroring HF's
//! `Kosmos2ImageToTextProjection`: a dense layer, 64 latent queries and a
//! cross-attention over `[image tokens; latent queries]`, producing `image_embeds`.
