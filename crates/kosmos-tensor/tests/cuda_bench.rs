//! Device benchmark of the CUDA backend at the real Kosmos-2 sizes (random bf16 weights): image
//! encode (CLIP ViT-L/14 + projection), prefill (24 decoder layers over an 80-token prompt with
//! 64 image tokens) and decode (one token per CUDA-graph replay: embedding -> 24 layers ->
//! lm_head -> argmax -> next token, all on the device), at batch sizes 1, 8 and 32.
//!
//! It is a benchmark, not a test: `#[ignore]`d, run by scripts/device-check.sh as
//! `cuda_bench-* --ignored --nocapture`. It writes one JSON line per measurement to
//! `$KOSMOS2_BENCH_OUT` (if set) and prints a table. The model is assembled here from the
//! backend's ops exactly as the model crates will drive it (fused QKV weight per layer).
#![cfg(feature = "cuda")]

#[path = "cuda_support/mod.rs"]
mod support;

use std::io::Write as _;

use kosmos_tensor::bf16;
use kosmos_tensor::cuda::{
    sinusoid_freqs, Activation, AttentionShape, CudaBackend, CudaResult, CudaSlice, DeviceKvCache,
    DeviceRead, EmbeddingTable, GemmShape, HeadLayout, ImageInsert, TokenPositions,
};

// Kosmos-2 sizes (reference §1).
const D: usize = 2048;
const H: usize = 32;
const HD: usize = 64;
const F: usize = 8192;
const V: usize = 65037;
const LAYERS: usize = 24;
const DV: usize = 1024;
const HV: usize = 16;
const FV: usize = 4096;
const TV: usize = 257;
const PATCH_IN: usize = 3 * 14 * 14;
const LATENT: usize = 64;
const PROMPT: usize = 80;
const NEW_TOKENS: usize = 32;

type B16 = CudaSlice<bf16>;

/// Random weights: copies of a random pool at rotating offsets (never zeros or constants).
struct Init<'a> {
    be: &'a CudaBackend,
    pool: B16,
    next: usize,
}

impl Init<'_> {
    fn weight(&mut self, n: usize) -> CudaResult<B16> {
        let mut w = self.be.alloc::<bf16>(n)?;
        let pool_len = self.pool.len();
        let mut done = 0;
        while done < n {
            let start = self.next % (pool_len / 2);
            let take = (n - done).min(pool_len - start);
            let src = self.pool.slice(start..start + take);
            let mut dst = w.slice_mut(done..done + take);
            self.be.stream().memcpy_dtod(&src, &mut dst).map_err(|e| {
                kosmos_tensor::cuda::CudaError::Driver {
                    op: "bench init",
                    source: e,
                }
            })?;
            done += take;
            self.next = self.next.wrapping_mul(31).wrapping_add(7919);
        }
        Ok(w)
    }
}

struct Ln {
    w: B16,
    b: B16,
}

struct TextLayer {
    ln1: Ln,
    qkv_w: B16,
    qkv_b: B16,
    attn_ln: Ln,
    o_w: B16,
    o_b: B16,
    ln2: Ln,
    fc1_w: B16,
    fc1_b: B16,
    ffn_ln: Ln,
    fc2_w: B16,
    fc2_b: B16,
}

struct VisionLayer {
    ln1: Ln,
    qkv_w: B16,
    qkv_b: B16,
    o_w: B16,
    o_b: B16,
    ln2: Ln,
    fc1_w: B16,
    fc1_b: B16,
    fc2_w: B16,
    fc2_b: B16,
}

struct Model {
    embed: B16,
    freqs: CudaSlice<f32>,
    text: Vec<TextLayer>,
    final_ln: Ln,
    patch_w: B16,
    pos_cls: B16,
    pre_ln: Ln,
    vision: Vec<VisionLayer>,
    post_ln: Ln,
    dense_w: B16,
    dense_b: B16,
    latent: B16,
    xq_w: B16,
    xq_b: B16,
    xk_w: B16,
    xk_b: B16,
    xv_w: B16,
    xv_b: B16,
    xo_w: B16,
    xo_b: B16,
}

