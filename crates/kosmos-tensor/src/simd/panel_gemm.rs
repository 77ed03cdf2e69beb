//! Panel GEMMs on AVX-512: `out[m, n] += A[m, k] · W[n, k]ᵀ` with f32 accumulation, for bf16 weights
//! (`vdpbf16ps` on AVX512_BF16), int8 weights (their values converted to bf16 while they are packed,
//! exact for |q| ≤ 256, then the bf16 kernel) and f32 weights (`vfmadd231ps`), `W` stored
//! `[out, in]` as in PyTorch.
//!
//! Used by `linear` above the GEMV sizes. For bf16 weights the activations are bf16 already, or f32
//! rounded to bf16 (nearest even, bit-exact with `half::bf16::from_f32`) while they are packed, which
//! is what a bf16 PyTorch model does at every linear input. For f32 weights they stay f32.
//!
//! Both formats share one driver and packing: a packed unit is one `u32`, a bf16 k-pair or an f32.
//! Blocking (BLIS-style, sized for a Zen 4 / Sapphire Rapids core: 32 KB L1D, ≥ 1 MB L2):
//! - A is packed once per call in micro-panels of `MR` rows laid out `[unit][row]`, so the
//!   micro-kernel's broadcasts read one sequential stream (row-major A would put the 12 broadcast
//!   streams 2·k bytes apart, all in the same L1 sets when k is a multiple of 2048).
//! - Each rayon task owns a few 32-column panels of W and walks K in blocks of `KC` units: it packs
//!   each panel's `KC x 32` unit block (32 KB, in L1/L2 while every row block of A streams past it)
//!   right before its first use, while the next panel's weight rows are prefetched towards L2, and
//!   the `MC`-row block of A for that K block (`MC x KC` units, ≤ 384 KB) stays in L2 across the
//!   task's panels. Every W element is packed exactly once per call, so unlike a GEMM that packs
//!   all of `Wᵀ` up front, the weights are read from DRAM once and never written back.
//! - The `R x 32` micro-kernel (R ≤ 12: 24 accumulators) adds its K block's partial sums into `out`
//!   (masked for the last panel's columns), so no per-call output buffer exists either. With
//!   [`GemmOut`] the first K block adds them to the bias (or zeros) instead and never reads
//!   `out`, so an output needs no bias rows written, nor zeroing, beforehand. With an
//!   [`Activation`], the last K block's call applies it to the finished tile after storing it (the
//!   16-lane functions of the standalone ops, so bitwise `activation(out)` afterwards).
//!
//! Products of bf16 values are exact in f32, so the bf16 result differs from an f32 GEMM on the
//! same (rounded) inputs by summation order only (and `vdpbf16ps` flushes bf16 denormals to zero).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use half::bf16;
use rayon::prelude::*;

use crate::ops::Activation;
use crate::simd::Isa;

/// Output columns per panel (two zmm registers of f32).
pub(crate) const NR: usize = 32;
/// Rows per micro-kernel call (24 accumulators + 2 panel vectors + 1 broadcast of 32 zmm).
const MR: usize = 12;
/// Packed units (bf16 pairs / f32 values) per K block, a multiple of 16 (the transpose width): a
/// `KC x NR` panel block is 32 KB.
/// 128 / 256 / 384 / 512 / 1024 were tried (single thread, loaded machine): 256 and up beat 128 by
/// ≈ 5–15 % on the 257-row shapes, within the noise of each other.
const KC: usize = 256;
/// Row blocks of `MR` per M block: `MC = 384` rows, so `MC x KC` pairs of A are 384 KB (L2).
const MC_BLOCKS: usize = 32;
/// L2 budget (bytes) for the packed A of one super-block of K blocks when pre-packed weights are
/// walked panel by panel (see `gemm`): it is re-read from L2 for every panel, next to the
/// streaming panels. The walk is used when at least two K blocks fit (m ≤ 192 rows); 71 prompt
/// rows take 5 K blocks (`k` = 2048: all of K; 8192: super-blocks of 4).
const PANEL_MAJOR_A_BYTES: usize = 384 << 10;
/// Panels per rayon task at most (enough tasks to balance, few enough to amortise the A reads).
const MAX_TASK_PANELS: usize = 8;

