//! bf16 linear weights stored pre-packed for the panel GEMM (issue 8: bf16 prefill).
//!
//! The `vdpbf16ps` GEMM (`simd/panel_gemm.rs`) multiplies 32-column panels of `Wᵀ` laid out as
//! k-pairs: `[pair][column]`, one `u32` per (two bf16 of one row). Packing a row-major `[out, in]`
//! weight into that layout on every call costs a 16 x 16 transpose per 256 pairs and about a quarter
//! of the GEMM time at the model's 71-row prefill (`cargo bench -p kosmos-tensor --bench gemv`,
//! 71x2048->8192: 315 GFLOP/s packing per call, 405 without). [`PackedBf16`] stores the weight in
//! that layout once, at load, in the same bytes as the row-major bf16 weight (plus the padding of
//! the last panel to 32 rows); decode's GEMV reads the same layout (`ops::linear_packed`), so the
//! row-major copy is not kept.
//!
//! Layout: `n.div_ceil(32)` panels; panel `pi` holds rows `32 pi .. 32 pi + 32` as `kp = k.div_ceil(2)`
//! pairs, `data[pi * kp * 32 + p * 32 + j]` = bf16 `2p` (low half) and `2p + 1` (high half) of row
//! `32 pi + j`; rows past `n` and the high half of an odd `k`'s last pair are zero.

use std::mem::MaybeUninit;
use std::sync::Arc;

use half::bf16;
use rayon::prelude::*;

use crate::convert::{convert_f32_bytes, HalfFormat};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::simd::Isa;
use crate::storage::CpuSlice;
use crate::tensor::{check_cpu, Tensor};

/// Rows per panel.
pub(crate) const PANEL: usize = 32;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(
    PANEL == crate::simd::panel_gemm::NR,
    "the GEMM's panel width"
);
/// Weights converted and packed per task while loading (1 Mi: 4 MB of f32 source).
const GROUP_ELEMS: usize = 1 << 20;

/// A bf16 `[out, in]` linear weight packed in 32-row panels of k-pairs (see the module docs).
///
/// ```
/// use kosmos_tensor::{packed::PackedBf16, DType, Device, Tensor};
/// let w = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3], &Device::Cpu)?;
/// let p = PackedBf16::from_tensor(&w)?;
/// assert_eq!(p.dims(), [2, 3]);
/// assert_eq!(p.to_tensor().to_vec_f32()?, w.to_vec_f32()?);
/// # Ok::<(), kosmos_tensor::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    data: Arc<Vec<u32>>,
}

impl PackedBf16 {
    /// Packs a rank-2 `[out, in]` CPU tensor of any float dtype (converted to bf16 by rounding to
    /// nearest even, as `Tensor::to_dtype` does).
    pub fn from_tensor(w: &Tensor) -> Result<PackedBf16> {
        check_cpu("PackedBf16::from_tensor", w.device())?;
        if w.rank() != 2 || w.elem_count() == 0 {
            return Err(Error::InvalidArgument {
                op: "PackedBf16::from_tensor",
                msg: format!("expected a non-empty [out, in] weight, got {:?}", w.dims()),
            });
        }
        let (n, k) = (w.dims()[0], w.dims()[1]);
        let wb = if w.dtype() == DType::BF16 {
            w.contiguous()?
        } else {
            w.to_dtype(DType::BF16)?.contiguous()?
        };
        match wb.contiguous_slice() {
            Some(CpuSlice::BF16(rows)) => Ok(Self::from_rows(rows, n, k)),
            _ => Err(Error::InvalidArgument {
                op: "PackedBf16::from_tensor",
                msg: "weight is not contiguous bf16 after conversion".into(),
            }),
        }
    }

    /// Packs contiguous row-major bf16 rows `[n, k]`.
    pub(crate) fn from_rows(rows: &[bf16], n: usize, k: usize) -> PackedBf16 {
        let kp = k.div_ceil(2);
        let mut data = vec![0u32; n.div_ceil(PANEL) * kp * PANEL];
        let simd = simd_pack();
        data.par_chunks_mut(kp * PANEL)
            .enumerate()
            .for_each(|(pi, dst)| {
                let (n0, nb) = (pi * PANEL, PANEL.min(n - pi * PANEL));
                pack_panel(&rows[n0 * k..(n0 + nb) * k], k, nb, dst, simd);
            });
        PackedBf16 {
            n,
            k,
            data: Arc::new(data),
        }
    }

