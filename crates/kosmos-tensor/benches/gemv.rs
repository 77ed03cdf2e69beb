//! GEMV (decode) bandwidth and GEMM (prefill / vision) GFLOP/s on the KOSMOS-2 shapes, and the same
//! shapes timed side by side with PyTorch.
//!
//! `cargo bench -p kosmos-tensor --bench gemv` (set `KOSMOS_SIMD` to pin a SIMD level and
//! `RAYON_NUM_THREADS` to pin threads). GEMV rotates over > 1 GB of distinct weights per shape so that
//! it measures DRAM, not the cache; the machine's read bandwidth (a parallel sum over 1 GiB) is printed
//! first for comparison.
//!
//! With `KOSMOS2_BENCH_HF=<python with torch>` the bench also times `torch.nn.functional.linear` on
//! the same shapes and dtypes with the same thread count, in a Python child (`torch_linear.py`) fed
//! one command at a time, alternating with the Rust side round by round, and prints medians, bests
//! and ratios (`vs_torch`; `-- vs_torch` runs only that part, `KOSMOS2_BENCH_ROUNDS` sets the rounds,
//! default 7, `KOSMOS2_BENCH_CASES=gemm,x=f32 w=bf16` keeps the cases whose label contains one of
//! the comma-separated substrings). Without the variable it prints one line saying the torch side is
//! skipped.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use kosmos_tensor::{nn::Linear, simd::Isa, DType, Device, Tensor};
use rayon::prelude::*;

const ROTATE_BYTES: usize = 1 << 30;
/// Weight bytes the GEMM benches rotate over.
const GEMM_ROTATE_BYTES: usize = 128 << 20;

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