/// The activations of [`gemm_bf16_avx512`]: row-major `[m, k]`, contiguous.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lhs<'a> {
    /// Already bf16.
    Bf16(&'a [bf16]),
    /// f32, rounded to bf16 (nearest even) while packing.
    F32(&'a [f32]),
}

impl Lhs<'_> {
    fn len(&self) -> usize {
        match self {
            Lhs::Bf16(a) => a.len(),
            Lhs::F32(a) => a.len(),
        }
    }
}

thread_local! {
    /// The packed A of the last call on this thread, reused so that prefill does not allocate and
    /// fault in a fresh buffer per linear (taken out while in use, so a re-entrant call just
    /// allocates its own).
    static A_PACK: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// A rayon task's packed W panels (≤ `MAX_TASK_PANELS x KC x NR` pairs, 256 KB), reused the
    /// same way.
    static B_PACK: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// A raw output pointer shared by the rayon tasks, each of which writes its own columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint column ranges of `out` (see `gemm_bf16_avx512`), and `out` is
// a unique borrow that outlives the parallel loop.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not its field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Where a panel GEMM writes its `[m, n]` result, `out = bias + A · Wᵀ` in every row
/// (`0 + A · Wᵀ` without a bias): the first K block's tiles start from the bias in registers
/// instead of reading `out`, so its old contents are never read and may be uninitialised, and
/// every one of the `m x n` elements is written. Bitwise the same as adding the products to rows
/// set to the bias (or zeros) first, without writing and re-reading those rows.
pub(crate) struct GemmOut<'a>(
    pub(crate) &'a mut [MaybeUninit<f32>],
    pub(crate) Option<&'a [f32]>,
);

impl<'a> GemmOut<'a> {
    /// A [`GemmOut`] over an initialised buffer.
    pub(crate) fn set(out: &'a mut [f32], bias: Option<&'a [f32]>) -> Self {
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and a GEMM only writes initialised
        // f32 values through it, so `out` stays initialised.
        let o = unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<f32>]) };
        GemmOut(o, bias)
    }
}

/// What a tile at column `n0` adds the K block from unit `q0` to: only the first K block
/// (`q0 == 0`) starts from the bias (or zeros); the later ones add to the tile.
fn tile_start(bias: Option<&[f32]>, q0: usize, n0: usize) -> TileStart {
    match (bias, q0) {
        (Some(b), 0) => TileStart::Bias(b[n0..].as_ptr()),
        (None, 0) => TileStart::Zero,
        _ => TileStart::Add,
    }
}

/// `out[i * n + j] += sum_p a[i * k + p] * w[w_offset + j * w_rs + p]`, with `a` rounded to bf16
/// (`=` from the bias: [`GemmOut`]).
///
/// # Panics
/// If the slices are too short for the given sizes, or the CPU lacks AVX512_BF16 (internal
/// invariants: `linear` checks both).
pub(crate) fn gemm_bf16_avx512(
    a: Lhs<'_>,
    (m, n, k): (usize, usize, usize),
    w: &[bf16],
    w_offset: usize,
    w_rs: usize,
    out: GemmOut<'_>,
    act: Option<Activation>,
) {
    assert!(
        Isa::Avx512Bf16.is_supported(),
        "gemm_bf16 needs AVX512_BF16"
    );
    let src = WSrc::Rows { w, w_offset, w_rs };
    gemm::<Bf16Pairs>(a.into(), (m, n, k), src, out, act, (k, true));
}

/// [`gemm_bf16_avx512`] with the weights pre-packed (`PackedBf16`'s layout: panel `pi` is
/// `[kp][NR]` pairs from `pi * kp * NR`, rows past `n` zero), so no W is packed per call. The
/// result is bitwise that of [`gemm_bf16_avx512`] on the same rows (same panels, same K blocks).
///
/// # Panics
/// If the slices are too short for the given sizes, or the CPU lacks AVX512_BF16.
pub(crate) fn gemm_bf16_packed_avx512(
    a: Lhs<'_>,
    (m, n, k): (usize, usize, usize),
    packed: &[u32],
    out: GemmOut<'_>,
    act: Option<Activation>,
) {
    assert!(
        Isa::Avx512Bf16.is_supported(),
        "gemm_bf16 needs AVX512_BF16"
    );
    gemm::<Bf16Pairs>(
        a.into(),
        (m, n, k),
        WSrc::Packed(packed),
        out,
        act,
        (k, true),
    );
}