impl Model {
    fn new(be: &CudaBackend) -> CudaResult<Model> {
        let pool: Vec<bf16> = support::rand_vec(42, 1 << 24, 0.03)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let mut i = Init {
            be,
            pool: be.htod(&pool)?,
            next: 12345,
        };
        let ln = |n: usize, i: &mut Init<'_>| -> CudaResult<Ln> {
            let w = be.htod(&vec![bf16::from_f32(1.0); n])?;
            Ok(Ln { w, b: i.weight(n)? })
        };
        let mut text = Vec::new();
        for _ in 0..LAYERS {
            text.push(TextLayer {
                ln1: ln(D, &mut i)?,
                qkv_w: i.weight(3 * D * D)?,
                qkv_b: i.weight(3 * D)?,
                attn_ln: ln(D, &mut i)?,
                o_w: i.weight(D * D)?,
                o_b: i.weight(D)?,
                ln2: ln(D, &mut i)?,
                fc1_w: i.weight(F * D)?,
                fc1_b: i.weight(F)?,
                ffn_ln: ln(F, &mut i)?,
                fc2_w: i.weight(D * F)?,
                fc2_b: i.weight(D)?,
            });
        }
        let mut vision = Vec::new();
        for _ in 0..LAYERS {
            vision.push(VisionLayer {
                ln1: ln(DV, &mut i)?,
                qkv_w: i.weight(3 * DV * DV)?,
                qkv_b: i.weight(3 * DV)?,
                o_w: i.weight(DV * DV)?,
                o_b: i.weight(DV)?,
                ln2: ln(DV, &mut i)?,
                fc1_w: i.weight(FV * DV)?,
                fc1_b: i.weight(FV)?,
                fc2_w: i.weight(DV * FV)?,
                fc2_b: i.weight(DV)?,
            });
        }
        Ok(Model {
            embed: i.weight(V * D)?,
            freqs: be.htod(&sinusoid_freqs(D))?,
            text,
            final_ln: ln(D, &mut i)?,
            patch_w: i.weight(DV * PATCH_IN)?,
            pos_cls: i.weight(32 * TV * DV)?,
            pre_ln: ln(DV, &mut i)?,
            vision,
            post_ln: ln(DV, &mut i)?,
            dense_w: i.weight(D * DV)?,
            dense_b: i.weight(D)?,
            latent: i.weight(LATENT * D)?,
            xq_w: i.weight(D * D)?,
            xq_b: i.weight(D)?,
            xk_w: i.weight(D * D)?,
            xk_b: i.weight(D)?,
            xv_w: i.weight(D * D)?,
            xv_b: i.weight(D)?,
            xo_w: i.weight(D * D)?,
            xo_b: i.weight(D)?,
        })
    }
}

/// Activation buffers for `batch` rows of up to `tokens` tokens.
struct Work {
    x: B16,
    h: B16,
    qkv: B16,
    attn: B16,
    tmp: B16,
    f1: B16,
    f2: B16,
    last: B16,
    logits: CudaSlice<f32>,
    ids: CudaSlice<u32>,
}

impl Work {
    fn new(be: &CudaBackend, rows: usize, ffn: usize, batch: usize) -> CudaResult<Work> {
        Ok(Work {
            x: be.zeros(rows * D)?,
            h: be.zeros(rows * D)?,
            qkv: be.zeros(rows * 3 * D)?,
            attn: be.zeros(rows * D)?,
            tmp: be.zeros(rows * D)?,
            f1: be.zeros(rows * ffn)?,
            f2: be.zeros(rows * ffn)?,
            last: be.zeros(batch * D)?,
            logits: be.zeros(batch * V)?,
            ids: be.zeros(batch)?,
        })
    }
}