/// Parallel sum over a 1 GiB buffer: the DRAM read bandwidth the GEMV should approach.
fn read_bandwidth() -> f64 {
    let buf: Vec<f32> = vec![1.0; ROTATE_BYTES / 4];
    let mut best = 0f64;
    for _ in 0..10 {
        let t = Instant::now();
        let s: f32 = buf
            .par_chunks(1 << 16)
            .map(|c| {
                // 64 independent lanes so the sum vectorises and is not latency-bound.
                let mut acc = [0f32; 64];
                for v in c.chunks_exact(64) {
                    for l in 0..64 {
                        acc[l] += v[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        black_box(s);
        best = best.max(ROTATE_BYTES as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// `count` distinct `[n, k]` weights in `dtype`.
/// A weight `[n, k]` of `dtype` as a layer, packed for the bf16 GEMM when `packed`.
fn layer(w: Tensor, packed: bool) -> Linear {
    let l = Linear::new(w, None);
    if packed {
        l.pack_bf16().expect("pack")
    } else {
        l
    }
}

fn rotated_weights(k: usize, n: usize, dtype: DType, packed: bool, count: usize) -> Vec<Linear> {
    (0..count)
        .map(|i| {
            let w = Tensor::from_vec(filled(k * n, i as u32), &[n, k], &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .expect("weights");
            layer(w, packed)
        })
        .collect()
}

/// The weight formats benchmarked: each dtype row-major, and bf16 packed (`PackedBf16`).
const FORMATS: [(DType, bool); 4] = [
    (DType::F32, false),
    (DType::BF16, false),
    (DType::F16, false),
    (DType::BF16, true),
];

fn format_name(dtype: DType, packed: bool) -> String {
    if packed {
        format!("{dtype}-packed")
    } else {
        format!("{dtype}")
    }
}

fn bench_gemv(c: &mut Criterion) {
    let bw = read_bandwidth();
    println!(
        "machine: {} rayon threads, SIMD {}, memory read bandwidth {bw:.1} GB/s",
        rayon::current_num_threads(),
        Isa::current()
    );
    let mut g = c.benchmark_group("gemv");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (k, n) in [
        (2048usize, 2048usize),
        (2048, 8192),
        (8192, 2048),
        (2048, 65037),
    ] {
        for (dtype, packed) in FORMATS {
            let name = format_name(dtype, packed);
            let bytes = k * n * dtype.size_in_bytes();
            let count = ROTATE_BYTES.div_ceil(bytes).max(2);
            // Built on the first call only, so a filtered-out benchmark costs nothing.
            let mut ws: Vec<Linear> = Vec::new();
            let x = Tensor::from_vec(filled(k, 99), &[1, k], &Device::Cpu).expect("x");
            g.throughput(Throughput::Bytes(bytes as u64));
            let mut i = 0usize;
            let mut best = f64::INFINITY;
            g.bench_with_input(
                BenchmarkId::new(name.clone(), format!("{k}x{n}")),
                &(),
                |b, _| {
                    if ws.is_empty() {
                        ws = rotated_weights(k, n, dtype, packed, count);
                    }
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(ws[i % count].forward(&x).expect("gemv"));
                            i += 1;
                        }
                        let e = t.elapsed();
                        best = best.min(e.as_secs_f64() / iters as f64);
                        e
                    })
                },
            );
            if !best.is_finite() {
                continue; // filtered out on the command line
            }
            let gbs = bytes as f64 / best / 1e9;
            println!(
                "gemv {name} {k}->{n}: best {:.3} ms, {gbs:.1} GB/s = {:.0}% of read bandwidth",
                best * 1e3,
                100.0 * gbs / bw
            );
        }
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let shapes = [
        (257usize, 1024usize, 3072usize),
        (257, 1024, 4096),
        (257, 4096, 1024),
        (71, 2048, 2048),
        (71, 2048, 8192),
        (71, 8192, 2048),
    ];
    for (m, k, n) in shapes {
        for (xdt, dtype, packed) in [
            (DType::F32, DType::F32, false),
            (DType::F32, DType::BF16, false),
            (DType::F32, DType::BF16, true),
            (DType::BF16, DType::BF16, false),
        ] {
            let name = format_name(dtype, packed);
            let x = Tensor::from_vec(filled(m * k, 1), &[m, k], &Device::Cpu)
                .and_then(|t| t.to_dtype(xdt))
                .expect("x");
            // Rotated over ≥ 128 MB (more than the L3) so that the weights come from DRAM, as
            // they do in a forward pass, not from cache; built on first use.
            let count = (GEMM_ROTATE_BYTES / (n * k * dtype.size_in_bytes())).max(1);
            let mut ws: Vec<Linear> = Vec::new();
            let mut i = 0usize;
            let flops = 2 * m * n * k;
            g.throughput(Throughput::Elements(flops as u64));
            let mut best = f64::INFINITY;
            g.bench_function(
                BenchmarkId::new(format!("x_{xdt}_w_{name}"), format!("{m}x{k}->{n}")),
                |b| {
                    if ws.is_empty() {
                        ws = rotated_weights(k, n, dtype, packed, count);
                    }
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(ws[i % count].forward(&x).expect("gemm"));
                            i += 1;
                        }
                        let e = t.elapsed();
                        best = best.min(e.as_secs_f64() / iters as f64);
                        e
                    })
                },
            );
            if !best.is_finite() {
                continue;
            }
            println!(
                "gemm x={xdt} w={name} {m}x{k}->{n}: best {:.2} ms, {:.1} GFLOP/s",
                best * 1e3,
                flops as f64 / best / 1e9
            );
        }
    }
    g.finish();
}

/// `fc1` with its activation: in the GEMM's epilogue (`forward_act`) against the layer followed by
/// the standalone op (`apart`: a copy of the output and a second pass), on the model's two `fc1`
/// shapes (vision: 257 rows, quick GELU; text prefill: 71 rows, erf GELU), weights rotated as in
/// `gemm`. With the allocator tuning the model binaries apply (`alloc::keep_freed_memory`), so
/// the second buffer of `apart` costs what it costs in a forward pass, not fresh page faults.
fn bench_gemm_act(c: &mut Criterion) {
    use kosmos_tensor::ops::Activation;
    kosmos_tensor::alloc::keep_freed_memory();
    let mut g = c.benchmark_group("gemm_act");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let cases = [
        (257usize, 1024usize, 4096usize, Activation::QuickGelu),
        (71, 2048, 8192, Activation::GeluErf),
    ];
    for (m, k, n, act) in cases {
        for (dtype, packed) in [(DType::F32, false), (DType::BF16, true)] {
            let name = format_name(dtype, packed);
            let x = Tensor::from_vec(filled(m * k, 1), &[m, k], &Device::Cpu).expect("x");
            let count = (GEMM_ROTATE_BYTES / (n * k * dtype.size_in_bytes())).max(1);
            let ws = rotated_weights(k, n, dtype, packed, count);
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            for fused in [true, false] {
                let mut i = 0usize;
                let mode = if fused { "fused" } else { "apart" };
                g.bench_function(
                    BenchmarkId::new(format!("w_{name}_{mode}"), format!("{m}x{k}->{n}")),
                    |b| {
                        b.iter(|| {
                            let l = &ws[i % count];
                            i += 1;
                            let y = if fused {
                                l.forward_act(&x, act)
                            } else {
                                l.forward(&x).and_then(|h| act.apply(&h))
                            };
                            black_box(y.expect("fc1"))
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

#[path = "support/vs_torch.rs"]
mod vs_torch;

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let mut c = Criterion::default().configure_from_args();
    bench_gemv(&mut c);
    bench_gemm(&mut c);
    bench_gemm_act(&mut c);
    c.final_summary();
    if "vs_torch".contains(filter.as_str()) || filter.contains("vs_torch") {
        vs_torch::run(read_bandwidth);
    }
}
