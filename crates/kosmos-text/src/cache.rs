//! The preallocated KV cache (HF `DynamicCache` for the text decoder), with a length per sequence.

use kosmos_tensor::{DType, Device, Tensor};

use crate::config::Kosmos2TextConfig;
use crate::decode::DecodeScratch;
use crate::error::{Error, Result};

/// The keys and values of one layer: `[batch, heads, capacity, head_dim]` each, in f32.
#[derive(Debug, Clone)]
pub struct LayerKv {
    k: Tensor,
    v: Tensor,
}

impl LayerKv {
    /// The whole key buffer, `[batch, heads, capacity, head_dim]` (slots past a row's length are stale).
    pub fn keys(&self) -> &Tensor {
        &self.k
    }

    /// The whole value buffer, `[batch, heads, capacity, head_dim]`.
    pub fn values(&self) -> &Tensor {
        &self.v
    }
}

/// One layer's cache as a block sees it during a forward pass: append this step's keys and values,
/// get back everything the new queries attend to.
#[derive(Debug)]
pub struct LayerCache<'a> {
    kv: &'a mut LayerKv,
    lens: &'a [usize],
}

impl LayerCache<'_> {
    /// The number of cached tokens of each row before this step.
    pub fn past_lens(&self) -> &[usize] {
        self.lens
    }

    /// Writes `k`, `v` (`[batch, heads, t, head_dim]`, any layout) after each row's cached tokens and
    /// returns views of the keys and values `[batch, heads, max_past + t, head_dim]`.
    ///
    /// With rows of different lengths, row `b`'s new tokens go to slots `lens[b]..lens[b] + t`; the
    /// slots after them are stale and the causal mask hides them ([`crate::attention_mask`]).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let dims = self.kv.k.dims().to_vec();
        let (batch, heads, cap, hd) = (dims[0], dims[1], dims[2], dims[3]);
        let t = k.dim(2)?;
        let expect = [batch, heads, t, hd];
        for (what, x) in [("keys", k), ("values", v)] {
            if x.dims() != expect {
                return Err(Error::Cache(format!(
                    "{what} have shape {:?}, expected {expect:?}",
                    x.dims()
                )));
            }
        }
        let max_past = self.lens.iter().copied().max().unwrap_or(0);
        if max_past + t > cap {
            return Err(Error::Cache(format!(
                "capacity {cap} is too small for {max_past} cached + {t} new tokens (reserve first)"
            )));
        }
        if self.lens.iter().all(|&l| l == max_past) {
            self.kv.k.write_narrow(2, max_past, k)?;
            self.kv.v.write_narrow(2, max_past, v)?;
        } else {
            // Per-row offsets: view the buffer as [batch * heads * capacity, head_dim], where the slots
            // of (row b, head h) are one contiguous run, and write each (b, h) run at its own offset.
            for (buf, src) in [(&mut self.kv.k, k), (&mut self.kv.v, v)] {
                let mut flat = buf.reshape(&[batch * heads * cap, hd])?;
                *buf = Tensor::zeros(&[1], DType::F32, &Device::Cpu)?; // release the shared handle
                for (b, &len) in self.lens.iter().enumerate() {
                    let row = src.narrow(0, b, 1)?;
                    for h in 0..heads {
                        let piece = row.narrow(1, h, 1)?.reshape_any(&[t, hd])?;
                        flat.write_narrow(0, (b * heads + h) * cap + len, &piece)?;
                    }
                }
                *buf = flat.reshape(&[batch, heads, cap, hd])?;
            }
        }
        Ok((
            self.kv.k.narrow(2, 0, max_past + t)?,
            self.kv.v.narrow(2, 0, max_past + t)?,
        ))
    }
}

/// Reshape that copies when the layout does not allow a view.
trait ReshapeAny {
    fn reshape_any(&self, shape: &[usize]) -> Result<Tensor>;
}

impl ReshapeAny for Tensor {
    fn reshape_any(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.contiguous()?.reshape(shape)?)
    }
}