/// One Kosmos2TextBlock over `batch` rows of `t` tokens (prefill: causal flash over the fresh
/// K/V; decode: t = 1 against the device cache whose length counter is read on the device).
#[allow(clippy::too_many_arguments)]
fn text_layer(
    be: &CudaBackend,
    l: &TextLayer,
    idx: usize,
    w: &mut Work,
    cache: &mut DeviceKvCache<bf16>,
    batch: usize,
    t: usize,
    decode: bool,
) -> CudaResult<()> {
    let rows = batch * t;
    be.layer_norm(&w.x, &l.ln1.w, &l.ln1.b, &mut w.h, rows, D, 1e-5)?;
    be.linear(
        &w.h,
        &l.qkv_w,
        Some(&l.qkv_b),
        &mut w.qkv,
        rows,
        D,
        3 * D,
        Activation::None,
    )?;
    // Fused QKV rows are [q | k | v]: heads are strided views, no copies.
    let qkv_layout = HeadLayout {
        batch_stride: t * 3 * D,
        head_stride: HD,
        token_stride: 3 * D,
    };
    let (q, k, v) = (w.qkv.slice(..), w.qkv.slice(D..), w.qkv.slice(2 * D..));
    cache.append(be, idx, (&k, qkv_layout), (&v, qkv_layout), t, decode)?;
    let o_layout = HeadLayout::bthd(H, t, HD);
    if decode {
        let (kc, vc) = cache.layer(idx)?;
        let shape = AttentionShape {
            batch,
            heads: H,
            q_len: 1,
            kv_len: cache.capacity(),
            head_dim: HD,
            scale: 0.125,
        };
        let layout = cache.layout();
        be.decode_attention(
            &shape,
            (&q, qkv_layout),
            (kc, layout),
            (vc, layout),
            (&mut w.attn, o_layout),
            None,
            Some((cache.len_device(), 1)),
        )?;
    } else {
        let shape = AttentionShape {
            batch,
            heads: H,
            q_len: t,
            kv_len: t,
            head_dim: HD,
            scale: 0.125,
        };
        be.flash_attention(
            &shape,
            (&q, qkv_layout),
            (&k, qkv_layout),
            (&v, qkv_layout),
            (&mut w.attn, o_layout),
            None,
            true,
        )?;
    }
    be.layer_norm(&w.attn, &l.attn_ln.w, &l.attn_ln.b, &mut w.h, rows, D, 1e-5)?;
    be.gemm::<bf16, bf16>(
        &GemmShape::linear(rows, D, D),
        &w.h,
        &l.o_w,
        &mut w.tmp,
        1.0,
        0.0,
    )?;
    be.bias_residual(
        &w.tmp,
        Some(&l.o_b as &dyn DeviceRead<bf16>),
        &mut w.x,
        rows,
        D,
    )?;
    be.layer_norm(&w.x, &l.ln2.w, &l.ln2.b, &mut w.h, rows, D, 1e-5)?;
    be.linear(
        &w.h,
        &l.fc1_w,
        Some(&l.fc1_b),
        &mut w.f1,
        rows,
        D,
        F,
        Activation::GeluErf,
    )?;
    be.layer_norm(&w.f1, &l.ffn_ln.w, &l.ffn_ln.b, &mut w.f2, rows, F, 1e-5)?;
    be.gemm::<bf16, bf16>(
        &GemmShape::linear(rows, F, D),
        &w.f2,
        &l.fc2_w,
        &mut w.tmp,
        1.0,
        0.0,
    )?;
    be.bias_residual(
        &w.tmp,
        Some(&l.fc2_b as &dyn DeviceRead<bf16>),
        &mut w.x,
        rows,
        D,
    )
}

/// Final LayerNorm of each row's last token, tied lm_head (f32 logits), argmax into `w.ids`.
fn head(be: &CudaBackend, m: &Model, w: &mut Work, batch: usize, t: usize) -> CudaResult<()> {
    be.copy_strided(&w.x, &mut w.h, &[batch, D], &[t * D, 1], (t - 1) * D)?;
    be.layer_norm(
        &w.h,
        &m.final_ln.w,
        &m.final_ln.b,
        &mut w.last,
        batch,
        D,
        1e-5,
    )?;
    be.gemm::<bf16, f32>(
        &GemmShape::linear(batch, D, V),
        &w.last,
        &m.embed,
        &mut w.logits,
        1.0,
        0.0,
    )?;
    be.argmax(&w.logits, batch, V, &mut w.ids)
}

fn table(m: &Model) -> EmbeddingTable<'_, bf16> {
    EmbeddingTable {
        table: &m.embed,
        vocab: V,
        dim: D,
        freqs: &m.freqs,
        scale: (D as f32).sqrt(),
        padding_idx: 1,
    }
}

/// Image encode: patch GEMM, CLIP encoder, post-LN, L2-normalise, projection -> [batch*64, D].
struct VisionWork {
    pixels: B16,
    x: B16,
    res: B16,
    h: B16,
    qkv: B16,
    attn: B16,
    tmp: B16,
    f1: B16,
    dense: B16,
    kv_in: B16,
    q: B16,
    k: B16,
    v: B16,
    xo: B16,
    embeds: B16,
}

