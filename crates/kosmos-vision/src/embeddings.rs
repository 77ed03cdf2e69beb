//! `VisionEmbeddings`, mirroring HF `Kosmos2VisionEmbeddings` (CLIP's): patchify conv, CLS, positions.

use kosmos_tensor::{ops, DType, Device, Tensor, WeightStore};

use crate::config::Kosmos2VisionConfig;
use crate::error::{Error, Result};
use crate::interpolate::bicubic_resize_hwc;
use crate::weights::EmbeddingsKeys;

/// Patch embedding (`Conv2d`, kernel = stride = patch, no bias) + `class_embedding` + position embedding.
#[derive(Debug, Clone)]
pub struct VisionEmbeddings {
    /// `[hidden, channels, patch, patch]`.
    patch_embedding: Tensor,
    /// `[hidden]`.
    class_embedding: Tensor,
    /// `[num_positions, hidden]`; row 0 is the CLS position.
    position_embedding: Tensor,
    hidden_size: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
}

impl VisionEmbeddings {
    /// Loads the three embedding weights of `cfg` from `store`.
    pub fn load(
        store: &WeightStore,
        cfg: &Kosmos2VisionConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let keys = EmbeddingsKeys::new();
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        Ok(Self {
            patch_embedding: store.get(
                &keys.patch_embedding,
                &[d, cfg.num_channels, p, p],
                dtype,
                device,
            )?,
            class_embedding: store.get(&keys.class_embedding, &[d], dtype, device)?,
            position_embedding: store.get(
                &keys.position_embedding,
                &[cfg.num_positions(), d],
                dtype,
                device,
            )?,
            hidden_size: d,
            num_channels: cfg.num_channels,
            image_size: cfg.image_size,
            patch_size: p,
        })
    }

    /// `pixel_values [B, C, H, W]` → embeddings `[B, 1 + (H/p)·(W/p), hidden]`.
    ///
    /// Without `interpolate_pos_encoding`, H and W must equal `image_size` (HF raises otherwise).
    /// With it, the patch rows of the position table are resized with torch bicubic to the
    /// patch grid of the input, unless the grid already has the table's size and H == W.
    pub fn forward(&self, pixel_values: &Tensor, interpolate_pos_encoding: bool) -> Result<Tensor> {
        let dims = pixel_values.dims();
        if dims.len() != 4 || dims[1] != self.num_channels || dims[0] == 0 {
            return Err(Error::PixelShape {
                channels: self.num_channels,
                shape: dims.to_vec(),
            });
        }
        let (batch, height, width) = (dims[0], dims[2], dims[3]);
        if !interpolate_pos_encoding && (height != self.image_size || width != self.image_size) {
            return Err(Error::ImageSize {
                height,
                width,
                expected: self.image_size,
            });
        }
        let p = self.patch_size;
        if height < p || width < p {
            return Err(Error::ImageTooSmall {
                height,
                width,
                patch: p,
            });
        }
        let (grid_h, grid_w) = (height / p, width / p);
        // A stride-p conv without padding ignores the trailing rows/columns that do not fill a patch.
        let mut pixels = pixel_values.clone();
        if !height.is_multiple_of(p) {
            pixels = pixels.narrow(2, 0, grid_h * p)?;
        }
        if !width.is_multiple_of(p) {
            pixels = pixels.narrow(3, 0, grid_w * p)?;
        }
        // [B, grid_h * grid_w, hidden], patch index = row * grid_w + col.
        let patch_embeds = ops::patchify_conv(&pixels, &self.patch_embedding, p)?;
        let class_embeds = self
            .class_embedding
            .to_dtype(patch_embeds.dtype())?
            .reshape(&[1, self.hidden_size])?
            .broadcast_left(batch)?;
        let embeddings = Tensor::cat(&[&class_embeds, &patch_embeds], 1)?;
        let positions = if interpolate_pos_encoding {
            self.interpolate_pos_encoding(grid_h * grid_w, height, width)?
        } else {
            self.position_embedding.clone()
        };
        Ok(embeddings.add(&positions.to_dtype(embeddings.dtype())?)?)
    }

    /// HF `interpolate_pos_encoding`: the position table for an input of `height × width` pixels
    /// that yields `num_patches` patches, `[1 + num_patches, hidden]`.
    pub fn interpolate_pos_encoding(
        &self,
        num_patches: usize,
        height: usize,
        width: usize,
    ) -> Result<Tensor> {
        let num_positions = self.position_embedding.dim(0)? - 1;
        if num_patches == num_positions && height == width {
            return Ok(self.position_embedding.clone());
        }
        let side = (num_positions as f64).sqrt().round() as usize;
        if side * side != num_positions {
            return Err(Error::InvalidConfig(format!(
                "cannot interpolate a position table of {num_positions} patch rows: not a square grid"
            )));
        }
        let d = self.hidden_size;
        let table = self.position_embedding.to_vec_f32()?;
        let (new_h, new_w) = (height / self.patch_size, width / self.patch_size);
        // Rows 1.. form a [side, side, d] grid, channels last.
        let resized = bicubic_resize_hwc(&table[d..], (side, side), d, (new_h, new_w));
        let mut out = Vec::with_capacity((1 + new_h * new_w) * d);
        out.extend_from_slice(&table[..d]);
        out.extend_from_slice(&resized);
        let out = Tensor::from_vec(
            out,
            &[1 + new_h * new_w, d],
            self.position_embedding.device(),
        )?;
        Ok(out.to_dtype(self.position_embedding.dtype())?)
    }
}