/// `out[i * n + j] += sum_p a[i * k + p] * q[j * k + p]` for int8 weights `q` (`[n, k]`,
/// contiguous), with `a` rounded to bf16: bitwise [`gemm_bf16_avx512`] on `q` converted to bf16
/// (exact), without that conversion's `n x k` buffer (each panel block is converted while it is
/// packed).
///
/// # Panics
/// If the slices are too short for the given sizes, or the CPU lacks AVX512_BF16.
pub(crate) fn gemm_i8_avx512(
    a: Lhs<'_>,
    (m, n, k): (usize, usize, usize),
    q: &[i8],
    out: GemmOut<'_>,
) {
    assert!(
        Isa::Avx512Bf16.is_supported(),
        "gemm_bf16 needs AVX512_BF16"
    );
    let src = WSrc::Rows {
        w: q,
        w_offset: 0,
        w_rs: k,
    };
    gemm::<I8Pairs>(a.into(), (m, n, k), src, out, None, (k, true));
}

/// `out[i * n + j] += sum_p a[i * k + p] * w[w_offset + j * w_rs + p]` in f32 (`vfmadd231ps`):
/// each output is its previous value plus, per K block of `KC` elements, that block's products
/// summed in order of `p`.
///
/// # Panics
/// If the slices are too short for the given sizes, or the CPU lacks AVX-512 F (internal
/// invariants: `linear` checks both).
pub(crate) fn gemm_f32_avx512(
    a: &[f32],
    (m, n, k): (usize, usize, usize),
    w: &[f32],
    w_offset: usize,
    w_rs: usize,
    out: GemmOut<'_>,
    act: Option<Activation>,
) {
    assert!(Isa::Avx512.is_supported(), "gemm_f32 needs AVX-512");
    let src = WSrc::Rows { w, w_offset, w_rs };
    gemm::<F32s>(APack::F32(a), (m, n, k), src, out, act, (k, true));
}

/// [`gemm_bf16_avx512`] / [`gemm_bf16_packed_avx512`] on the calling thread only, for callers that
/// run many small products in a parallel loop of their own (attention heads), with A's row `i`
/// read from `i * lda`: same packing, same K blocks, so bitwise the same result.
///
/// # Panics
/// If the slices are too short for the given sizes, or the CPU lacks AVX512_BF16.
pub(crate) fn gemm_bf16_serial(
    a: Lhs<'_>,
    lda: usize,
    (m, n, k): (usize, usize, usize),
    src: WSrc<'_, bf16>,
    out: GemmOut<'_>,
) {
    assert!(
        Isa::Avx512Bf16.is_supported(),
        "gemm_bf16 needs AVX512_BF16"
    );
    gemm::<Bf16Pairs>(a.into(), (m, n, k), src, out, None, (lda, false));
}

/// Where [`gemm`] reads W.
#[derive(Clone, Copy)]
pub(crate) enum WSrc<'a, T> {
    /// Rows `[n, k]`, row `j` from `w_offset + j * w_rs`: packed per panel and K block as used.
    Rows {
        w: &'a [T],
        w_offset: usize,
        w_rs: usize,
    },
    /// Already packed: panel `pi` is `[kp][NR]` units from `pi * kp * NR`.
    Packed(&'a [u32]),
}

/// What [`pack_a`] reads: activations for the bf16 kernel (rounded to bf16) or the f32 one.
#[derive(Clone, Copy, Debug)]
enum APack<'a> {
    /// For the bf16 kernel.
    Bf16(Lhs<'a>),
    /// For the f32 kernel, as they are.
    F32(&'a [f32]),
}

impl<'a> From<Lhs<'a>> for APack<'a> {
    fn from(a: Lhs<'a>) -> Self {
        APack::Bf16(a)
    }
}