impl VisionWork {
    fn new(be: &CudaBackend, batch: usize) -> CudaResult<VisionWork> {
        let rows = batch * TV;
        let pixels: Vec<bf16> = support::rand_vec(7, batch * 256 * PATCH_IN, 2.0)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        Ok(VisionWork {
            pixels: be.htod(&pixels)?,
            x: be.zeros(rows * DV)?,
            res: be.zeros(rows * DV)?,
            h: be.zeros(rows * DV)?,
            qkv: be.zeros(rows * 3 * DV)?,
            attn: be.zeros(rows * DV)?,
            tmp: be.zeros(rows * DV)?,
            f1: be.zeros(rows * FV)?,
            dense: be.zeros(rows * D)?,
            kv_in: be.zeros(batch * (TV + LATENT) * D)?,
            q: be.zeros(LATENT * D)?,
            k: be.zeros(batch * (TV + LATENT) * D)?,
            v: be.zeros(batch * (TV + LATENT) * D)?,
            xo: be.zeros(batch * LATENT * D)?,
            embeds: be.zeros(batch * LATENT * D)?,
        })
    }
}

fn encode_image(be: &CudaBackend, m: &Model, w: &mut VisionWork, batch: usize) -> CudaResult<()> {
    let rows = batch * TV;
    // Patch embedding into token rows 1..=256 of each image; CLS rows stay 0, then + (cls, pos).
    be.fill(&mut w.x, rows * DV, 0.0)?;
    let patches = GemmShape {
        batch,
        stride_a: 256 * PATCH_IN,
        stride_b: 0,
        stride_c: TV * DV,
        ..GemmShape::linear(256, PATCH_IN, DV)
    };
    let mut rows_1 = w.x.slice_mut(DV..);
    be.gemm::<bf16, bf16>(&patches, &w.pixels, &m.patch_w, &mut rows_1, 1.0, 0.0)?;
    be.bias_residual(&m.pos_cls.slice(..rows * DV), None, &mut w.x, rows, DV)?;
    be.layer_norm(&w.x, &m.pre_ln.w, &m.pre_ln.b, &mut w.res, rows, DV, 1e-5)?;
    let qkv_layout = HeadLayout {
        batch_stride: TV * 3 * DV,
        head_stride: HD,
        token_stride: 3 * DV,
    };
    let shape = AttentionShape {
        batch,
        heads: HV,
        q_len: TV,
        kv_len: TV,
        head_dim: HD,
        scale: 0.125,
    };
    for l in &m.vision {
        be.layer_norm(&w.res, &l.ln1.w, &l.ln1.b, &mut w.h, rows, DV, 1e-5)?;
        be.linear(
            &w.h,
            &l.qkv_w,
            Some(&l.qkv_b),
            &mut w.qkv,
            rows,
            DV,
            3 * DV,
            Activation::None,
        )?;
        let (q, k, v) = (w.qkv.slice(..), w.qkv.slice(DV..), w.qkv.slice(2 * DV..));
        be.flash_attention(
            &shape,
            (&q, qkv_layout),
            (&k, qkv_layout),
            (&v, qkv_layout),
            (&mut w.attn, HeadLayout::bthd(HV, TV, HD)),
            None,
            false,
        )?;
        be.gemm::<bf16, bf16>(
            &GemmShape::linear(rows, DV, DV),
            &w.attn,
            &l.o_w,
            &mut w.tmp,
            1.0,
            0.0,
        )?;
        be.bias_residual(
            &w.tmp,
            Some(&l.o_b as &dyn DeviceRead<bf16>),
            &mut w.res,
            rows,
            DV,
        )?;
        be.layer_norm(&w.res, &l.ln2.w, &l.ln2.b, &mut w.h, rows, DV, 1e-5)?;
        be.linear(
            &w.h,
            &l.fc1_w,
            Some(&l.fc1_b),
            &mut w.f1,
            rows,
            DV,
            FV,
            Activation::QuickGelu,
        )?;
        be.gemm::<bf16, bf16>(
            &GemmShape::linear(rows, FV, DV),
            &w.f1,
            &l.fc2_w,
            &mut w.tmp,
            1.0,
            0.0,
        )?;
        be.bias_residual(
            &w.tmp,
            Some(&l.fc2_b as &dyn DeviceRead<bf16>),
            &mut w.res,
            rows,
            DV,
        )?;
    }
    be.layer_norm(&w.res, &m.post_ln.w, &m.post_ln.b, &mut w.h, rows, DV, 1e-5)?;
    be.l2_normalize(&w.h, &mut w.x, rows, DV, 1e-12)?;
    // Projection: KV input = [dense(features) (257 rows) | latent queries (64 rows)] per image.
    be.linear(
        &w.x,
        &m.dense_w,
        Some(&m.dense_b),
        &mut w.dense,
        rows,
        DV,
        D,
        Activation::None,
    )?;
    let stream = be.stream().clone();
    let drv = |e| kosmos_tensor::cuda::CudaError::Driver {
        op: "bench kv_in",
        source: e,
    };
    for b in 0..batch {
        let base = b * (TV + LATENT) * D;
        let src = w.dense.slice(b * TV * D..(b + 1) * TV * D);
        let mut dst = w.kv_in.slice_mut(base..base + TV * D);
        stream.memcpy_dtod(&src, &mut dst).map_err(drv)?;
        let mut dst = w.kv_in.slice_mut(base + TV * D..base + (TV + LATENT) * D);
        stream.memcpy_dtod(&m.latent, &mut dst).map_err(drv)?;
    }
    let kv_rows = batch * (TV + LATENT);
    be.linear(
        &m.latent,
        &m.xq_w,
        Some(&m.xq_b),
        &mut w.q,
        LATENT,
        D,
        D,
        Activation::None,
    )?;
    be.linear(
        &w.kv_in,
        &m.xk_w,
        Some(&m.xk_b),
        &mut w.k,
        kv_rows,
        D,
        D,
        Activation::None,
    )?;
    be.linear(
        &w.kv_in,
        &m.xv_w,
        Some(&m.xv_b),
        &mut w.v,
        kv_rows,
        D,
        D,
        Activation::None,
    )?;
    let shape = AttentionShape {
        batch,
        heads: H,
        q_len: LATENT,
        kv_len: TV + LATENT,
        head_dim: HD,
        scale: 0.125,
    };
    let q_layout = HeadLayout {
        batch_stride: 0,
        ..HeadLayout::bthd(H, LATENT, HD)
    };
    be.flash_attention(
        &shape,
        (&w.q, q_layout),
        (&w.k, HeadLayout::bthd(H, TV + LATENT, HD)),
        (&w.v, HeadLayout::bthd(H, TV + LATENT, HD)),
        (&mut w.xo, HeadLayout::bthd(H, LATENT, HD)),
        None,
        false,
    )?;
    let rows = batch * LATENT;
    be.linear(
        &w.xo,
        &m.xo_w,
        Some(&m.xo_b),
        &mut w.embeds,
        rows,
        D,
        D,
        Activation::None,
    )
}

