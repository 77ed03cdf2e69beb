//! Fused attention on the device: flash-style prefill, decode over a KV cache, KV append.
//! Mirrors `ops::attention` (softmax((q kᵀ) * scale + mask) v) with HF's additive masks.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use super::backend::CudaBackend;
use super::element::{CudaElement, DeviceRead, DeviceWrite};
use super::error::{check_len, drv, invalid, to_i32, CudaResult};
use super::kernels::names;
use super::launch::NULL_PTR;
use super::softmax::ScoreMask;

/// The largest head dim the attention kernels take.
pub const MAX_HEAD_DIM: usize = 128;
/// Query rows per flash block (kernels/attention.cu `ATTN_BQ`).
const FLASH_BQ: usize = 16;

/// Where the `[batch, heads, len, head_dim]` elements of q, k, v or o live: element strides of
/// the batch, head and token axes (the head dim itself is contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLayout {
    /// Elements between batch rows.
    pub batch_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Elements between tokens.
    pub token_stride: usize,
}

impl HeadLayout {
    /// A contiguous `[batch, heads, len, head_dim]` tensor.
    pub fn bhtd(heads: usize, len: usize, head_dim: usize) -> Self {
        HeadLayout {
            batch_stride: heads * len * head_dim,
            head_stride: len * head_dim,
            token_stride: head_dim,
        }
    }

    /// A contiguous `[batch, len, heads, head_dim]` tensor (a projection's output before the
    /// head split): no transpose copy is needed.
    pub fn bthd(heads: usize, len: usize, head_dim: usize) -> Self {
        HeadLayout {
            batch_stride: len * heads * head_dim,
            head_stride: head_dim,
            token_stride: heads * head_dim,
        }
    }

    /// One past the largest element index a `[batch, heads, len, head_dim]` walk touches.
    fn extent(&self, batch: usize, heads: usize, len: usize, head_dim: usize) -> usize {
        (batch - 1) * self.batch_stride
            + (heads - 1) * self.head_stride
            + (len - 1) * self.token_stride
            + head_dim
    }
}

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    /// Batch size.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Query length (1 for decode).
    pub q_len: usize,
    /// Key/value length (for decode with a device length: the cache capacity).
    pub kv_len: usize,
    /// Head dim (at most [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
    /// Score scale (1/sqrt(head_dim) for Kosmos-2).
    pub scale: f32,
}

/// Mirror of `AttnParams` in kernels/attention.cu (same order: 8-byte fields first).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttnParams {
    q: [i64; 3],
    k: [i64; 3],
    v: [i64; 3],
    o: [i64; 3],
    mask_sb: i64,
    mask_sq: i64,
    batch: i32,
    heads: i32,
    q_len: i32,
    kv_len: i32,
    head_dim: i32,
    causal: i32,
    causal_offset: i32,
    scale: f32,
}

// SAFETY: plain `repr(C)` scalars with the layout of the CUDA struct.
unsafe impl DeviceRepr for AttnParams {}

fn strides(l: &HeadLayout) -> [i64; 3] {
    [
        l.batch_stride as i64,
        l.head_stride as i64,
        l.token_stride as i64,
    ]
}

/// Where a KV append writes: a host position, or one read from device memory (graph replay).
#[derive(Clone, Copy, Debug)]
pub enum KvPosition<'a> {
    /// Token index known on the host.
    Host(usize),
    /// Token index in `slice[0]` (device), e.g. the cache length counter of a decode graph.
    Device(&'a CudaSlice<i32>),
}

/// The additive mask of a decode step: f32 rows of at least the cache length; row `b` starts at
/// `b * row_stride` (0 broadcasts one row to every batch row).
pub struct DecodeMask<'a> {
    /// The mask values.
    pub values: &'a dyn DeviceRead<f32>,
    /// Elements between batch rows (0 or the row length).
    pub row_stride: usize,
}