impl APack<'_> {
    fn len(&self) -> usize {
        match self {
            APack::Bf16(a) => a.len(),
            APack::F32(a) => a.len(),
        }
    }
}

/// What a micro-kernel does with its finished tile.
#[derive(Clone, Copy)]
pub(crate) struct TileOut {
    /// The column masks of the panel's two 16-column halves.
    pub(crate) masks: (u16, u16),
    /// What the tile's sums are added to.
    pub(crate) start: TileStart,
    /// The activation to apply to the stored tile (on the last K block only).
    pub(crate) act: Option<Activation>,
}

/// What a micro-kernel adds its sums to.
#[derive(Clone, Copy)]
pub(crate) enum TileStart {
    /// The tile's values in the output.
    Add,
    /// The bias row from the panel's first column (`masks` select the valid ones); the output's
    /// old values are not read.
    Bias(*const f32),
    /// Zeros; the output's old values are not read.
    Zero,
}

/// A micro-kernel dispatch: `(r, a, panel, kc, c, ldc, tile)` (see `x86::kernel_bf16`).
type Kernel = unsafe fn(usize, &[u32], &[u32], usize, *mut f32, usize, TileOut);

/// How [`pack_panel`]'s AVX-512 transpose reads 16 packed units of a weight row.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowLoad {
    /// 64 bytes as they are (bf16 pairs, f32 values).
    Units,
    /// 32 int8 values, converted to 32 bf16 (exact), i.e. 16 bf16 pairs.
    I8ToBf16,
    /// 32 f32 values, rounded to 32 bf16 (nearest even), i.e. 16 bf16 pairs.
    F32ToBf16,
}

/// An element format of the panel GEMM: the weight type, how many weight elements one packed
/// `u32` holds, and the micro-kernel that multiplies packed A and W.
pub(crate) trait Format {
    /// The weight element.
    type W: Copy + Sync;
    /// Weight elements per packed `u32` (a bf16 pair or one f32).
    const PER: usize;
    /// The packed `u32` of `row[e..e + PER]`, zero past the end of the row.
    fn pack_w(row: &[Self::W], e: usize) -> u32;
    /// The micro-kernel dispatch for `r` rows (1..=`MR`); its safety contract is that of
    /// `x86::kernel_bf16` / `x86::kernel_f32` with `R = r`.
    const KERNEL: Kernel;
    /// How the transpose loads a row's 16 units.
    const LOAD: RowLoad = RowLoad::Units;
}

/// bf16 weights, k-pairs per `u32`, `vdpbf16ps`.
pub(crate) struct Bf16Pairs;

impl Format for Bf16Pairs {
    type W = bf16;
    const PER: usize = 2;
    fn pack_w(row: &[bf16], e: usize) -> u32 {
        let hi = row.get(e + 1).map_or(0, |h| u32::from(h.to_bits()));
        u32::from(row[e].to_bits()) | (hi << 16)
    }
    const KERNEL: Kernel = x86::dispatch_bf16;
}

/// int8 weights as bf16 k-pairs (an int8 value is exact in bf16), `vdpbf16ps`.
struct I8Pairs;

/// The bf16 bits of an int8 value (exact: the top half of its f32 bits).
fn i8_bf16_bits(v: i8) -> u32 {
    f32::from(v).to_bits() >> 16
}

impl Format for I8Pairs {
    type W = i8;
    const PER: usize = 2;
    fn pack_w(row: &[i8], e: usize) -> u32 {
        let hi = row.get(e + 1).map_or(0, |&h| i8_bf16_bits(h));
        i8_bf16_bits(row[e]) | (hi << 16)
    }
    const KERNEL: Kernel = x86::dispatch_bf16;
    const LOAD: RowLoad = RowLoad::I8ToBf16;
}

/// f32 activations rounded to bf16 k-pairs (nearest even, bit-exact with `half::bf16::from_f32`)
/// while A is packed, for the `vdpbf16ps` kernel.
struct F32ToBf16Pairs;

