//! The side-by-side part of the `gemv` bench: the same GEMV / GEMM shapes timed in this process and
//! in a PyTorch child (`benches/torch_linear.py`), alternating round by round.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use kosmos_tensor::{simd::Isa, DType, Device, Tensor};

use super::{filled, rotated_weights, ROTATE_BYTES};

/// Target wall time of one timed batch of calls, per engine and round.
const BATCH_SECS: f64 = 0.15;

/// A persistent `torch_linear.py` child.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    fn start(python: &str, threads: usize) -> Result<(Torch, String), String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/torch_linear.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(threads.to_string())
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the torch child".into());
        };
        let mut t = Torch {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let banner = t.read_line()?;
        Ok((t, banner))
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the torch child exited (see its stderr above)".into()),
            Ok(_) => Ok(line.trim().to_string()),
            Err(e) => Err(format!("reading from the torch child: {e}")),
        }
    }

    fn ask(&mut self, cmd: &str) -> Result<String, String> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to the torch child: {e}"))?;
        self.read_line()
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// One benchmarked shape: `[m, k] x [n, k]^T` with weights in `wdt` and activations in `xdt`
/// (kosmos) / `tdt` for both (torch, whose `linear` needs one dtype).
#[derive(Clone, Copy)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    xdt: DType,
    wdt: DType,
    tdt: DType,
    /// kosmos reads the weight packed (`PackedBf16`, bf16 only).
    packed: bool,
}

