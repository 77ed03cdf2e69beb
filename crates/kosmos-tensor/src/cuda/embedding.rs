//! The text decoder's input embedding on the device (Kosmos2TextTransformer.forward_embedding):
//! token gather, image-embedding insertion, √d scale and sinusoidal positions in one kernel.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, to_i32, CudaResult};
use super::kernels::names;
use super::launch::{row_threads, NULL_PTR};

/// The sinusoid frequencies `f_j = exp(f32(j) · f32(-ln(10000) / (half - 1)))` for `dim`
/// (half = dim / 2), with torch's f32 rounding (reference §4.2; the CPU text model uses the
/// same recipe).
pub fn sinusoid_freqs(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = 10000f64.ln() / (half.saturating_sub(1).max(1)) as f64;
    let neg_step = (-step) as f32;
    (0..half)
        .map(|j| ((j as f32 * neg_step) as f64).exp() as f32)
        .collect()
}

/// For each token, the image-embedding row that replaces it (`-1`: keep the token), from HF's
/// `image_embeds_position_mask` `[batch, seq]` (row-major): the ones are filled in order with
/// the `image_rows` rows of `image_embeds` reshaped to `[batch * latent, dim]`.
pub fn image_rows_from_mask(mask: &[bool], image_rows: usize) -> CudaResult<Vec<i32>> {
    let ones = mask.iter().filter(|&&m| m).count();
    if ones != image_rows {
        return Err(invalid(
            "image_rows_from_mask",
            format!("the mask has {ones} image positions for {image_rows} image embeddings"),
        ));
    }
    let mut next = 0i32;
    Ok(mask
        .iter()
        .map(|&m| {
            if m {
                next += 1;
                next - 1
            } else {
                -1
            }
        })
        .collect())
}

/// Image embeddings to insert: `embeds` `[rows, dim]` and, per token, the row or -1.
pub struct ImageInsert<'a, T> {
    /// The projected image embeddings, `[rows, dim]`.
    pub embeds: &'a dyn DeviceRead<T>,
    /// Number of rows of `embeds`.
    pub rows: usize,
    /// Per token: the row of `embeds` that replaces it, or -1 (see [`image_rows_from_mask`]).
    pub row_of_token: &'a CudaSlice<i32>,
}

impl<T> std::fmt::Debug for ImageInsert<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageInsert")
            .field("rows", &self.rows)
            .field("tokens", &self.row_of_token.len())
            .finish()
    }
}

/// Which sinusoid row each token gets.
#[derive(Clone, Copy, Debug)]
pub enum TokenPositions<'a> {
    /// No positions are added.
    None,
    /// One position id per token (prefill; computed on the host by the text model).
    PerToken(&'a CudaSlice<i32>),
    /// Every token gets `counter[0] + add` (decode in a CUDA graph: HF gives every row
    /// `cache_len + 2`).
    Counter {
        /// Device counter (the cache length).
        counter: &'a CudaSlice<i32>,
        /// Added to it.
        add: i32,
    },
}

/// The embedding table and the constants of the input embedding.
#[derive(Debug)]
pub struct EmbeddingTable<'a, T> {
    /// `[vocab, dim]`.
    pub table: &'a CudaSlice<T>,
    /// Rows of `table`.
    pub vocab: usize,
    /// Width.
    pub dim: usize,
    /// `sinusoid_freqs(dim)` on the device.
    pub freqs: &'a CudaSlice<f32>,
    /// √dim for Kosmos-2 (`embed_scale`), 1.0 without scaling.
    pub scale: f32,
    /// The pad id, whose sinusoid row is zero.
    pub padding_idx: u32,
}

