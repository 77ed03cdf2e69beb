//! The greedy generation loop allocates nothing per token (issue 4): a counting global allocator
//! around steps 2..N of `generate_with` on the tiny fixture model ([`Kosmos2Lm`]: the decoder step
//! with its KV cache appended in place, `lm_head` logits, logits processors, argmax, bookkeeping).
//!
//! The counter sees every thread. Everything runs in ONE test function so the harness runs nothing
//! else concurrently in this binary.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kosmos2::generation::{generate, generate_with, GenerationConfig, Prompt, PromptBatch};
use kosmos2::tensor::ops;
use kosmos2::{Device, Kosmos2ForConditionalGeneration, Kosmos2Lm, Precision};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

fn note() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
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

const NEW_TOKENS: usize = 12;

/// Greedy generation counting the allocations between the callback of step 1 (the token chosen
/// from the first decode step's logits) and the last callback: decode steps 2..N, each with its
/// processors, argmax and bookkeeping. Returns (allocations, sequences).
fn count_greedy(
    model: &Kosmos2ForConditionalGeneration,
    batch: &PromptBatch,
    cfg: &GenerationConfig,
) -> (usize, Vec<Vec<u32>>) {
    // The pool's workers start asynchronously (and allocate doing so): have them all running
    // first. Then decode on a pool thread, where parallel ops queue their work locally.
    ops::warm_pool();
    ops::in_pool(|| {
        let mut lm = Kosmos2Lm::new(model).with_max_new_tokens(cfg.max_new_tokens);
        let out = generate_with(&mut lm, batch, cfg, |ev| {
            if ev.step == 1 {
                ALLOCS.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
            }
            if ev.step + 1 == cfg.max_new_tokens {
                COUNTING.store(false, Ordering::SeqCst);
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        (ALLOCS.load(Ordering::SeqCst), out.sequences)
    })
}

#[test]
fn greedy_generation_steps_allocate_nothing() {
    let dir = common::fixtures_dir().join("models/tiny");
    // bf16 packs the text linears on an AVX512_BF16 CPU (`PackedBf16`: the packed GEMV).
    for precision in [Precision::F32, Precision::BF16, Precision::Int8] {
        greedy_steps_allocate_nothing_at(&dir, precision);
    }
}

/// f32 weights, bf16 (packed where the CPU has AVX512_BF16), and int8 text linears + head
/// (`linear_int8_into` in the step).
fn greedy_steps_allocate_nothing_at(dir: &std::path::Path, precision: Precision) {
    let model = Kosmos2ForConditionalGeneration::load(dir, &Device::Cpu, precision).unwrap();
    assert_eq!(model.lm_head.is_int8(), precision == Precision::Int8);
    // Two rows of different lengths: left padding, so the padding-mask path runs every step.
    let batch = PromptBatch::new(
        vec![
            Prompt::text(vec![0, 70, 71]),
            Prompt::text(vec![0, 5, 6, 7, 8]),
        ],
        1,
    )
    .unwrap();
    for (ngram, penalty) in [(0, 1.0), (3, 1.0), (3, 1.3)] {
        // No eos: every row runs all NEW_TOKENS steps (a finished row's cache reorder copies).
        let cfg = GenerationConfig {
            max_new_tokens: NEW_TOKENS,
            eos_token_id: vec![],
            pad_token_id: Some(1),
            no_repeat_ngram_size: ngram,
            repetition_penalty: penalty,
            ..GenerationConfig::default()
        };
        let (allocs, seqs) = count_greedy(&model, &batch, &cfg);
        assert_eq!(
            allocs, 0,
            "{precision}: no_repeat_ngram_size {ngram}, repetition_penalty {penalty}: allocations in steps 2..{NEW_TOKENS}"
        );
        // The same ids as the plain `generate` (without the reserved capacity).
        let plain = generate(&mut Kosmos2Lm::new(&model), &batch, &cfg).unwrap();
        assert_eq!(seqs, plain.sequences);
        assert!(seqs.iter().all(|s| s.len() == 5 + NEW_TOKENS));
    }
}
