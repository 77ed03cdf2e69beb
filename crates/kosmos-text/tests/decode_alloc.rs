//! Decode allocates nothing per token (issue 4): a counting global allocator around greedy decode
//! steps 2..N (decoder forward with the KV cache appended in place, `lm_head` logits, argmax).
//!
//! The counter sees every thread (rayon workers included). Everything runs in ONE test function so
//! the harness runs nothing else concurrently in this binary, and the steps run inside a dedicated
//! rayon pool (`install`): parallel ops then queue their work on the pool's own deques (injecting
//! from outside a pool allocates a queue block every 63 jobs), and no idle worker of another pool
//! runs rayon's background bookkeeping (crossbeam-epoch garbage collection, which allocates on its
//! own schedule) while the steps are counted. The tiny model runs on one thread, the wider model on
//! two, so its GEMVs and attention really split across workers.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kosmos_tensor::packed::PackedBf16;
use kosmos_tensor::{ops, DType, Device, Tensor};
use kosmos_text::{
    DecodeScratch, DecodeStep, ForwardOptions, Kosmos2TextConfig, LogitsMode, PositionMode,
    StoreWeights, TextForCausalLM, TextInputs, TextNames, WeightSource,
};
use support::{model_dir, text_fixture, Fixture};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts the heap allocations (all threads) made by `f`.
fn count_allocs(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

/// Prefill with the general forward, then greedy steps with `decode_step`: returns the
/// allocations of steps 2..=steps and the generated ids (row-major per step).
fn greedy_decode(
    lm: &TextForCausalLM,
    ids: &[u32],
    batch: usize,
    mask: Option<&[u32]>,
    image: Option<(&Tensor, &[u32])>,
    steps: usize,
) -> (usize, Vec<u32>) {
    let t = ids.len() / batch;
    let mode = PositionMode::RealTokens;
    let mut inputs = TextInputs::from_ids(ids, batch, t).unwrap();
    if let Some(m) = mask {
        inputs = inputs.with_attention_mask(m);
    }
    if let Some((img, pm)) = image {
        inputs = inputs.with_image_embeds(img, pm);
    }
    let opts = ForwardOptions {
        position_mode: mode,
        ..Default::default()
    };
    // The cache and the scratch are sized for the whole generation up front.
    let mut cache = lm.model.new_cache(batch, t + steps).unwrap();
    let mut scratch = DecodeScratch::new(lm.config(), batch, t + steps);
    let out = lm
        .forward(&inputs, Some(&mut cache), &opts, LogitsMode::Last, None)
        .unwrap();
    let mut tokens = ops::argmax_last_dim(out.logits.as_ref().unwrap()).unwrap();
    drop(out);
    // The attention mask grows by one column per step: reserve it (and the ids) up front.
    let mut rows: Vec<Vec<u32>> = (0..batch)
        .map(|r| {
            let mut v = Vec::with_capacity(t + steps);
            if let Some(m) = mask {
                v.extend_from_slice(&m[r * t..(r + 1) * t]);
            }
            v
        })
        .collect();
    let mut flat: Vec<u32> = Vec::with_capacity(batch * (t + steps));
    let mut generated: Vec<u32> = Vec::with_capacity(batch * steps);
    let mut step = |tokens: &mut Vec<u32>| {
        flat.clear();
        if mask.is_some() {
            for r in rows.iter_mut() {
                r.push(1);
                flat.extend_from_slice(r);
            }
        }
        let mut s = DecodeStep::new(tokens).with_position_mode(mode);
        if mask.is_some() {
            s = s.with_attention_mask(&flat);
        }
        let logits = lm.decode_step(&s, &mut cache, &mut scratch).unwrap();
        let v = logits.len() / batch;
        for (tok, row) in tokens.iter_mut().zip(logits.chunks_exact(v)) {
            *tok = ops::argmax_slice(row).unwrap();
        }
        generated.extend_from_slice(tokens);
    };
    step(&mut tokens); // step 1 may size the workspace
    let allocs = count_allocs(|| {
        for _ in 1..steps {
            step(&mut tokens);
        }
    });
    (allocs, generated)
}

/// A synthetic decoder big enough for the parallel paths (GEMV over rayon, attention over heads).
/// A source that hands out every linear weight packed for the bf16 GEMM (`PackedBf16`), as
/// `StoreWeights` does for bf16 on an AVX512_BF16 CPU.
struct Packing(HashMap<String, Tensor>);

impl WeightSource for Packing {
    fn tensor(&self, name: &str, shape: &[usize]) -> kosmos_text::Result<Tensor> {
        self.0.tensor(name, shape)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn packed_bf16(&self, name: &str, dims: [usize; 2]) -> kosmos_text::Result<Option<PackedBf16>> {
        Ok(Some(PackedBf16::from_tensor(&self.0.tensor(name, &dims)?)?))
    }
}

/// The synthetic decoder's weights at `dtype`, packed (bf16) when `packed`.
fn synthetic(dtype: DType, packed: bool) -> TextForCausalLM {
    let cfg = Kosmos2TextConfig {
        vocab_size: 2048,
        embed_dim: 256,
        layers: 2,
        ffn_dim: 1024,
        attention_heads: 4,
        ..Default::default()
    };
    let weights: HashMap<String, Tensor> = TextNames::kosmos2()
        .all_keys(&cfg, false)
        .into_iter()
        .map(|(k, s)| {
            let n: usize = s.iter().product();
            let salt = k.len();
            let v = (0..n)
                .map(|i| ((i * 7919 + salt * 31) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let t = Tensor::from_vec(v, &s, &Device::Cpu).unwrap();
            (k, t.to_dtype(dtype).unwrap())
        })
        .collect();
    if packed {
        return TextForCausalLM::load(&cfg, &Packing(weights), &TextNames::kosmos2()).unwrap();
    }
    TextForCausalLM::load(&cfg, &weights, &TextNames::kosmos2()).unwrap()
}

#[test]
fn greedy_decode_steps_allocate_nothing() {
    // Each scenario runs entirely inside one of these pools, so no other rayon thread exists.
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, two) = (pool(1), pool(2));
    // Workers start asynchronously, and a thread's start-up (and its first crossbeam-epoch pin)
    // allocates: make every worker run a job first, so that all of that is over before counting.
    for p in [&one, &two] {
        p.broadcast(|_| ());
    }
    one.install(tiny_scenarios);
    two.install(synthetic_scenarios);
}

/// The tiny fixture model (f32) with its image prompt: the whole batch, one row, and the
/// left-padded fixture (the padding-mask path).
fn tiny_scenarios() {
    let dir = model_dir(&common::fixtures_dir(), "tiny");
    let (cfg, store) = text_fixture(&dir);
    let src = StoreWeights::new(&store, DType::F32, &Device::Cpu);
    let tiny = TextForCausalLM::load(&cfg, &src, &TextNames::kosmos2()).unwrap();
    let fx = Fixture::open(&dir.join("reference.safetensors"));
    let s = fx.shape("input_ids");
    let (b, t) = (s[0], s[1]);
    let (ids, pm, img) = (
        fx.u32("input_ids"),
        fx.u32("image_embeds_position_mask"),
        fx.tensor("image_embeds"),
    );
    let (allocs, gen) = greedy_decode(&tiny, &ids, b, None, Some((&img, &pm)), 16);
    assert_eq!(gen.len(), b * 16);
    assert_eq!(
        allocs, 0,
        "tiny, {b} rows: allocations in decode steps 2..16"
    );
    let img0 = img.narrow(0, 0, 1).unwrap();
    let (allocs, _) = greedy_decode(&tiny, &ids[..t], 1, None, Some((&img0, &pm[..t])), 16);
    assert_eq!(allocs, 0, "tiny, 1 row: allocations in decode steps 2..16");

    let fx = Fixture::open(&dir.join("reference_left_pad.safetensors"));
    let s = fx.shape("input_ids");
    let (ids, am, pm, img) = (
        fx.u32("input_ids"),
        fx.u32("attention_mask"),
        fx.u32("image_embeds_position_mask"),
        fx.tensor("image_embeds"),
    );
    let (allocs, _) = greedy_decode(&tiny, &ids, s[0], Some(&am), Some((&img, &pm)), 12);
    assert_eq!(
        allocs, 0,
        "tiny left-padded: allocations in decode steps 2..12"
    );
}

/// A wider synthetic decoder whose GEMVs and attention run on rayon (two workers), f32, bf16 and
/// packed bf16 weights, 1 and 3 rows, a 300-token prompt (attention over heads in parallel).
fn synthetic_scenarios() {
    for (dtype, packed) in [
        (DType::F32, false),
        (DType::BF16, false),
        (DType::BF16, true),
    ] {
        let lm = synthetic(dtype, packed);
        for batch in [1usize, 3] {
            let ids: Vec<u32> = (0..batch * 300)
                .map(|i| 2 + (i as u32 * 37) % 2000)
                .collect();
            let (allocs, _) = greedy_decode(&lm, &ids, batch, None, None, 10);
            assert_eq!(
                allocs, 0,
                "synthetic {dtype:?} (packed: {packed}), {batch} rows: allocations in decode steps 2..10"
            );
        }
    }
}
