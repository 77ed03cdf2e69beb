//! The text decoder's KV cache on the device: per layer, K and V `[batch, heads, capacity,
//! head_dim]`, the filled length on the host and mirrored in device memory (for graph replay).

use cudarc::driver::CudaSlice;

use super::attention::{HeadLayout, KvPosition};
use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead};
use super::error::{invalid, CudaResult};

/// A fixed-capacity KV cache (HF `DynamicCache` semantics: one length for the whole batch).
#[derive(Debug)]
pub struct DeviceKvCache<T> {
    keys: Vec<CudaSlice<T>>,
    values: Vec<CudaSlice<T>>,
    batch: usize,
    heads: usize,
    capacity: usize,
    head_dim: usize,
    len: usize,
    len_dev: CudaSlice<i32>,
}

impl<T: CudaElement> DeviceKvCache<T> {
    /// An empty cache for `layers` layers.
    pub fn new(
        backend: &CudaBackend,
        layers: usize,
        batch: usize,
        heads: usize,
        capacity: usize,
        head_dim: usize,
    ) -> CudaResult<Self> {
        if layers == 0 || batch == 0 || heads == 0 || capacity == 0 || head_dim == 0 {
            return Err(invalid("DeviceKvCache::new", "empty cache shape"));
        }
        let per = batch * heads * capacity * head_dim;
        let mut keys = Vec::with_capacity(layers);
        let mut values = Vec::with_capacity(layers);
        for _ in 0..layers {
            keys.push(backend.zeros::<T>(per)?);
            values.push(backend.zeros::<T>(per)?);
        }
        Ok(DeviceKvCache {
            keys,
            values,
            batch,
            heads,
            capacity,
            head_dim,
            len: 0,
            len_dev: backend.zeros::<i32>(1)?,
        })
    }

    /// Tokens cached so far (host view; after graph replays, as told by [`Self::advance`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens per head the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The layout of every K/V buffer.
    pub fn layout(&self) -> HeadLayout {
        HeadLayout::bhtd(self.heads, self.capacity, self.head_dim)
    }

    /// Layer `i`'s (K, V) buffers.
    pub fn layer(&self, i: usize) -> CudaResult<(&CudaSlice<T>, &CudaSlice<T>)> {
        match (self.keys.get(i), self.values.get(i)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(invalid("DeviceKvCache::layer", format!("no layer {i}"))),
        }
    }

    /// The device copy of the length (read by decode kernels inside a graph).
    pub fn len_device(&self) -> &CudaSlice<i32> {
        &self.len_dev
    }

    /// Mutable device length (for `CudaBackend::counter_add` inside a decode graph).
    pub fn len_device_mut(&mut self) -> &mut CudaSlice<i32> {
        &mut self.len_dev
    }

    /// Appends `t_len` tokens of K and V for `layer` at the current length (host position, for
    /// prefill or ungraphed decode). Call [`Self::advance`] once every layer has appended.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        backend: &CudaBackend,
        layer: usize,
        k: (&impl DeviceRead<T>, HeadLayout),
        v: (&impl DeviceRead<T>, HeadLayout),
        t_len: usize,
        device_position: bool,
    ) -> CudaResult<()> {
        if layer >= self.keys.len() {
            return Err(invalid(
                "DeviceKvCache::append",
                format!("no layer {layer}"),
            ));
        }
        let layout = self.layout();
        let (b, h, cap, hd) = (self.batch, self.heads, self.capacity, self.head_dim);
        let pos = if device_position {
            KvPosition::Device(&self.len_dev)
        } else {
            KvPosition::Host(self.len)
        };
        backend.kv_append(
            k,
            (&mut self.keys[layer], layout),
            b,
            h,
            t_len,
            hd,
            cap,
            pos,
        )?;
        backend.kv_append(
            v,
            (&mut self.values[layer], layout),
            b,
            h,
            t_len,
            hd,
            cap,
            pos,
        )
    }

    /// Records `t` more cached tokens on the host and uploads the length to the device.
    pub fn advance(&mut self, backend: &CudaBackend, t: usize) -> CudaResult<()> {
        if self.len + t > self.capacity {
            return Err(invalid(
                "DeviceKvCache::advance",
                format!(
                    "{} + {t} tokens overflow capacity {}",
                    self.len, self.capacity
                ),
            ));
        }
        self.len += t;
        let len = i32::try_from(self.len)
            .map_err(|_| invalid("DeviceKvCache::advance", "length overflows i32"))?;
        backend.htod_into(&[len], &mut self.len_dev)
    }

    /// Records `t` tokens appended by graph replays (the device counter already moved).
    pub fn note_device_advance(&mut self, t: usize) -> CudaResult<()> {
        if self.len + t > self.capacity {
            return Err(invalid(
                "DeviceKvCache::note_device_advance",
                "capacity overflow",
            ));
        }
        self.len += t;
        Ok(())
    }

    /// Empties the cache (the buffers are kept).
    pub fn clear(&mut self, backend: &CudaBackend) -> CudaResult<()> {
        self.len = 0;
        backend.htod_into(&[0i32], &mut self.len_dev)
    }
}
