//! Int8 weight-only GEMV (decode) against the bf16 GEMV on the same shapes, in the same run, and
//! the int8 prefill GEMM against the bf16 one.
//!
//! Also: 1, 2, 4, 8, 9, 16 and 17 rows (`gemv_rows_int8`), int8 and bf16 weights: the
//! batch-invariant multi-row GEMV (up to 16 rows) against the GEMM path (17 rows).
//!
//! `cargo bench -p kosmos-tensor --bench int8` (set `KOSMOS_SIMD` to pin a SIMD level and
//! `RAYON_NUM_THREADS` to pin threads). Each GEMV rotates over > 1 GB of distinct weights so that
//! it measures DRAM, not the cache; GB/s counts the weight bytes read (int8 values + f32 scales for
//! int8, 2 bytes per weight for bf16). The machine's read bandwidth (a parallel sum over 1 GiB) is
//! printed first for comparison.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kosmos_tensor::quant::Int8Weight;
use kosmos_tensor::{bf16, ops, simd::Isa, DType, Device, Tensor};
use rayon::prelude::*;

const ROTATE_BYTES: usize = 1 << 30;

fn hash(i: usize, seed: u32) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8
}

fn filled(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .into_par_iter()
        .map(|i| hash(i, seed) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

/// A random int8 weight (values in [-127, 127]) built directly from its parts.
fn int8_weight(n: usize, k: usize, seed: u32) -> Int8Weight {
    let q: Vec<i8> = (0..n * k)
        .into_par_iter()
        .map(|i| ((hash(i, seed) % 255) as i32 - 127) as i8)
        .collect();
    let scales = (0..n).map(|o| 1e-3 + (o % 7) as f32 * 1e-4).collect();
    Int8Weight::from_parts(q, scales, n, k).expect("int8 weight")
}

fn bf16_weight(n: usize, k: usize, seed: u32) -> Tensor {
    let v: Vec<bf16> = (0..n * k)
        .into_par_iter()
        .map(|i| bf16::from_f32(hash(i, seed) as f32 / (1u32 << 24) as f32 - 0.5))
        .collect();
    Tensor::from_vec_bf16(v, &[n, k], &Device::Cpu).expect("bf16 weight")
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

/// Best seconds per call of `f(i)` (i counts calls, for rotating weights) under criterion.
fn measure(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    bytes: usize,
    mut f: impl FnMut(usize),
) -> f64 {
    g.throughput(Throughput::Bytes(bytes as u64));
    let mut i = 0usize;
    let mut best = f64::INFINITY;
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                f(i);
                i += 1;
            }
            let e = t.elapsed();
            best = best.min(e.as_secs_f64() / iters as f64);
            e
        })
    });
    best
}

