//! The KOSMOS-2 vision tower: CLIP ViT-L/14 at 224 pixels.
//!
//! This crate will hold `Kosmos2VisionConfig` and `VisionModel`, mirroring HF's
//! `Kosmos2VisionModel` / `Kosmos2VisionTransformer`: patch embedding, CLS token,
//! position embeddings, `pre_layrnorm`, 24 pre-LN encoder layers and `post_layernorm`.