/// A preallocated KV cache for every decoder layer, with a length per sequence.
///
/// Buffers are `[batch, heads, capacity, head_dim]` f32 per layer, allocated once; a forward
/// pass appends in place with `write_narrow` (no allocation while the capacity suffices; it grows
/// by copying otherwise). Each row also counts its real (non-pad) tokens, which
/// [`crate::PositionMode::RealTokens`] uses for positions.
///
/// ```
/// use kosmos_tensor::Device;
/// use kosmos_text::{Kosmos2TextConfig, KvCache};
/// let cfg = Kosmos2TextConfig { embed_dim: 8, attention_heads: 2, layers: 3, ..Default::default() };
/// let cache = KvCache::new(&cfg, 2, 16, &Device::Cpu)?;
/// assert_eq!((cache.batch(), cache.capacity(), cache.num_layers()), (2, 16, 3));
/// assert_eq!(cache.seq_lens(), &[0, 0]);
/// # Ok::<(), kosmos_text::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    lens: Vec<usize>,
    real: Vec<Vec<bool>>,
    heads: usize,
    head_dim: usize,
    capacity: usize,
    device: Device,
    /// The decode workspace [`crate::TextTransformer::forward`] uses for one-token steps.
    scratch: ScratchSlot,
}

/// A [`DecodeScratch`] kept with a cache; a clone of the cache starts without one (it is a
/// workspace, not state).
#[derive(Debug, Default)]
struct ScratchSlot(Option<Box<DecodeScratch>>);

impl Clone for ScratchSlot {
    fn clone(&self) -> Self {
        ScratchSlot(None)
    }
}

/// Per-row real-token flags with room for `capacity` tokens (so `advance` does not reallocate).
fn flags_with_capacity(src: &[bool], capacity: usize) -> Vec<bool> {
    let mut v = Vec::with_capacity(capacity.max(src.len()));
    v.extend_from_slice(src);
    v
}

impl KvCache {
    /// An empty cache for `batch` rows with room for `capacity` tokens per row.
    pub fn new(
        cfg: &Kosmos2TextConfig,
        batch: usize,
        capacity: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::with_shape(
            cfg.layers,
            batch,
            cfg.attention_heads,
            cfg.head_dim(),
            capacity,
            device,
        )
    }