fn bench_gemv(c: &mut Criterion) {
    let bw = read_bandwidth();
    println!(
        "machine: {} rayon threads, SIMD {}, memory read bandwidth {bw:.1} GB/s",
        rayon::current_num_threads(),
        Isa::current()
    );
    let mut g = c.benchmark_group("gemv_int8");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (k, n) in [(2048usize, 8192usize), (8192, 2048), (2048, 65037)] {
        let x = Tensor::from_vec(filled(k, 99), &[1, k], &Device::Cpu).expect("x");
        let shape = format!("{k}x{n}");

        // Load-time cost: quantising one f32 matrix of this shape.
        let wf = Tensor::from_vec(filled(k * n, 7), &[n, k], &Device::Cpu).expect("w");
        let t = Instant::now();
        black_box(Int8Weight::quantize(&wf).expect("quantize"));
        let quant_s = t.elapsed().as_secs_f64();
        drop(wf);

        let bytes_i8 = n * k + 4 * n;
        let count = ROTATE_BYTES.div_ceil(bytes_i8).max(2);
        let ws: Vec<Int8Weight> = (0..count).map(|i| int8_weight(n, k, i as u32)).collect();
        let t_i8 = measure(&mut g, BenchmarkId::new("int8", &shape), bytes_i8, |i| {
            black_box(ops::linear_int8(&x, &ws[i % count], None).expect("gemv int8"));
        });
        drop(ws);

        let bytes_bf = n * k * 2;
        let count = ROTATE_BYTES.div_ceil(bytes_bf).max(2);
        let ws: Vec<Tensor> = (0..count).map(|i| bf16_weight(n, k, i as u32)).collect();
        let t_bf = measure(&mut g, BenchmarkId::new("bf16", &shape), bytes_bf, |i| {
            black_box(ops::linear(&x, &ws[i % count], None).expect("gemv bf16"));
        });
        drop(ws);

        if !(t_i8.is_finite() && t_bf.is_finite()) {
            continue; // filtered out on the command line
        }
        let gbs_i8 = bytes_i8 as f64 / t_i8 / 1e9;
        let gbs_bf = bytes_bf as f64 / t_bf / 1e9;
        println!(
            "gemv {k}->{n}: int8 {:.3} ms ({gbs_i8:.1} GB/s int8 = {:.0}% of read bw), \
             bf16 {:.3} ms ({gbs_bf:.1} GB/s = {:.0}%), int8 speedup {:.2}x; quantise {:.0} ms",
            t_i8 * 1e3,
            100.0 * gbs_i8 / bw,
            t_bf * 1e3,
            100.0 * gbs_bf / bw,
            t_bf / t_i8,
            quant_s * 1e3
        );
    }
    g.finish();
}

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_int8");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (m, k, n) in [(71usize, 2048usize, 8192usize), (71, 8192, 2048)] {
        let shape = format!("{m}x{k}->{n}");
        let flops = 2 * m * n * k;
        let x = Tensor::from_vec(filled(m * k, 1), &[m, k], &Device::Cpu).expect("x");
        let wq = int8_weight(n, k, 2);
        let t_i8 = measure(&mut g, BenchmarkId::new("int8", &shape), flops, |_| {
            black_box(ops::linear_int8(&x, &wq, None).expect("gemm int8"));
        });
        let wb = bf16_weight(n, k, 2);
        let xb = x.to_dtype(DType::BF16).expect("xb");
        let t_bf = measure(&mut g, BenchmarkId::new("bf16", &shape), flops, |_| {
            black_box(ops::linear(&xb, &wb, None).expect("gemm bf16"));
        });
        // The decoder keeps activations in f32: bf16 weights with f32 activations.
        let t_bf32 = measure(
            &mut g,
            BenchmarkId::new("bf16_x_f32", &shape),
            flops,
            |_| {
                black_box(ops::linear(&x, &wb, None).expect("gemm bf16 x f32"));
            },
        );
        if !(t_i8.is_finite() && t_bf.is_finite() && t_bf32.is_finite()) {
            continue;
        }
        let gf = |t: f64| flops as f64 / t / 1e9;
        println!(
            "gemm {shape}: int8 (x f32) {:.2} ms {:.1} GFLOP/s, bf16 (x f32) {:.2} ms {:.1} GFLOP/s, \
             bf16 (x bf16) {:.2} ms {:.1} GFLOP/s",
            t_i8 * 1e3,
            gf(t_i8),
            t_bf32 * 1e3,
            gf(t_bf32),
            t_bf * 1e3,
            gf(t_bf)
        );
    }
    g.finish();
}

/// Small decode batches: 2..=16 rows take the batch-invariant multi-row GEMV (each weight row read
/// once per pass for all rows of the pass), more rows the dequantised-panel GEMM. Time per call against one row.
fn bench_rows(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv_rows_int8");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let (k, n) = (2048usize, 8192usize);
    let bytes = n * k + 4 * n;
    let count = ROTATE_BYTES.div_ceil(bytes).max(2);
    let ws: Vec<Int8Weight> = (0..count).map(|i| int8_weight(n, k, i as u32)).collect();
    let mut one = f64::NAN;
    for rows in [1usize, 2, 4, 8, 9, 16, 17] {
        let x = Tensor::from_vec(filled(rows * k, 5), &[rows, k], &Device::Cpu).expect("x");
        let t = measure(
            &mut g,
            BenchmarkId::new(format!("rows{rows}"), format!("{k}x{n}")),
            bytes,
            |i| {
                black_box(ops::linear_int8(&x, &ws[i % count], None).expect("rows"));
            },
        );
        if !t.is_finite() {
            continue;
        }
        if rows == 1 {
            one = t;
        }
        println!(
            "int8 {rows} rows {k}->{n}: {:.3} ms per call = {:.2}x one row, {:.1} GB/s of weights",
            t * 1e3,
            t / one,
            bytes as f64 / t / 1e9
        );
    }
    drop(ws);
    // The same with bf16 weights through `linear_into` (the decoder's path: <= 8 rows take the
    // batch-invariant `gemv_rows_into`).
    let bytes = n * k * 2;
    let count = ROTATE_BYTES.div_ceil(bytes).max(2);
    let ws: Vec<Tensor> = (0..count).map(|i| bf16_weight(n, k, i as u32)).collect();
    for rows in [1usize, 2, 4, 8, 9] {
        let x = filled(rows * k, 5);
        let mut y = vec![0f32; rows * n];
        let t = measure(
            &mut g,
            BenchmarkId::new(format!("bf16_rows{rows}"), format!("{k}x{n}")),
            bytes,
            |i| {
                ops::linear_into(&x, &ws[i % count], None, &mut y).expect("rows");
                black_box(&y);
            },
        );
        if !t.is_finite() {
            continue;
        }
        if rows == 1 {
            one = t;
        }
        println!(
            "bf16 {rows} rows {k}->{n}: {:.3} ms per call = {:.2}x one row, {:.1} GB/s of weights",
            t * 1e3,
            t / one,
            bytes as f64 / t / 1e9
        );
    }
    g.finish();
}

criterion_group!(benches, bench_gemv, bench_gemm, bench_rows);
criterion_main!(benches);
