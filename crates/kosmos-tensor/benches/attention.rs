//! Attention on the vision tower's shapes (16 heads of 64, 257 tokens, q/k/v strided views of a
//! `[1, 257, 1024]` projection output, as `MultiHeadAttention` passes them) and on the text
//! prefill's (32 heads of 64, 71 tokens), with f32 and with bf16 products.
//!
//! `cargo bench -p kosmos-tensor --bench attention` (set `RAYON_NUM_THREADS` to pin threads). Freed
//! buffers are kept for reuse, as in the `kosmos2` binary.
//! GFLOP/s counts the two products (`4 · heads · tq · tk · hd`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use kosmos_tensor::ops::{self, AttentionProducts};
use kosmos_tensor::{Device, Tensor};

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            h as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// `[1, t, heads · hd]` → the `[1, heads, t, hd]` view.
fn heads(t: usize, h: usize, hd: usize, seed: u32) -> Tensor {
    Tensor::from_vec(filled(t * h * hd, seed), &[1, t, h, hd], &Device::Cpu)
        .and_then(|x| x.transpose(1, 2))
        .expect("bench input")
}

fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    for (name, t, h, hd) in [
        ("vision", 257usize, 16usize, 64usize),
        ("prefill", 71, 32, 64),
    ] {
        let (q, k, v) = (heads(t, h, hd, 1), heads(t, h, hd, 2), heads(t, h, hd, 3));
        let scale = (hd as f32).powf(-0.5);
        g.throughput(Throughput::Elements((4 * h * t * t * hd) as u64));
        for (pname, products) in [
            ("f32", AttentionProducts::F32),
            ("bf16", AttentionProducts::Bf16),
        ] {
            g.bench_function(
                BenchmarkId::new(pname, format!("{name} {h}x{t}x{hd}")),
                |bch| {
                    bch.iter(|| {
                        let r = ops::attention_products(&q, &k, &v, None, scale, false, products);
                        black_box(r.expect("attention"))
                    })
                },
            );
        }
    }
    g.finish();
}

fn main() {
    // As the `kosmos2` binary does: freed activation buffers are reused, not returned to the OS.
    kosmos_tensor::alloc::keep_freed_memory();
    let mut c = Criterion::default().configure_from_args();
    bench_attention(&mut c);
    c.final_summary();
}
