//! Reuse of the `<s><image>…</image>` prefix KV cache across prompts on the same image.
//!
//! Every KOSMOS-2 prompt starts with the same block: `<s>`, `<image>`, the 64 image placeholders
//! (replaced by the image embeddings) and `</image>`. With causal attention, no rotary terms and
//! positions counted from the first real token, the keys and values of that block depend only on the
//! image, so they are computed once per (image, prefix ids) and copied into each new prompt's cache.

use kosmos_tensor::Tensor;
use kosmos_text::{KvCache, TextInputs};

use crate::conditional::Kosmos2ForConditionalGeneration;
use crate::error::Result;
use crate::generation::PromptBatch;
use crate::model::{Kosmos2ForwardOptions, Kosmos2Inputs};

/// The stored prefix caches: one cache row per (image index, prefix ids).
///
/// A prefix is a row's tokens up to and including the one after its last image position (the
/// `</image>` tag). A store belongs to one set of image embeddings (an
/// [`ImageSession`](crate::ImageSession) owns one): the image indices name its images.
#[derive(Debug, Default, Clone)]
pub struct PrefixStore {
    keys: Vec<Key>,
    cache: Option<KvCache>,
    hits: usize,
    misses: usize,
}

/// One row's part in a reuse plan.
struct RowPrefix<'b> {
    image: usize,
    ids: &'b [u32],
    mask: &'b [bool],
}

impl RowPrefix<'_> {
    fn same(&self, image: usize, ids: &[u32], mask: &[bool]) -> bool {
        self.image == image && self.ids == ids && self.mask == mask
    }
}

/// What identifies a stored prefix: the image, the ids and the image positions.
type Key = (usize, Vec<u32>, Vec<bool>);

impl PrefixStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored prefixes.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Rows served from the store so far (`hits`) and prefixes computed (`misses`).
    pub fn hits_and_misses(&self) -> (usize, usize) {
        (self.hits, self.misses)
    }

    /// Forgets every stored prefix.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Bytes held by the stored keys and values.
    pub fn memory_bytes(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| {
            (0..c.num_layers())
                .filter_map(|l| c.layer(l))
                .map(|l| 4 * (l.keys().elem_count() + l.values().elem_count()))
                .sum()
        })
    }

    /// Plans a prefill of `batch` from stored prefixes: returns a cache whose row `r` holds the first
    /// `k` tokens of prompt `r` (computing and storing missing prefixes first), and `k`; `None` when
    /// the batch does not qualify (a row without image, or image positions after the common `k`).
    ///
    /// `k` is the same for every row: the shortest prefix, and at most each row's length minus one
    /// (the prefill must still run one token to produce logits).
    pub(crate) fn prepare(
        &mut self,
        model: &Kosmos2ForConditionalGeneration,
        images: &Tensor,
        row_images: &[Option<usize>],
        batch: &PromptBatch,
    ) -> Result<Option<(KvCache, usize)>> {
        let Some(masks) = batch.image_embeds_position_mask() else {
            return Ok(None);
        };
        let mut rows = Vec::with_capacity(batch.len());
        let mut k = usize::MAX;
        let mut last_image_pos = 0;
        for r in 0..batch.len() {
            let real = batch.real_ids(r);
            let mask = &masks[r][batch.pad_len(r)..];
            let (Some(last), Some(Some(image))) =
                (mask.iter().rposition(|&m| m), row_images.get(r))
            else {
                return Ok(None);
            };
            let end = (last + 2).min(real.len());
            k = k.min(end).min(real.len() - 1);
            last_image_pos = last_image_pos.max(last);
            rows.push(RowPrefix {
                image: *image,
                ids: &real[..end],
                mask: &mask[..end],
            });
        }
        if rows.is_empty() || last_image_pos >= k {
            return Ok(None);
        }
        let entries = self.lookup_or_compute(model, images, &rows)?;
        let Some(store) = &self.cache else {
            return Ok(None);
        };
        let mut cache = store.select_rows(&entries)?;
        cache.truncate(k);
        Ok(Some((cache, k)))
    }

    /// The store row of each prompt row, computing the missing prefixes (equal lengths together).
    fn lookup_or_compute(
        &mut self,
        model: &Kosmos2ForConditionalGeneration,
        images: &Tensor,
        rows: &[RowPrefix<'_>],
    ) -> Result<Vec<usize>> {
        let find = |keys: &[Key], p: &RowPrefix<'_>| {
            keys.iter().position(|(i, ids, m)| p.same(*i, ids, m))
        };
        let mut missing: Vec<&RowPrefix<'_>> = Vec::new();
        for p in rows {
            let known = find(&self.keys, p).is_some()
                || missing.iter().any(|m| m.same(p.image, p.ids, p.mask));
            if !known {
                missing.push(p);
            }
        }
        let mut lens: Vec<usize> = missing.iter().map(|p| p.ids.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        for len in lens {
            let group: Vec<&RowPrefix<'_>> = missing
                .iter()
                .copied()
                .filter(|p| p.ids.len() == len)
                .collect();
            let computed = compute_prefixes(model, images, &group)?;
            self.cache = Some(match self.cache.take() {
                Some(old) => KvCache::concat_rows(&[&old, &computed])?,
                None => computed,
            });
            self.keys.extend(
                group
                    .iter()
                    .map(|p| (p.image, p.ids.to_vec(), p.mask.to_vec())),
            );
            self.misses += group.len();
        }
        let mut out = Vec::with_capacity(rows.len());
        for p in rows {
            match find(&self.keys, p) {
                Some(i) => out.push(i),
                None => {
                    return Err(crate::Error::InvalidInput(
                        "prefix store: a prefix was not stored".into(),
                    ))
                }
            }
        }
        self.hits += rows.len();
        Ok(out)
    }
}

/// Runs `group` (prefixes of one length, no padding) through the decoder with their images and returns
/// the cache, one row per prefix, with exactly `len` slots.
fn compute_prefixes(
    model: &Kosmos2ForConditionalGeneration,
    images: &Tensor,
    group: &[&RowPrefix<'_>],
) -> Result<KvCache> {
    let (b, t) = (group.len(), group[0].ids.len());
    let ids: Vec<u32> = group.iter().flat_map(|p| p.ids.iter().copied()).collect();
    let picks = group
        .iter()
        .map(|p| images.narrow(0, p.image, 1))
        .collect::<kosmos_tensor::Result<Vec<_>>>()?;
    let img = Tensor::cat(&picks.iter().collect::<Vec<_>>(), 0)?;
    let pos_mask: Vec<u32> = group
        .iter()
        .flat_map(|p| p.mask.iter().map(|&m| u32::from(m)))
        .collect();
    let text = TextInputs::from_ids(&ids, b, t)?.with_image_embeds(&img, &pos_mask);
    let cache = model.model.new_cache(b, t)?;
    let out = model.model.forward(
        &Kosmos2Inputs::new(text),
        Some(cache),
        &Kosmos2ForwardOptions::default(),
    )?;
    out.past_key_values
        .ok_or_else(|| crate::Error::InvalidInput("the prefix forward returned no cache".into()))
}