/// One decode token: embed the last ids at position len + 2, 24 layers against the cache,
/// head (argmax into `w.ids`), len += 1. Everything it reads or writes is on the device.
fn decode_step(
    be: &CudaBackend,
    m: &Model,
    tbl: &EmbeddingTable<'_, bf16>,
    w: &mut Work,
    cache: &mut DeviceKvCache<bf16>,
    batch: usize,
) -> CudaResult<()> {
    let pos = TokenPositions::Counter {
        counter: cache.len_device(),
        add: 2,
    };
    be.embed_tokens(tbl, &w.ids, batch, None, pos, &mut w.x)?;
    for (i, l) in m.text.iter().enumerate() {
        text_layer(be, l, i, w, cache, batch, 1, true)?;
    }
    head(be, m, w, batch, 1)?;
    be.counter_add(cache.len_device_mut(), 1)
}

/// Median of `reps` event-timed runs of `f` after `warm` warm-ups, in ms.
fn time_ms(
    be: &CudaBackend,
    warm: usize,
    reps: usize,
    mut f: impl FnMut() -> CudaResult<()>,
) -> CudaResult<f64> {
    use cudarc::driver::sys::CUevent_flags;
    let drv = |e| kosmos_tensor::cuda::CudaError::Driver {
        op: "bench events",
        source: e,
    };
    for _ in 0..warm {
        f()?;
    }
    be.synchronize()?;
    let ctx = be.context();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv)?;
        let end = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv)?;
        start.record(be.stream()).map_err(drv)?;
        f()?;
        end.record(be.stream()).map_err(drv)?;
        times.push(start.elapsed_ms(&end).map_err(drv)? as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn report(out: &mut Option<std::fs::File>, stage: &str, batch: usize, ms: f64, unit: &str) {
    println!("kosmos2-rs  {stage:<14} batch {batch:>2}  {ms:>9.3} {unit}");
    if let Some(f) = out {
        let _ = writeln!(
            f,
            "{{\"impl\":\"kosmos2-rs\",\"stage\":\"{stage}\",\"batch\":{batch},\"ms\":{ms:.4},\"unit\":\"{unit}\"}}"
        );
    }
}

fn run(be: &CudaBackend) -> CudaResult<()> {
    let mut out = std::env::var_os("KOSMOS2_BENCH_OUT").and_then(|p| std::fs::File::create(p).ok());
    let m = Model::new(be)?;
    be.synchronize()?;
    let batches: Vec<usize> = std::env::var("KOSMOS2_BENCH_BATCHES")
        .ok()
        .map(|s| s.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    if let Some(b) = batches.iter().find(|&&b| b == 0 || b > 32) {
        panic!("KOSMOS2_BENCH_BATCHES: batch {b} is outside 1..=32");
    }
    for &batch in &batches {
        // Image encode.
        let mut vw = VisionWork::new(be, batch)?;
        let ms = time_ms(be, 2, 7, || encode_image(be, &m, &mut vw, batch))?;
        report(&mut out, "image_encode", batch, ms, "ms");

        // Prefill: ids with the 64 image tokens at 4..68, positions 2.., causal flash, head.
        let ids: Vec<u32> = (0..batch * PROMPT)
            .map(|i| (i as u32 * 7919 + 3) % V as u32)
            .collect();
        let ids = be.upload_ids(&ids, V)?;
        let rows_of: Vec<i32> = (0..batch * PROMPT)
            .map(|i| {
                let (b, t) = (i / PROMPT, i % PROMPT);
                if (4..4 + LATENT).contains(&t) {
                    (b * LATENT + t - 4) as i32
                } else {
                    -1
                }
            })
            .collect();
        let rows_of = be.htod(&rows_of)?;
        let positions: Vec<i32> = (0..batch * PROMPT)
            .map(|i| (i % PROMPT) as i32 + 2)
            .collect();
        let positions = be.htod(&positions)?;
        let mut w = Work::new(be, batch * PROMPT, F, batch)?;
        let mut cache =
            DeviceKvCache::<bf16>::new(be, LAYERS, batch, H, PROMPT + NEW_TOKENS + 8, HD)?;
        let tbl = table(&m);
        let prefill = |w: &mut Work, cache: &mut DeviceKvCache<bf16>| -> CudaResult<()> {
            cache.clear(be)?;
            let image = ImageInsert {
                embeds: &vw.embeds,
                rows: batch * LATENT,
                row_of_token: &rows_of,
            };
            let pos = TokenPositions::PerToken(&positions);
            be.embed_tokens(&tbl, &ids, batch * PROMPT, Some(image), pos, &mut w.x)?;
            for (i, l) in m.text.iter().enumerate() {
                text_layer(be, l, i, w, cache, batch, PROMPT, false)?;
            }
            cache.advance(be, PROMPT)?;
            head(be, &m, w, batch, PROMPT)
        };
        let ms = time_ms(be, 2, 7, || prefill(&mut w, &mut cache))?;
        report(&mut out, "prefill", batch, ms, "ms");

        // Decode: one graph = one token; the graph reads ids and the cache length on the device.
        let mut dw = Work::new(be, batch, F, batch)?;
        prefill(&mut w, &mut cache)?;
        be.stream().memcpy_dtod(&w.ids, &mut dw.ids).map_err(|e| {
            kosmos_tensor::cuda::CudaError::Driver {
                op: "bench ids",
                source: e,
            }
        })?;
        // One eager step first: cuBLAS picks and loads its kernels outside the capture.
        decode_step(be, &m, &tbl, &mut dw, &mut cache, batch)?;
        let graph = be.capture(|be| decode_step(be, &m, &tbl, &mut dw, &mut cache, batch))?;
        let mut steps = || -> CudaResult<()> {
            // Rewind the cache to the prompt, then NEW_TOKENS replays.
            be.htod_into(&[PROMPT as i32], cache.len_device_mut())?;
            for _ in 0..NEW_TOKENS {
                graph.launch()?;
            }
            Ok(())
        };
        let ms = time_ms(be, 2, 5, &mut steps)? / NEW_TOKENS as f64;
        report(&mut out, "decode", batch, ms, "ms/token");
        let next: Vec<u32> = be.dtoh(&dw.ids)?;
        assert!(
            next.iter().all(|&i| (i as usize) < V),
            "decode produced {next:?}"
        );
    }
    Ok(())
}

#[test]
#[ignore = "device benchmark: run by scripts/device-check.sh (`--ignored --nocapture`)"]
fn kosmos2_sized_encode_prefill_decode() {
    let Some(be) = support::backend("kosmos2_sized_encode_prefill_decode") else {
        return;
    };
    eprintln!("bench device: {:?}", be.info());
    if let Err(e) = run(&be) {
        panic!("benchmark failed: {e}");
    }
}