impl Case {
    fn is_gemv(&self) -> bool {
        self.m == 1
    }
    fn weight_bytes(&self) -> usize {
        self.n * self.k * self.wdt.size_in_bytes()
    }
    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
    fn label(&self) -> String {
        if self.is_gemv() {
            format!(
                "gemv {}x{}->{} w={}",
                self.m,
                self.k,
                self.n,
                super::format_name(self.wdt, self.packed)
            )
        } else {
            format!(
                "gemm {}x{}->{} x={} w={}",
                self.m,
                self.k,
                self.n,
                self.xdt,
                super::format_name(self.wdt, self.packed)
            )
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// Per-call seconds of each engine over the rounds, and the read bandwidth sampled in each round.
struct Timing {
    ours: Vec<f64>,
    torch: Vec<f64>,
    bw: Vec<f64>,
}

/// One parallel sum over `buf` (> the cache): read GB/s right now.
fn bandwidth_once(buf: &[f32]) -> f64 {
    use rayon::prelude::*;
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
    std::mem::size_of_val(buf) as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn time_case(
    torch: &mut Torch,
    case: Case,
    rounds: usize,
    bw_buf: &[f32],
) -> Result<Timing, String> {
    let count = if case.is_gemv() {
        ROTATE_BYTES.div_ceil(case.weight_bytes()).max(2)
    } else {
        1
    };
    let ws = rotated_weights(case.k, case.n, case.wdt, case.packed, count);
    let x = Tensor::from_vec(filled(case.m * case.k, 99), &[case.m, case.k], &Device::Cpu)
        .and_then(|t| t.to_dtype(case.xdt))
        .map_err(|e| e.to_string())?;
    let reply = torch.ask(&format!(
        "prep {} {} {} {} {count}",
        case.m, case.k, case.n, case.tdt
    ))?;
    if reply != "ok" {
        return Err(format!("torch prep: {reply}"));
    }
    let mut i = 0usize;
    let mut ours = |iters: usize| -> Result<f64, String> {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(ws[i % count].forward(&x).map_err(|e| e.to_string())?);
            i += 1;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // Warm-up (page faults of every rotated weight) and calibration on the Rust side.
    ours(count)?;
    let one = ours(count)? / count as f64;
    let iters = ((BATCH_SECS / one) as usize).clamp(count.max(3), 5000);
    let mut timing = Timing {
        ours: Vec::new(),
        torch: Vec::new(),
        bw: Vec::new(),
    };
    for r in 0..rounds {
        if case.is_gemv() {
            std::thread::sleep(Duration::from_millis(30));
            timing.bw.push(bandwidth_once(bw_buf));
        }
        for side in [r % 2, 1 - r % 2] {
            // Let the other engine's spinning workers go to sleep first.
            std::thread::sleep(Duration::from_millis(30));
            if side == 0 {
                timing.ours.push(ours(iters)? / iters as f64);
            } else {
                let secs: f64 = torch
                    .ask(&format!("time {iters}"))?
                    .parse()
                    .map_err(|e| format!("torch time: {e}"))?;
                timing.torch.push(secs / iters as f64);
            }
        }
    }
    Ok(timing)
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (k, n) in [(2048, 2048), (2048, 8192), (8192, 2048), (2048, 65037)] {
        for (d, packed) in super::FORMATS {
            v.push(Case {
                m: 1,
                k,
                n,
                xdt: DType::F32,
                wdt: d,
                tdt: d,
                packed,
            });
        }
    }
    // ViT (257 rows: qkv/out 1024->1024, fc1, fc2), projection (dense 257x1024->2048, latent
    // queries 64 rows, keys/values 257 + 64 rows), text prefill (71 rows).
    for (m, k, n) in [
        (257, 1024, 1024),
        (257, 1024, 3072),
        (257, 1024, 4096),
        (257, 4096, 1024),
        (257, 1024, 2048),
        (64, 2048, 2048),
        (321, 2048, 2048),
        (71, 2048, 2048),
        (71, 2048, 8192),
        (71, 8192, 2048),
    ] {
        // x=f32 w=bf16 is the model's bf16 mode (f32 activations rounded to bf16 at the linear);
        // torch runs it as bf16 x bf16, which is what HF bf16 does.
        for (xdt, wdt, packed) in [
            (DType::F32, DType::F32, false),
            (DType::F32, DType::BF16, false),
            (DType::F32, DType::BF16, true),
            (DType::BF16, DType::BF16, false),
        ] {
            v.push(Case {
                m,
                k,
                n,
                xdt,
                wdt,
                tdt: wdt,
                packed,
            });
        }
    }
    // `KOSMOS2_BENCH_CASES=a,b`: only the cases whose label contains one of the substrings.
    if let Ok(filter) = std::env::var("KOSMOS2_BENCH_CASES") {
        let parts: Vec<&str> = filter.split(',').filter(|p| !p.is_empty()).collect();
        v.retain(|c| {
            let label = c.label();
            parts.iter().any(|p| label.contains(p))
        });
    }
    v
}

/// Runs the side-by-side comparison when `KOSMOS2_BENCH_HF` names a Python with torch.
pub fn run(read_bandwidth: fn() -> f64) {
    let Ok(python) = std::env::var("KOSMOS2_BENCH_HF") else {
        println!("vs_torch: skipped (set KOSMOS2_BENCH_HF=<python with torch> to time PyTorch side by side)");
        return;
    };
    let threads = rayon::current_num_threads();
    let rounds = std::env::var("KOSMOS2_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7usize)
        .max(1);
    let (mut torch, banner) = match Torch::start(&python, threads) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vs_torch: {e}");
            return;
        }
    };
    let load_before = load_average();
    let bw = read_bandwidth();
    let bw_buf = vec![1f32; ROTATE_BYTES / 8];
    println!(
        "\nvs_torch: kosmos {threads} rayon threads, SIMD {}; {banner}; {rounds} rounds alternating; \
         read bandwidth {bw:.1} GB/s (best of 10; \
         the % columns use the median of a 512 MiB read sampled in every round of that row); load average {load_before}",
        Isa::current()
    );
    println!(
        "| shape | kosmos median (best) | torch median (best) | torch/kosmos time: median (best) | read GB/s (median of rounds) | kosmos % of bandwidth | torch % of bandwidth |"
    );
    println!("|---|---|---|---|---|---|---|");
    for case in cases() {
        let mut t = match time_case(&mut torch, case, rounds, &bw_buf) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("vs_torch {}: {e}", case.label());
                continue;
            }
        };
        let best_o = t.ours.iter().copied().fold(f64::INFINITY, f64::min);
        let best_t = t.torch.iter().copied().fold(f64::INFINITY, f64::min);
        let (med_o, med_t) = (median(&mut t.ours), median(&mut t.torch));
        let bw = if t.bw.is_empty() {
            bw
        } else {
            median(&mut t.bw)
        };
        let (unit, rate): (&str, Box<dyn Fn(f64) -> f64>) = if case.is_gemv() {
            let b = case.weight_bytes() as f64;
            ("GB/s", Box::new(move |s| b / s / 1e9))
        } else {
            let f = case.flops();
            ("GFLOP/s", Box::new(move |s| f / s / 1e9))
        };
        let pct = |s: f64| {
            if case.is_gemv() {
                format!("{:.0}%", 100.0 * rate(s) / bw)
            } else {
                "-".into()
            }
        };
        println!(
            "| {} | {:.1} ({:.1}) {unit} | {:.1} ({:.1}) {unit} | {:.2}x ({:.2}x) | {} | {} | {} |",
            case.label(),
            rate(med_o),
            rate(best_o),
            rate(med_t),
            rate(best_t),
            med_t / med_o,
            best_t / best_o,
            if case.is_gemv() {
                format!("{bw:.1}")
            } else {
                "-".into()
            },
            pct(med_o),
            pct(med_t),
        );
    }
    println!(
        "vs_torch: ratio > 1 means kosmos is faster; load average before {load_before}, after {}",
        load_average()
    );
}