    /// An empty cache with explicit sizes.
    pub fn with_shape(
        layers: usize,
        batch: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
    ) -> Result<Self> {
        let shape = [batch, heads, capacity, head_dim];
        let layers = (0..layers)
            .map(|_| {
                Ok(LayerKv {
                    k: Tensor::zeros(&shape, DType::F32, device)?,
                    v: Tensor::zeros(&shape, DType::F32, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            lens: vec![0; batch],
            real: (0..batch).map(|_| Vec::with_capacity(capacity)).collect(),
            heads,
            head_dim,
            capacity,
            device: device.clone(),
            scratch: ScratchSlot::default(),
        })
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Token slots per row.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cached tokens per row (pads included).
    pub fn seq_lens(&self) -> &[usize] {
        &self.lens
    }

    /// The longest row's length: HF's `cache.get_seq_length()` when all rows are equal.
    pub fn max_len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// Cached real (non-pad) tokens of row `row` (0 past the end).
    pub fn real_len(&self, row: usize) -> usize {
        self.real
            .get(row)
            .map_or(0, |r| r.iter().filter(|&&x| x).count())
    }

    /// Cached real (non-pad) tokens per row.
    pub fn real_lens(&self) -> Vec<usize> {
        self.real
            .iter()
            .map(|r| r.iter().filter(|&&x| x).count())
            .collect()
    }

    /// Layer `i`'s buffers.
    pub fn layer(&self, i: usize) -> Option<&LayerKv> {
        self.layers.get(i)
    }

    /// Makes room for `total` tokens per row (copies the buffers when it has to grow).
    pub fn reserve(&mut self, total: usize) -> Result<()> {
        if total <= self.capacity {
            return Ok(());
        }
        let new_cap = total.max(self.capacity + self.capacity / 2);
        let used = self.max_len();
        let shape = [self.batch(), self.heads, new_cap, self.head_dim];
        for l in &mut self.layers {
            for buf in [&mut l.k, &mut l.v] {
                let mut grown = Tensor::zeros(&shape, DType::F32, &self.device)?;
                if used > 0 {
                    grown.write_narrow(2, 0, &buf.narrow(2, 0, used)?)?;
                }
                *buf = grown;
            }
        }
        for flags in &mut self.real {
            flags.reserve(new_cap.saturating_sub(flags.len()));
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// The key and value buffers of layer `i` as mutable f32 slices `[batch, heads, capacity,
    /// head_dim]` (copied once first if their storage is shared, e.g. with a view).
    pub(crate) fn layer_slices_mut(&mut self, i: usize) -> Result<(&mut [f32], &mut [f32])> {
        let len = self.layers.len();
        let l = self
            .layers
            .get_mut(i)
            .ok_or(Error::LayerIndex { index: i, len })?;
        Ok((l.k.as_f32_slice_mut()?, l.v.as_f32_slice_mut()?))
    }

    /// Heads and head width of the buffers.
    pub(crate) fn head_shape(&self) -> (usize, usize) {
        (self.heads, self.head_dim)
    }

    /// Takes the cache's decode workspace (a fresh, empty one if it has none).
    pub(crate) fn take_scratch(&mut self) -> Box<DecodeScratch> {
        self.scratch.0.take().unwrap_or_default()
    }

    /// Gives the decode workspace back to the cache for the next step.
    pub(crate) fn put_scratch(&mut self, scratch: Box<DecodeScratch>) {
        self.scratch.0 = Some(scratch);
    }

    /// Splits the cache into the per-layer views a forward pass hands to its blocks.
    pub fn layer_caches(&mut self) -> impl Iterator<Item = LayerCache<'_>> {
        let lens = &self.lens;
        self.layers
            .iter_mut()
            .map(move |kv| LayerCache { kv, lens })
    }

    /// Records that every row received `real.len() / batch` new tokens; `real[b * t + i]` says
    /// whether new token `i` of row `b` is a real (non-pad) token.
    pub fn advance(&mut self, t: usize, real: &[bool]) -> Result<()> {
        if real.len() != self.batch() * t {
            return Err(Error::Cache(format!(
                "advance: {} flags for {} rows x {t} tokens",
                real.len(),
                self.batch()
            )));
        }
        for ((len, flags), new) in self
            .lens
            .iter_mut()
            .zip(&mut self.real)
            .zip(real.chunks(t.max(1)))
        {
            *len += t;
            flags.extend_from_slice(&new[..t]);
        }
        Ok(())
    }

    /// Forgets everything after the first `len` tokens of every row (keeps the buffers).
    pub fn truncate(&mut self, len: usize) {
        for row in 0..self.batch() {
            self.truncate_row(row, len);
        }
    }

    /// Forgets everything after the first `len` tokens of row `row` (no-op if it is shorter).
    pub fn truncate_row(&mut self, row: usize, len: usize) {
        if let (Some(l), Some(flags)) = (self.lens.get_mut(row), self.real.get_mut(row)) {
            *l = (*l).min(len);
            flags.truncate(*l);
        }
    }

    /// A new cache whose row `i` is this cache's row `rows[i]` (drop finished rows, reorder beams,
    /// or repeat one prefilled prompt for several continuations). Same capacity.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(Error::Cache(format!(
                "select_rows: row {bad} out of range ({} rows)",
                self.batch()
            )));
        }
        if rows.is_empty() {
            return Err(Error::Cache("select_rows: no rows selected".into()));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let pick = |t: &Tensor| -> Result<Tensor> {
                    let parts = rows
                        .iter()
                        .map(|&r| t.narrow(0, r, 1))
                        .collect::<kosmos_tensor::Result<Vec<_>>>()?;
                    let refs: Vec<&Tensor> = parts.iter().collect();
                    Ok(Tensor::cat(&refs, 0)?)
                };
                Ok(LayerKv {
                    k: pick(&l.k)?,
                    v: pick(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            lens: rows.iter().map(|&r| self.lens[r]).collect(),
            real: rows
                .iter()
                .map(|&r| flags_with_capacity(&self.real[r], self.capacity))
                .collect(),
            heads: self.heads,
            head_dim: self.head_dim,
            capacity: self.capacity,
            device: self.device.clone(),
            scratch: ScratchSlot::default(),
        })
    }

    /// One cache holding the rows of `caches` in order (e.g. prompt prefixes computed at different
    /// times, gathered into one store to [`select_rows`](Self::select_rows) from). The caches must
    /// agree on layers, heads and head size; the result has the largest of their capacities.
    pub fn concat_rows(caches: &[&KvCache]) -> Result<KvCache> {
        let first = caches
            .first()
            .ok_or_else(|| Error::Cache("concat_rows: no caches".into()))?;
        for c in caches {
            if c.num_layers() != first.num_layers()
                || c.heads != first.heads
                || c.head_dim != first.head_dim
            {
                return Err(Error::Cache(format!(
                    "concat_rows: a cache of {} layers x {} heads x {} next to one of {} x {} x {}",
                    c.num_layers(),
                    c.heads,
                    c.head_dim,
                    first.num_layers(),
                    first.heads,
                    first.head_dim
                )));
            }
        }
        let cap = caches.iter().map(|c| c.capacity).max().unwrap_or(0);
        let widen = |c: &KvCache, t: &Tensor| -> Result<Tensor> {
            if c.capacity == cap {
                return Ok(t.clone());
            }
            let mut wide = Tensor::zeros(
                &[c.batch(), c.heads, cap, c.head_dim],
                DType::F32,
                &c.device,
            )?;
            wide.write_narrow(2, 0, t)?;
            Ok(wide)
        };
        let layers = (0..first.num_layers())
            .map(|l| {
                let mut ks = Vec::with_capacity(caches.len());
                let mut vs = Vec::with_capacity(caches.len());
                for c in caches {
                    ks.push(widen(c, &c.layers[l].k)?);
                    vs.push(widen(c, &c.layers[l].v)?);
                }
                Ok(LayerKv {
                    k: Tensor::cat(&ks.iter().collect::<Vec<_>>(), 0)?,
                    v: Tensor::cat(&vs.iter().collect::<Vec<_>>(), 0)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            lens: caches.iter().flat_map(|c| c.lens.iter().copied()).collect(),
            real: caches
                .iter()
                .flat_map(|c| c.real.iter().map(|r| flags_with_capacity(r, cap)))
                .collect(),
            heads: first.heads,
            head_dim: first.head_dim,
            capacity: cap,
            device: first.device.clone(),
            scratch: ScratchSlot::default(),
        })
    }

    /// Checks that this cache fits a decoder of `layers` blocks, `heads` heads of `head_dim`, for
    /// a batch of `batch` rows.
    pub(crate) fn check_fits(
        &self,
        layers: usize,
        heads: usize,
        head_dim: usize,
        batch: usize,
    ) -> Result<()> {
        if self.num_layers() != layers || self.heads != heads || self.head_dim != head_dim {
            return Err(Error::Cache(format!(
                "built for {} layers x {} heads x {}, the decoder has {layers} x {heads} x {head_dim}",
                self.num_layers(),
                self.heads,
                self.head_dim
            )));
        }
        if self.batch() != batch {
            return Err(Error::Cache(format!(
                "holds {} rows, the input has {batch}",
                self.batch()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, base: f32) -> Vec<f32> {
        (0..n).map(|i| base + i as f32).collect()
    }

    #[test]
    fn uniform_append_writes_in_place_and_returns_the_prefix() {
        let dev = Device::Cpu;
        let mut cache = KvCache::with_shape(1, 2, 1, 2, 4, &dev).unwrap();
        let k1 = Tensor::from_vec(seq(2 * 2 * 2, 0.0), &[2, 1, 2, 2], &dev).unwrap();
        let (k, _) = cache
            .layer_caches()
            .next()
            .unwrap()
            .append(&k1, &k1)
            .unwrap();
        assert_eq!(k.dims(), &[2, 1, 2, 2]);
        drop(k);
        cache.advance(2, &[true; 4]).unwrap();
        let k2 = Tensor::from_vec(seq(4, 100.0), &[2, 1, 1, 2], &dev).unwrap();
        let (k, v) = cache
            .layer_caches()
            .next()
            .unwrap()
            .append(&k2, &k2)
            .unwrap();
        assert_eq!(k.dims(), &[2, 1, 3, 2]);
        assert_eq!(
            k.to_vec_f32().unwrap(),
            [0.0, 1.0, 2.0, 3.0, 100.0, 101.0, 4.0, 5.0, 6.0, 7.0, 102.0, 103.0]
        );
        assert_eq!(v.to_vec_f32().unwrap(), k.to_vec_f32().unwrap());
        drop((k, v));
        cache.advance(1, &[true, false]).unwrap();
        assert_eq!(cache.seq_lens(), &[3, 3]);
        assert_eq!(cache.real_lens(), [3, 2]);
    }

    #[test]
    fn per_row_lengths_append_at_each_rows_end() {
        let dev = Device::Cpu;
        let mut cache = KvCache::with_shape(1, 2, 2, 1, 4, &dev).unwrap();
        let k1 = Tensor::from_vec(seq(2 * 2 * 2, 1.0), &[2, 2, 2, 1], &dev).unwrap();
        drop(
            cache
                .layer_caches()
                .next()
                .unwrap()
                .append(&k1, &k1)
                .unwrap(),
        );
        cache.advance(2, &[true; 4]).unwrap();
        cache.truncate_row(0, 1);
        assert_eq!(cache.seq_lens(), &[1, 2]);
        let k2 = Tensor::from_vec(vec![50.0, 51.0, 60.0, 61.0], &[2, 2, 1, 1], &dev).unwrap();
        let (k, _) = cache
            .layer_caches()
            .next()
            .unwrap()
            .append(&k2, &k2)
            .unwrap();
        // Row 0 (len 1): slot 1 <- new, slot 2 stale (zero). Row 1 (len 2): slot 2 <- new.
        assert_eq!(k.dims(), &[2, 2, 3, 1]);
        assert_eq!(
            k.to_vec_f32().unwrap(),
            [1.0, 50.0, 0.0, 3.0, 51.0, 0.0, 5.0, 6.0, 60.0, 7.0, 8.0, 61.0]
        );
    }

    #[test]
    fn reserve_grows_and_keeps_contents() {
        let dev = Device::Cpu;
        let mut cache = KvCache::with_shape(2, 1, 1, 2, 2, &dev).unwrap();
        let k1 = Tensor::from_vec(seq(4, 1.0), &[1, 1, 2, 2], &dev).unwrap();
        for mut l in cache.layer_caches() {
            drop(l.append(&k1, &k1).unwrap());
        }
        cache.advance(2, &[true, true]).unwrap();
        let k2 = Tensor::from_vec(seq(2, 9.0), &[1, 1, 1, 2], &dev).unwrap();
        assert!(matches!(
            cache.layer_caches().next().unwrap().append(&k2, &k2),
            Err(Error::Cache(_))
        ));
        cache.reserve(3).unwrap();
        assert!(cache.capacity() >= 3);
        let (k, _) = cache
            .layer_caches()
            .nth(1)
            .unwrap()
            .append(&k2, &k2)
            .unwrap();
        assert_eq!(k.to_vec_f32().unwrap(), [1.0, 2.0, 3.0, 4.0, 9.0, 10.0]);
    }

    #[test]
    fn concat_rows_stacks_caches_of_different_capacities() {
        let dev = Device::Cpu;
        let fill = |cap: usize, rows: usize, base: f32, real: &[bool]| {
            let mut c = KvCache::with_shape(2, rows, 1, 2, cap, &dev).unwrap();
            let k = Tensor::from_vec(seq(rows * 2, base), &[rows, 1, 1, 2], &dev).unwrap();
            for mut l in c.layer_caches() {
                drop(l.append(&k, &k).unwrap());
            }
            c.advance(1, real).unwrap();
            c
        };
        let a = fill(1, 1, 0.0, &[true]);
        let b = fill(3, 2, 10.0, &[false, true]);
        let c = KvCache::concat_rows(&[&a, &b]).unwrap();
        assert_eq!((c.batch(), c.capacity(), c.num_layers()), (3, 3, 2));
        assert_eq!(c.seq_lens(), &[1, 1, 1]);
        assert_eq!(c.real_lens(), [1, 0, 1]);
        let k = c.layer(1).unwrap().keys().narrow(2, 0, 1).unwrap();
        assert_eq!(k.to_vec_f32().unwrap(), [0.0, 1.0, 10.0, 11.0, 12.0, 13.0]);
        let other = KvCache::with_shape(1, 1, 1, 2, 1, &dev).unwrap();
        assert!(matches!(
            KvCache::concat_rows(&[&a, &other]),
            Err(Error::Cache(_))
        ));
        assert!(KvCache::concat_rows(&[]).is_err());
    }

    #[test]
    fn select_rows_reorders_and_repeats() {
        let dev = Device::Cpu;
        let mut cache = KvCache::with_shape(1, 2, 1, 1, 2, &dev).unwrap();
        let k1 = Tensor::from_vec(vec![1.0, 2.0], &[2, 1, 1, 1], &dev).unwrap();
        drop(
            cache
                .layer_caches()
                .next()
                .unwrap()
                .append(&k1, &k1)
                .unwrap(),
        );
        cache.advance(1, &[true, false]).unwrap();
        let s = cache.select_rows(&[1, 1, 0]).unwrap();
        assert_eq!(s.batch(), 3);
        assert_eq!(s.real_lens(), [0, 0, 1]);
        let k = s
            .layer(0)
            .unwrap()
            .keys()
            .narrow(2, 0, 1)
            .unwrap()
            .to_vec_f32()
            .unwrap();
        assert_eq!(k, [2.0, 2.0, 1.0]);
        assert!(cache.select_rows(&[2]).is_err());
    }
}