impl Format for F32ToBf16Pairs {
    type W = f32;
    const PER: usize = 2;
    fn pack_w(row: &[f32], e: usize) -> u32 {
        let bits = |v: f32| u32::from(bf16::from_f32(v).to_bits());
        let hi = row.get(e + 1).map_or(0, |&h| bits(h));
        bits(row[e]) | (hi << 16)
    }
    const KERNEL: Kernel = x86::dispatch_bf16;
    const LOAD: RowLoad = RowLoad::F32ToBf16;
}

/// f32 weights, one per `u32`, `vfmadd231ps`.
struct F32s;

impl Format for F32s {
    type W = f32;
    const PER: usize = 1;
    fn pack_w(row: &[f32], e: usize) -> u32 {
        row[e].to_bits()
    }
    const KERNEL: Kernel = x86::dispatch_f32;
}

/// The blocked GEMM of this module's header for format `F` (the caller checked the CPU).
fn gemm<F: Format>(
    a: APack<'_>,
    (m, n, k): (usize, usize, usize),
    src: WSrc<'_, F::W>,
    out: GemmOut<'_>,
    act: Option<Activation>,
    (lda, par): (usize, bool),
) {
    assert!(lda >= k, "panel gemm lda");
    let a_len = if m == 0 { 0 } else { (m - 1) * lda + k };
    let GemmOut(out, bias) = out;
    let (outp, out_len) = (OutPtr(out.as_mut_ptr().cast()), out.len());
    assert!(a.len() >= a_len && out_len >= m * n, "panel gemm bounds");
    assert!(bias.is_none_or(|b| b.len() >= n), "panel gemm bias");
    let kp = k.div_ceil(F::PER);
    match src {
        WSrc::Rows { w, w_offset, w_rs } => assert!(
            n == 0 || k == 0 || w_offset + (n - 1) * w_rs + k <= w.len(),
            "panel gemm bounds"
        ),
        WSrc::Packed(p) => assert!(p.len() >= n.div_ceil(NR) * kp * NR, "panel gemm bounds"),
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for (i, v) in out[..m * n].iter_mut().enumerate() {
            v.write(bias.map_or(0.0, |b| b[i % n]));
        }
        return;
    }
    // Row blocks: whole MR-row blocks, then the remainder as one block of its own (71 rows =
    // 5 x 12 + 11, not 12s + 8 + 2 + 1: the 1- and 2-row kernels are load-bound).
    let blocks: Vec<(usize, usize)> = (0..m).step_by(MR).map(|i0| (i0, MR.min(m - i0))).collect();
    let mut ap = A_PACK.with(|c| std::mem::take(&mut *c.borrow_mut()));
    // `pack_a` writes every unit of the first `m * kp`: the buffer only grows, never re-zeroed
    // (zeroing it cost ≈ 1 % of an image encode: 113 MB of memset).
    if ap.len() < m * kp {
        ap.resize(m * kp, 0);
    }
    pack_a(a, (k, lda), kp, &blocks, &mut ap[..m * kp], par);

    let panels = n.div_ceil(NR);
    let per_task = if par {
        (panels / (4 * rayon::current_num_threads())).clamp(1, MAX_TASK_PANELS)
    } else {
        MAX_TASK_PANELS
    };
    let tasks = panels.div_ceil(per_task);
    let ap_ref = &ap[..m * kp];
    let blocks_ref = &blocks[..];
    // Pre-packed weights with a small A (prompt-sized inputs): K is cut into super-blocks of `sb`
    // K blocks whose A (`m x sb x KC` units) stays in L2, and each panel's K blocks of a
    // super-block are walked in turn, so its weights stream from DRAM in runs of `sb x 32 KB`
    // instead of one 32 KB block per panel and K block. Each tile still adds its K blocks in
    // order, so the result is bitwise the same.
    let kblocks = kp.div_ceil(KC);
    let fit = PANEL_MAJOR_A_BYTES / (m * KC * 4).max(1);
    let sb = kblocks.div_ceil(kblocks.div_ceil(fit.max(1)));
    let panel_major = matches!(src, WSrc::Packed(_)) && fit >= 2;
    let task = |t: usize| {
        let (p0, p1) = (t * per_task, ((t + 1) * per_task).min(panels));
        if let (WSrc::Packed(pk), true) = (src, panel_major) {
            let walk = (n, kp, sb);
            // SAFETY: panels p0..p1 are this task's own columns of `out`, and the caller checked
            // the CPU for `F`'s kernel.
            unsafe { packed_walk::<F>(pk, ap_ref, blocks_ref, walk, p0..p1, (outp, bias), act) };
            return;
        }
        let mut bp = B_PACK.with(|c| std::mem::take(&mut *c.borrow_mut()));
        for q0 in (0..kp).step_by(KC) {
            let qn = KC.min(kp - q0);
            // The activation goes with the K block that finishes the tiles.
            let epilogue = if q0 + qn == kp { act } else { None };
            if matches!(src, WSrc::Rows { .. }) {
                bp.resize((p1 - p0) * qn * NR, 0);
            }
            for (mi, mblock) in blocks_ref.chunks(MC_BLOCKS).enumerate() {
                for pi in p0..p1 {
                    let n0 = pi * NR;
                    let nb = NR.min(n - n0);
                    let off = (pi - p0) * qn * NR;
                    // The next panel block this task reads (the next to pack, for rows): its next
                    // panel in this K block, else its first one in the next K block.
                    let (pn, pq) = if pi + 1 < p1 {
                        (pi + 1, q0)
                    } else {
                        (p0, q0 + qn)
                    };
                    let (panel, prefetch) = match src {
                        WSrc::Packed(pk) => {
                            // Streamed as it is (a software prefetch of the next panel block,
                            // as for the rows below, measured 2-5 % slower).
                            let at = pi * kp * NR;
                            (&pk[at + q0 * NR..at + (q0 + qn) * NR], None)
                        }
                        WSrc::Rows { w, w_offset, w_rs } => {
                            if mi == 0 {
                                // Packed right before its first use (its rows were prefetched
                                // while the previous panel computed).
                                let dst = &mut bp[off..off + qn * NR];
                                let rows = (w, w_offset, w_rs);
                                pack_panel::<F>(rows, k, (n0, nb), (q0, qn), dst, true);
                            }
                            // The next panel to pack: its weight rows are prefetched towards
                            // L2 over this panel's kernel calls, so the pack does not wait on
                            // DRAM. (One panel at a time: a whole K block of 256 rows 4–16 KB
                            // apart would not fit the L2 sets they map to.)
                            let (pn0, pnb) = (pn * NR, NR.min(n - pn * NR));
                            let next = F::PER * pq..(F::PER * (pq + KC)).min(k);
                            let fetch = (mi == 0 && next.start < next.end).then(|| {
                                (
                                    w,
                                    w_offset,
                                    w_rs,
                                    pn0,
                                    pnb,
                                    next,
                                    pnb.div_ceil(mblock.len()),
                                )
                            });
                            (&bp[off..off + qn * NR], fetch)
                        }
                    };
                    let masks = col_masks(nb);
                    for (bi, &(i0, r)) in mblock.iter().enumerate() {
                        if let Some((w, w_offset, w_rs, pn0, pnb, next, per_call)) = &prefetch {
                            for j in (bi * per_call..(bi + 1) * per_call).take_while(|&j| j < *pnb)
                            {
                                let row = w_offset + (pn0 + j) * w_rs;
                                x86::prefetch_l2(&w[row + next.start..row + next.end]);
                            }
                        }
                        // Micro-panel of rows i0..i0 + r is `[kp][r]` from `i0 * kp`.
                        let a_blk = &ap_ref[i0 * kp + q0 * r..i0 * kp + (q0 + qn) * r];
                        // SAFETY: the caller checked the CPU for `F`'s kernel. `a_blk` holds
                        // `qn * r` packed values and `panel` `qn * NR`; the output tile is rows
                        // i0..i0 + r (< m) and columns n0..n0 + nb (< n, the masks cover only
                        // those) of the `m x n` `out`, and no other task writes columns
                        // n0..n0 + NR.
                        unsafe {
                            let c = outp.get().add(i0 * n + n0);
                            let tile = TileOut {
                                masks,
                                start: tile_start(bias, q0, n0),
                                act: epilogue,
                            };
                            (F::KERNEL)(r, a_blk, panel, qn, c, n, tile);
                        }
                    }
                }
            }
        }
        B_PACK.with(|c| *c.borrow_mut() = bp);
    };
    if par {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
    A_PACK.with(|c| *c.borrow_mut() = ap);
}

/// The column masks of a panel with `nb` (≤ `NR`) columns: its two 16-column halves.
fn col_masks(nb: usize) -> (u16, u16) {
    let full = |c: usize| (((1u32 << c) - 1) & 0xffff) as u16;
    (full(nb.min(16)), full(nb.saturating_sub(16)))
}

/// `gemm`'s walk over pre-packed weights for a small A: for each super-block of `sb` K blocks,
/// each panel of `panels` in turn through all of that super-block's K blocks, for every row block
/// of the packed `a` (so a panel's weights stream as one contiguous run per super-block).
///
/// # Safety
/// As `gemm`'s kernel calls: the CPU supports `F`'s kernel, `out` is the `m x n` output of the
/// `blocks`, `pk` / `a` hold the packed operands for `n` and `kp`, and no other thread accesses
/// the columns of `panels`.
unsafe fn packed_walk<F: Format>(
    pk: &[u32],
    a: &[u32],
    blocks: &[(usize, usize)],
    (n, kp, sb): (usize, usize, usize),
    panels: std::ops::Range<usize>,
    (out, bias): (OutPtr, Option<&[f32]>),
    act: Option<Activation>,
) {
    for s0 in (0..kp.div_ceil(KC)).step_by(sb) {
        for pi in panels.clone() {
            let (n0, nb) = (pi * NR, NR.min(n - pi * NR));
            let at = pi * kp * NR;
            for q0 in (s0 * KC..((s0 + sb) * KC).min(kp)).step_by(KC) {
                let qn = KC.min(kp - q0);
                // The activation goes with the K block that finishes the tiles.
                let epilogue = if q0 + qn == kp { act } else { None };
                let panel = &pk[at + q0 * NR..at + (q0 + qn) * NR];
                for &(i0, r) in blocks {
                    let a_blk = &a[i0 * kp + q0 * r..i0 * kp + (q0 + qn) * r];
                    // SAFETY: by the contract; the tile is rows i0..i0 + r and columns
                    // n0..n0 + nb of `out` (the masks cover only those).
                    unsafe {
                        let c = out.get().add(i0 * n + n0);
                        let tile = TileOut {
                            masks: col_masks(nb),
                            start: tile_start(bias, q0, n0),
                            act: epilogue,
                        };
                        (F::KERNEL)(r, a_blk, panel, qn, c, n, tile);
                    }
                }
            }
        }
    }
}

/// Packs A (row `i` from `i * lda`) into `[block][unit][row]` (`ap[i0 * kp + p * r + rr]` =
/// packed unit `p` of row `i0 + rr`): bf16 pairs (f32 rounded to bf16 while packed, bit-exact with
/// `half::bf16::from_f32`; an odd `k`'s last pair has a zero high half) or f32 bits. On rayon
/// when `par`.
fn pack_a(
    a: APack<'_>,
    (k, lda): (usize, usize),
    kp: usize,
    blocks: &[(usize, usize)],
    ap: &mut [u32],
    par: bool,
) {
    let mut chunks = Vec::with_capacity(blocks.len());
    let mut rest = ap;
    for &(i0, r) in blocks {
        let (head, tail) = rest.split_at_mut(r * kp);
        chunks.push((i0, r, head));
        rest = tail;
    }
    let pack = |(i0, r, dst): (usize, usize, &mut [u32])| match a {
        APack::F32(v) => pack_rows::<F32s>(v, |rr| (i0 + rr) * lda, (r, k), dst),
        APack::Bf16(Lhs::Bf16(v)) => pack_rows::<Bf16Pairs>(v, |rr| (i0 + rr) * lda, (r, k), dst),
        // Rounded to bf16 as the transpose loads them (no rounded copy of the rows).
        APack::Bf16(Lhs::F32(v)) => {
            pack_rows::<F32ToBf16Pairs>(v, |rr| (i0 + rr) * lda, (r, k), dst);
        }
    };
    if par {
        chunks.into_par_iter().for_each(pack);
    } else {
        chunks.into_iter().for_each(pack);
    }
}

/// One micro-panel of A: `dst[p * r + rr]` = packed unit `p` (`F::pack_w`: an f32's bits, or a
/// bf16 pair with the high half of an odd `k`'s last pair zero) of row `rr`, `k` elements from
/// `src[row(rr)]`. Whole 16-unit groups go through the AVX-512 transpose, the rest unit by unit.
fn pack_rows<F: Format>(
    src: &[F::W],
    row: impl Fn(usize) -> usize,
    (r, k): (usize, usize),
    dst: &mut [u32],
) {
    let kp = k.div_ceil(F::PER);
    let whole = k / F::PER / 16 * 16;
    let rows: [usize; 16] = std::array::from_fn(|j| row(j.min(r - 1)));
    for u0 in (0..whole).step_by(16) {
        // SAFETY: gemm runs on AVX-512 CPUs only; each row holds `k >= PER * (u0 + 16)` elements
        // from `row(rr)` (the callers' slices), and `dst` holds `kp * r >= (u0 + 16) * r` units.
        unsafe {
            let out = (&mut dst[u0 * r..], r, ((1u32 << r) - 1) as u16);
            x86::transpose16(src, rows, F::PER * u0, F::LOAD, out);
        }
    }
    for rr in 0..r {
        let s = &src[row(rr)..row(rr) + k];
        for p in whole..kp {
            dst[p * r + rr] = F::pack_w(s, F::PER * p);
        }
    }
}

/// Packs units `q0..q0 + qn` of W rows `n0..n0 + nb` as `bp[t * NR + j]` = unit `q0 + t` of row
/// `n0 + j`; columns past `nb` and the high half of an odd `k`'s last bf16 pair are zero. `simd`
/// transposes whole 16 x 16 blocks with AVX-512 (the caller checked the CPU); the rest, or all of
/// it without `simd`, is packed unit by unit (the same values either way).
pub(crate) fn pack_panel<F: Format>(
    (w, w_offset, w_rs): (&[F::W], usize, usize),
    k: usize,
    (n0, nb): (usize, usize),
    (q0, qn): (usize, usize),
    bp: &mut [u32],
    simd: bool,
) {
    if nb < NR {
        bp.fill(0);
    }
    // Whole 16-row x 16-unit blocks by an AVX-512 transpose (units entirely inside the row), the
    // rest unit by unit.
    let whole_units = (k / F::PER).min(q0 + qn).saturating_sub(q0);
    let (jv, tv) = if simd {
        (nb / 16 * 16, whole_units / 16 * 16)
    } else {
        (0, 0)
    };
    for j0 in (0..jv).step_by(16) {
        let rows: [usize; 16] = std::array::from_fn(|j| w_offset + (n0 + j0 + j) * w_rs);
        for t0 in (0..tv).step_by(16) {
            // SAFETY: AVX-512 support was checked by the caller (`simd`); every row holds
            // elements `PER * (q0 + t0)..PER * (q0 + t0 + 16) <= k` (in bounds by the caller's
            // assert), and `bp` holds units `t0..t0 + 16` of columns `j0..j0 + 16` (`t0 + 16 <= qn`).
            unsafe {
                x86::transpose16(
                    w,
                    rows,
                    F::PER * (q0 + t0),
                    F::LOAD,
                    (&mut bp[t0 * NR + j0..], NR, 0xffff),
                );
            }
        }
    }
    for j in 0..nb {
        let row = &w[w_offset + (n0 + j) * w_rs..w_offset + (n0 + j) * w_rs + k];
        let first = if j < jv { tv } else { 0 };
        for t in first..qn {
            bp[t * NR + j] = F::pack_w(row, F::PER * (q0 + t));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