impl CudaBackend {
    /// Uploads token ids after checking each is below `vocab` (the kernel does not check).
    pub fn upload_ids(&self, ids: &[u32], vocab: usize) -> CudaResult<CudaSlice<u32>> {
        if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(invalid(
                "upload_ids",
                format!("token {i} has id {id}, vocab size is {vocab}"),
            ));
        }
        self.htod(ids)
    }

    /// `out[t] = (image row or table[ids[t]]) * scale + sinusoid(position[t])` for `n_tokens`
    /// tokens; `out` is `[n_tokens, dim]`.
    pub fn embed_tokens<T: CudaElement>(
        &self,
        table: &EmbeddingTable<'_, T>,
        ids: &CudaSlice<u32>,
        n_tokens: usize,
        image: Option<ImageInsert<'_, T>>,
        positions: TokenPositions<'_>,
        out: &mut impl DeviceWrite<T>,
    ) -> CudaResult<()> {
        let op = "embed_tokens";
        let dim = table.dim;
        if n_tokens == 0 || dim == 0 {
            return Err(invalid(op, "no tokens"));
        }
        let dim_i = to_i32(op, "dim", dim)?;
        check_len(op, "table", table.table.len(), table.vocab * dim)?;
        check_len(op, "freqs", table.freqs.len(), dim / 2)?;
        check_len(op, "ids", ids.len(), n_tokens)?;
        let mut ov = out.view_mut();
        check_len(op, "out", ov.len(), n_tokens * dim)?;
        let image_views = match &image {
            Some(img) => {
                let e = img.embeds.view();
                check_len(op, "image embeds", e.len(), img.rows * dim)?;
                check_len(op, "row_of_token", img.row_of_token.len(), n_tokens)?;
                Some((e, img.row_of_token.as_view()))
            }
            None => None,
        };
        let (pos_view, counter_view, pos_add) = match positions {
            TokenPositions::None => (None, None, 0),
            TokenPositions::PerToken(p) => {
                check_len(op, "positions", p.len(), n_tokens)?;
                (Some(p.as_view()), None, 0)
            }
            TokenPositions::Counter { counter, add } => {
                check_len(op, "counter", counter.len(), 1)?;
                (None, Some(counter.as_view()), add)
            }
        };
        let padding_idx = to_i32(op, "padding_idx", table.padding_idx as usize)?;
        let f = self.function(names::EMBED_TOKENS, T::SUFFIX, "")?;
        let (ids_v, table_v, freqs_v) =
            (ids.as_view(), table.table.as_view(), table.freqs.as_view());
        let mut l = self.stream().launch_builder(&f);
        l.arg(&ids_v).arg(&table_v);
        match &image_views {
            Some((e, r)) => l.arg(e).arg(r),
            None => l.arg(&NULL_PTR).arg(&NULL_PTR),
        };
        match &pos_view {
            Some(p) => l.arg(p),
            None => l.arg(&NULL_PTR),
        };
        match &counter_view {
            Some(c) => l.arg(c),
            None => l.arg(&NULL_PTR),
        };
        l.arg(&pos_add).arg(&freqs_v).arg(&mut ov);
        l.arg(&dim_i).arg(&table.scale).arg(&padding_idx);
        let cfg = LaunchConfig {
            grid_dim: (to_i32(op, "n_tokens", n_tokens)? as u32, 1, 1),
            block_dim: (row_threads(dim).min(256), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: matches `embed_tokens_<T>`; buffer lengths checked; ids are the caller's
        // contract (`upload_ids` checks host ids; device ids come from argmax/sampling).
        unsafe { l.launch(cfg) }.map_err(drv(op))?;
        Ok(())
    }

    /// `counter[0] += delta` on the device (advances a decode graph's cache length).
    pub fn counter_add(&self, counter: &mut CudaSlice<i32>, delta: i32) -> CudaResult<()> {
        check_len("counter_add", "counter", counter.len(), 1)?;
        let f = self.function(names::COUNTER_ADD, "", "")?;
        let mut l = self.stream().launch_builder(&f);
        l.arg(counter).arg(&delta);
        // SAFETY: matches `counter_add(int*, int)`.
        unsafe { l.launch(LaunchConfig::for_num_elems(1)) }.map_err(drv("counter_add"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freqs_follow_the_reference_recipe() {
        let f = sinusoid_freqs(2048);
        assert_eq!(f.len(), 1024);
        assert_eq!(f[0], 1.0);
        // Row 2, columns 0..4 of the reference check values: sin(f32(2) * f_j) in f64.
        let want = [0.9092974f32, 0.91661066, 0.923_567_8, 0.930175];
        for (j, w) in want.iter().enumerate() {
            let v = ((2.0f32 * f[j]) as f64).sin() as f32;
            assert_eq!(v, *w, "column {j}");
        }
        let cos = ((2.0f32 * f[1]) as f64).cos() as f32;
        assert_eq!(cos, -0.39978102);
    }

    #[test]
    fn image_rows_fill_in_row_major_order() {
        let mask = [false, true, true, false, true, false];
        assert_eq!(
            image_rows_from_mask(&mask, 3).unwrap(),
            vec![-1, 0, 1, -1, 2, -1]
        );
        assert!(image_rows_from_mask(&mask, 4).is_err());
    }
}