impl std::fmt::Debug for DecodeMask<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeMask")
            .field("len", &self.values.view().len())
            .field("row_stride", &self.row_stride)
            .finish()
    }
}

fn check_shape(op: &'static str, s: &AttentionShape) -> CudaResult<()> {
    if s.batch == 0 || s.heads == 0 || s.q_len == 0 || s.kv_len == 0 || s.head_dim == 0 {
        return Err(invalid(op, format!("empty attention {s:?}")));
    }
    if s.head_dim > MAX_HEAD_DIM {
        return Err(invalid(
            op,
            format!("head_dim {} > {MAX_HEAD_DIM}", s.head_dim),
        ));
    }
    if s.batch > 65535 || s.heads > 65535 {
        return Err(invalid(op, format!("batch/heads beyond one launch: {s:?}")));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn params(
    op: &'static str,
    s: &AttentionShape,
    q: &HeadLayout,
    k: &HeadLayout,
    v: &HeadLayout,
    o: &HeadLayout,
    mask_sb: usize,
    mask_sq: usize,
    causal: bool,
) -> CudaResult<AttnParams> {
    Ok(AttnParams {
        q: strides(q),
        k: strides(k),
        v: strides(v),
        o: strides(o),
        mask_sb: mask_sb as i64,
        mask_sq: mask_sq as i64,
        batch: to_i32(op, "batch", s.batch)?,
        heads: to_i32(op, "heads", s.heads)?,
        q_len: to_i32(op, "q_len", s.q_len)?,
        kv_len: to_i32(op, "kv_len", s.kv_len)?,
        head_dim: to_i32(op, "head_dim", s.head_dim)?,
        causal: i32::from(causal),
        causal_offset: to_i32(op, "kv_len", s.kv_len)? - to_i32(op, "q_len", s.q_len)?,
        scale: s.scale,
    })
}

impl CudaBackend {
    /// Prefill attention, `o = softmax((q kᵀ) * scale + mask) v`, without materialising the
    /// scores. `mask` is HF's additive f32 mask `[1 or batch, 1, q_len, kv_len]`; `causal`
    /// adds finfo(f32).min above the diagonal (the queries are the last `q_len` of the
    /// `kv_len` positions). Both may be combined, as HF sums them.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention<T: CudaElement>(
        &self,
        shape: &AttentionShape,
        q: (&impl DeviceRead<T>, HeadLayout),
        k: (&impl DeviceRead<T>, HeadLayout),
        v: (&impl DeviceRead<T>, HeadLayout),
        o: (&mut impl DeviceWrite<T>, HeadLayout),
        mask: Option<ScoreMask<'_>>,
        causal: bool,
    ) -> CudaResult<()> {
        let op = "flash_attention";
        check_shape(op, shape)?;
        let s = shape;
        let (qv, kv, vv, mut ov) = (q.0.view(), k.0.view(), v.0.view(), o.0.view_mut());
        check_len(
            op,
            "q",
            qv.len(),
            q.1.extent(s.batch, s.heads, s.q_len, s.head_dim),
        )?;
        check_len(
            op,
            "k",
            kv.len(),
            k.1.extent(s.batch, s.heads, s.kv_len, s.head_dim),
        )?;
        check_len(
            op,
            "v",
            vv.len(),
            v.1.extent(s.batch, s.heads, s.kv_len, s.head_dim),
        )?;
        check_len(
            op,
            "o",
            ov.len(),
            o.1.extent(s.batch, s.heads, s.q_len, s.head_dim),
        )?;
        let (mask_view, mask_sb) = match &mask {
            Some(m) => {
                if m.batch != 1 && m.batch != s.batch {
                    return Err(invalid(
                        op,
                        format!("mask batch {} vs {}", m.batch, s.batch),
                    ));
                }
                let mv = m.values.view();
                check_len(op, "mask", mv.len(), m.batch * s.q_len * s.kv_len)?;
                let sb = if m.batch > 1 { s.q_len * s.kv_len } else { 0 };
                (Some(mv), sb)
            }
            None => (None, 0),
        };
        let p = params(op, s, &q.1, &k.1, &v.1, &o.1, mask_sb, s.kv_len, causal)?;
        let f = self.function(names::FLASH_ATTN, T::SUFFIX, "")?;
        let cfg = LaunchConfig {
            grid_dim: (
                s.q_len.div_ceil(FLASH_BQ) as u32,
                s.heads as u32,
                s.batch as u32,
            ),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream().launch_builder(&f);
        l.arg(&qv).arg(&kv).arg(&vv).arg(&mut ov);
        match &mask_view {
            Some(m) => l.arg(m),
            None => l.arg(&NULL_PTR),
        };
        l.arg(&p);
        // SAFETY: matches `flash_attn_<T>(q, k, v, o, mask, AttnParams)`; every extent checked.
        unsafe { l.launch(cfg) }.map_err(drv(op))?;
        Ok(())
    }

    /// Decode attention: one query per (batch, head) against the first `len` cached keys, where
    /// `len` is `counter[0] + add` when `kv_len_dev = Some((counter, add))` (graph replay: the
    /// cache length before this step plus the token just appended; the caller keeps it at most
    /// `shape.kv_len`, the capacity the extents are checked against), else `shape.kv_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention<T: CudaElement>(
        &self,
        shape: &AttentionShape,
        q: (&impl DeviceRead<T>, HeadLayout),
        k_cache: (&impl DeviceRead<T>, HeadLayout),
        v_cache: (&impl DeviceRead<T>, HeadLayout),
        o: (&mut impl DeviceWrite<T>, HeadLayout),
        mask: Option<DecodeMask<'_>>,
        kv_len_dev: Option<(&CudaSlice<i32>, i32)>,
    ) -> CudaResult<()> {
        let op = "decode_attention";
        check_shape(op, shape)?;
        let s = shape;
        if s.q_len != 1 {
            return Err(invalid(op, format!("q_len must be 1, got {}", s.q_len)));
        }
        let (qv, kv, vv, mut ov) = (
            q.0.view(),
            k_cache.0.view(),
            v_cache.0.view(),
            o.0.view_mut(),
        );
        check_len(
            op,
            "q",
            qv.len(),
            q.1.extent(s.batch, s.heads, 1, s.head_dim),
        )?;
        let ext = |l: &HeadLayout| l.extent(s.batch, s.heads, s.kv_len, s.head_dim);
        check_len(op, "k_cache", kv.len(), ext(&k_cache.1))?;
        check_len(op, "v_cache", vv.len(), ext(&v_cache.1))?;
        check_len(
            op,
            "o",
            ov.len(),
            o.1.extent(s.batch, s.heads, 1, s.head_dim),
        )?;
        let (mask_view, mask_sb) = match &mask {
            Some(m) => {
                let mv = m.values.view();
                check_len(
                    op,
                    "mask",
                    mv.len(),
                    (s.batch - 1) * m.row_stride + s.kv_len,
                )?;
                (Some(mv), m.row_stride)
            }
            None => (None, 0),
        };
        let len_view = kv_len_dev.map(|(d, _)| d.as_view());
        let len_add = kv_len_dev.map_or(0, |(_, a)| a);
        if let Some(d) = &len_view {
            check_len(op, "kv_len_dev", d.len(), 1)?;
        }
        let p = params(op, s, &q.1, &k_cache.1, &v_cache.1, &o.1, mask_sb, 0, false)?;
        let f = self.function(names::DECODE_ATTN, T::SUFFIX, "")?;
        let cfg = LaunchConfig {
            grid_dim: (s.heads as u32, s.batch as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream().launch_builder(&f);
        l.arg(&qv).arg(&kv).arg(&vv).arg(&mut ov);
        match &mask_view {
            Some(m) => l.arg(m),
            None => l.arg(&NULL_PTR),
        };
        match &len_view {
            Some(d) => l.arg(d),
            None => l.arg(&NULL_PTR),
        };
        l.arg(&len_add).arg(&p);
        // SAFETY: matches `decode_attn_<T>`; extents checked against the capacity.
        unsafe { l.launch(cfg) }.map_err(drv(op))?;
        Ok(())
    }

    /// Copies `t_len` new tokens `[batch, heads, t_len, head_dim]` into a cache at `pos`
    /// (`cache_capacity` tokens per head; a device position must leave room for `t_len`).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_append<T: CudaElement>(
        &self,
        src: (&impl DeviceRead<T>, HeadLayout),
        cache: (&mut impl DeviceWrite<T>, HeadLayout),
        batch: usize,
        heads: usize,
        t_len: usize,
        head_dim: usize,
        cache_capacity: usize,
        pos: KvPosition<'_>,
    ) -> CudaResult<()> {
        let op = "kv_append";
        if batch == 0 || heads == 0 || t_len == 0 || head_dim == 0 {
            return Err(invalid(op, "empty append"));
        }
        if batch > 65535 || heads > 65535 {
            return Err(invalid(
                op,
                format!("batch {batch} / heads {heads} too large"),
            ));
        }
        let (sv, mut dv) = (src.0.view(), cache.0.view_mut());
        check_len(
            op,
            "src",
            sv.len(),
            src.1.extent(batch, heads, t_len, head_dim),
        )?;
        check_len(
            op,
            "cache",
            dv.len(),
            cache.1.extent(batch, heads, cache_capacity, head_dim),
        )?;
        let (pos_host, pos_view) = match pos {
            KvPosition::Host(p) => {
                if p + t_len > cache_capacity {
                    return Err(invalid(
                        op,
                        format!("{t_len} tokens at {p} overflow capacity {cache_capacity}"),
                    ));
                }
                (to_i32(op, "pos", p)?, None)
            }
            KvPosition::Device(d) => {
                check_len(op, "pos", d.len(), 1)?;
                (0, Some(d.as_view()))
            }
        };
        let [s_sb, s_sh, s_st] = strides(&src.1);
        let [d_sb, d_sh, d_st] = strides(&cache.1);
        let hd = to_i32(op, "head_dim", head_dim)?;
        let f = self.function(names::KV_APPEND, T::SUFFIX, "")?;
        let cfg = LaunchConfig {
            grid_dim: (
                to_i32(op, "t_len", t_len)? as u32,
                heads as u32,
                batch as u32,
            ),
            block_dim: (head_dim.next_multiple_of(32).min(1024) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream().launch_builder(&f);
        l.arg(&sv).arg(&s_sb).arg(&s_sh).arg(&s_st);
        l.arg(&mut dv).arg(&d_sb).arg(&d_sh).arg(&d_st);
        l.arg(&hd).arg(&pos_host);
        match &pos_view {
            Some(d) => l.arg(d),
            None => l.arg(&NULL_PTR),
        };
        // SAFETY: matches `kv_append_<T>`; extents checked (a device position is the caller's
        // contract, documented above).
        unsafe { l.launch(cfg) }.map_err(drv(op))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_match_the_cuda_struct_size() {
        // 14 long long + 7 int + 1 float.
        assert_eq!(std::mem::size_of::<AttnParams>(), 14 * 8 + 8 * 4);
    }

    #[test]
    fn layouts_address_the_same_elements() {
        let (h, t, d) = (3, 5, 4);
        let a = HeadLayout::bhtd(h, t, d);
        let b = HeadLayout::bthd(h, t, d);
        assert_eq!(a.extent(2, h, t, d), 2 * h * t * d);
        assert_eq!(b.extent(2, h, t, d), 2 * h * t * d);
    }
}
