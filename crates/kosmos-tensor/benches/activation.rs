//! The activations on the model's shapes: the erf GELU on the text FFN's prefill output (71 rows
//! of 8192) and the quick GELU on the vision MLP's (257 rows of 4096), standalone and fused into
//! the bf16 panel GEMM's epilogue (`Linear::forward_act` over a packed bf16 weight, against the
//! same GEMM without the activation).
//!
//! Inputs are normal with σ = 0.9, which puts 81 % / 14 % / 5 % of the erf GELU's inputs in
//! `erff`'s three ranges, as the full-size checkpoint's text FFN does (the erf GELU sorts lanes by
//! range, so its cost depends on that split; `gemv`'s `gemm_act` group uses uniform inputs).
//!
//! `cargo bench -p kosmos-tensor --bench activation` (set `RAYON_NUM_THREADS` to pin threads).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use kosmos_tensor::nn::Linear;
use kosmos_tensor::ops::Activation;
use kosmos_tensor::{Device, Tensor};

/// Deterministic normal values (Box–Muller on a hash) with standard deviation `sigma`.
fn normal(n: usize, sigma: f32, seed: u32) -> Vec<f32> {
    let unit = |i: usize, k: u32| {
        let h = (i as u32).wrapping_mul(2_654_435_761) ^ k.wrapping_mul(0x9e37_79b9);
        let h = h.wrapping_mul(0x85eb_ca6b) ^ (h >> 13);
        ((h >> 8) as f32 + 0.5) / (1u32 << 24) as f32
    };
    (0..n)
        .map(|i| {
            let (u1, u2) = (unit(i, seed), unit(i, seed ^ 0x5bd1_e995));
            sigma * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

fn tensor(v: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims, &Device::Cpu).expect("bench input")
}

fn bench_standalone(c: &mut Criterion) {
    let mut g = c.benchmark_group("activation");
    g.sample_size(30);
    for (name, act, rows, n) in [
        ("gelu_erf", Activation::GeluErf, 71usize, 8192usize),
        ("quick_gelu", Activation::QuickGelu, 257, 4096),
    ] {
        let x = tensor(normal(rows * n, 0.9, 7), &[rows, n]);
        g.throughput(Throughput::Elements((rows * n) as u64));
        g.bench_function(BenchmarkId::new(name, format!("{rows}x{n}")), |b| {
            b.iter(|| black_box(act.apply(&x).expect("activation")))
        });
    }
    g.finish();
}

fn bench_fused(c: &mut Criterion) {
    let mut g = c.benchmark_group("linear_act");
    g.sample_size(20);
    for (name, act, rows, k, n) in [
        (
            "gelu_erf",
            Activation::GeluErf,
            71usize,
            2048usize,
            8192usize,
        ),
        ("quick_gelu", Activation::QuickGelu, 257, 1024, 4096),
    ] {
        let w = tensor(normal(n * k, 0.02, 3), &[n, k])
            .to_dtype(kosmos_tensor::DType::BF16)
            .expect("bf16 weight");
        // Inputs scaled so that the outputs have σ ≈ 0.9 (x σ · w σ · √k).
        let sigma = 0.9 / (0.02 * (k as f32).sqrt());
        let x = tensor(normal(rows * k, sigma, 5), &[rows, k]);
        let layer = Linear::new(w, None).pack_bf16().expect("pack");
        g.throughput(Throughput::Elements((2 * rows * k * n) as u64));
        let id = format!("{rows}x{k}x{n}");
        g.bench_function(BenchmarkId::new(format!("{name}/fused"), &id), |b| {
            b.iter(|| black_box(layer.forward_act(&x, act).expect("linear_act")))
        });
        g.bench_function(BenchmarkId::new("none", &id), |b| {
            b.iter(|| black_box(layer.forward(&x).expect("linear")))
        });
    }
    g.finish();
}

fn main() {
    // As the `kosmos2` binary does: freed activation buffers are reused, not returned to the OS.
    kosmos_tensor::alloc::keep_freed_memory();
    let mut c = Criterion::default().configure_from_args();
    bench_standalone(&mut c);
    bench_fused(&mut c);
    c.final_summary();
}