    /// Packs little-endian f32 rows `[n, k]` (`bytes`, e.g. a memory map), rounding to bf16 as
    /// [`crate::convert::f32_to_bf16`] does, panel by panel (each panel's rows are converted into a
    /// per-thread buffer that stays in cache), calling `done(byte_offset, byte_len)` on each
    /// panel's source bytes once they are read (the loader releases those pages).
    pub(crate) fn from_f32_bytes(
        bytes: &[u8],
        n: usize,
        k: usize,
        done: &(dyn Fn(usize, usize) + Sync),
    ) -> PackedBf16 {
        debug_assert_eq!(bytes.len(), 4 * n * k);
        let kp = k.div_ceil(2);
        let len = n.div_ceil(PANEL) * kp * PANEL;
        // Not zeroed up front: each panel's pages are faulted in with one `madvise` and zeroed
        // while they are in cache, right before the panel is packed (a zeroed allocation would
        // fault page by page on the first writes, ≈ 10 % of the load).
        let mut data: Vec<u32> = Vec::with_capacity(len);
        let (isa, simd) = (Isa::current(), simd_pack());
        // Panels per task: about `GROUP_ELEMS` weights, so that the `madvise` calls (faulting in
        // the destination, releasing the source) cover megabytes each: one per 128 KB panel made
        // the bf16 load 30 % slower (page-table work and TLB shootdowns per call).
        let group = (GROUP_ELEMS / (PANEL * k)).max(1);
        data.spare_capacity_mut()[..len]
            .par_chunks_mut(group * kp * PANEL)
            .enumerate()
            .for_each_init(Vec::<MaybeUninit<u16>>::new, |scratch, (gi, dst)| {
                crate::weights::populate_write(dst.as_mut_ptr().cast::<u8>(), 4 * dst.len());
                dst.fill(MaybeUninit::new(0));
                // SAFETY: every element was just initialised, and `MaybeUninit<u32>` has the
                // layout of `u32`.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u32>(), dst.len())
                };
                let n_start = gi * group * PANEL;
                for (p, dst) in dst.chunks_mut(kp * PANEL).enumerate() {
                    let (n0, nb) = (n_start + p * PANEL, PANEL.min(n - n_start - p * PANEL));
                    let (begin, len) = (4 * n0 * k, 4 * nb * k);
                    scratch.resize(nb * k, MaybeUninit::uninit());
                    convert_f32_bytes(isa, &bytes[begin..begin + len], scratch, HalfFormat::Bf16);
                    // SAFETY: `convert_f32_bytes` initialised all `nb * k` values, and bf16 is
                    // `repr(transparent)` over `u16`.
                    let rows = unsafe {
                        std::slice::from_raw_parts(scratch.as_ptr().cast::<bf16>(), nb * k)
                    };
                    pack_panel(rows, k, nb, dst, simd);
                }
                let n_end = (n_start + group * PANEL).min(n);
                done(4 * n_start * k, 4 * (n_end - n_start) * k);
            });
        // SAFETY: every panel chunk of the first `len` slots was initialised above.
        unsafe { data.set_len(len) };
        PackedBf16 {
            n,
            k,
            data: Arc::new(data),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.n, self.k]
    }

    /// Bytes held (the bf16 weight plus the last panel's padding).
    pub fn size_in_bytes(&self) -> usize {
        4 * self.data.len()
    }

    /// The weight unpacked to a row-major bf16 `[out, in]` tensor (for tools and tests).
    pub fn to_tensor(&self) -> Tensor {
        use crate::storage::Storage;
        let (n, k, kp) = (self.n, self.k, self.k.div_ceil(2));
        let mut rows = vec![bf16::ZERO; n * k];
        for (j, row) in rows.chunks_mut(k).enumerate() {
            let panel = &self.data[(j / PANEL) * kp * PANEL..];
            for (e, v) in row.iter_mut().enumerate() {
                let unit = panel[(e / 2) * PANEL + j % PANEL];
                *v = bf16::from_bits((unit >> (16 * (e % 2))) as u16);
            }
        }
        Tensor::from_storage(Storage::BF16(rows), &[n, k], &crate::Device::Cpu)
    }

    /// The packed pairs.
    pub(crate) fn data(&self) -> &[u32] {
        &self.data
    }
}

/// Whether loaders store bf16 linear weights packed ([`PackedBf16`]): for bf16 on the CPU when the
/// calling thread's SIMD level is AVX512_BF16, the only level whose prefill GEMM reads the packed
/// layout directly (elsewhere the row-major weight's converted-panel GEMM is faster than the packed
/// fallback). `KOSMOS_SIMD` below `avx512bf16` therefore also keeps weights row-major.
pub fn packs_on_load(dtype: DType, device: &crate::Device) -> bool {
    dtype == DType::BF16
        && matches!(device, crate::Device::Cpu)
        && Isa::current() == Isa::Avx512Bf16
}

/// Whether this CPU packs with the AVX-512 transpose.
fn simd_pack() -> bool {
    cfg!(target_arch = "x86_64") && Isa::Avx512.is_supported()
}

/// Packs the `nb` rows `[nb, k]` of one panel into `dst` (`kp * 32` pairs, zeroed).
fn pack_panel(rows: &[bf16], k: usize, nb: usize, dst: &mut [u32], simd: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::panel_gemm::{pack_panel, Bf16Pairs};
        let kp = k.div_ceil(2);
        pack_panel::<Bf16Pairs>((rows, 0, k), k, (0, nb), (0, kp), dst, simd);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = simd;
        for (j, row) in rows.chunks(k).enumerate().take(nb) {
            for (p, pair) in row.chunks(2).enumerate() {
                let hi = pair.get(1).map_or(0, |h| u32::from(h.to_bits()));
                dst[p * PANEL + j] = u32::from(pair[0].to_bits()) | (hi << 16);
            }
        }
    }
}
