//! The Rust side of `cargo xtask parity --full-size` and `cargo xtask bench` (one engine per process,
//! so peak RSS is this process's own).
//!
//! ```text
//! bench_driver parity    --model DIR --reference DIR --dtype f32|bf16|f16 [--assets DIR]
//! bench_driver bench     --model DIR --processor DIR --image FILE --prompt TEXT
//!                        --dtype f32|bf16|f16|int8|int8-bf16 [--tokens 64] [--warmup-tokens 4]
//! bench_driver load      --model DIR --dtype f32|bf16|f16|int8|int8-bf16
//! bench_driver agree     --model DIR --processor DIR --image FILE --prompt TEXT [--tokens 64]
//!                        [--quantized DIR | --dtype int8|int8-bf16]
//!                        (int8 vs f32 top-1 agreement over a greedy run)
//! bench_driver bandwidth [--gb 2] [--threads 2] [--reps 5]
//! bench_driver floor     --model DIR
//! ```
//!
//! Output is line-based for xtask: `ROW\tcomponent\tmax_abs\tmax_rel\ttol\tpass`,
//! `TOP1\tcomponent\tagree\ttotal`, `INFO\tkey\tvalue` and `RESULT\tkey=value ...`.
//! Threads: the tensor crate uses rayon's global pool; set `RAYON_NUM_THREADS`.
//! `KOSMOS2_RELEASE_VISION=1` (bench) drops the vision tower's mapped pages after each image encode;
//! `KOSMOS2_RELEASE_TEXT=1` (bench) drops the text decoder's before every decode step (to measure
//! what keeping f32 text weights out of the resident set would cost per token).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kosmos2::tensor::{ops, WeightStore};
use kosmos2::{
    greedy_agreement, DType, Device, Kosmos2Batch, Kosmos2Config, Kosmos2ForConditionalGeneration,
    Kosmos2ForwardOptions, Kosmos2Inputs, LmOptions, LogitsMode, Precision, Tensor, TextInputs,
};
use kosmos_processor::{Kosmos2Processor, ProcessOptions, ProcessorInput};
use serde_json::Value;

mod agree;
mod bandwidth;
mod bench;
mod parity;
mod weights_read;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_driver: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    // As the `kosmos2` binary does: reuse freed activation buffers.
    kosmos2::tensor::alloc::keep_freed_memory();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        return Err(
            "usage: bench_driver parity|bench|load|agree|bandwidth|floor --key value ...".into(),
        );
    };
    let args = Args::parse(rest)?;
    match mode.as_str() {
        "parity" => parity::parity(&args),
        "bench" => bench::bench(&args),
        "load" => load(&args),
        "agree" => agree::agree(&args),
        "bandwidth" => bandwidth::bandwidth(&args),
        "floor" => weights_read::floor(&args),
        other => Err(format!("unknown mode {other:?}").into()),
    }
}

/// `--key value` pairs.
#[derive(Debug)]
struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Res<Self> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --key, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), v.clone());
        }
        Ok(Self(map))
    }

    fn str(&self, key: &str) -> Res<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{key}").into())
    }

    fn path(&self, key: &str) -> Res<PathBuf> {
        self.str(key).map(PathBuf::from)
    }

    fn num(&self, key: &str, default: usize) -> Res<usize> {
        match self.0.get(key) {
            Some(v) => Ok(v.parse().map_err(|_| format!("--{key}: not a number"))?),
            None => Ok(default),
        }
    }

    fn precision(&self) -> Res<Precision> {
        Ok(self.str("dtype")?.parse()?)
    }

    /// A float dtype (the parity mode compares against HF at a dtype).
    fn dtype(&self) -> Res<DType> {
        match self.precision()? {
            p if p.quantizes_int8() => {
                Err("parity takes f32, bf16 or f16 (int8: use `agree`)".into())
            }
            p => Ok(p.dtype()),
        }
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// `load --model DIR --dtype D`: the load alone, its time and memory (zero-copy f32 weights fault in
/// later, during the first forward pass; `bench` shows that by phase).
fn load(args: &Args) -> Res<()> {
    let dtype = args.precision()?;
    Mem::now().print("start");
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let model = Kosmos2ForConditionalGeneration::load(args.path("model")?, &Device::Cpu, dtype)?;
    let load_ms = ms(t);
    let (user, sys) = cpu_seconds();
    let after = Mem::now();
    after.print("load");
    println!(
        "RESULT\tload_ms={load_ms:.1} load_user_s={:.2} load_sys_s={:.2} rss_after_load_mib={:.0} \
         peak_rss_mib={:.0}",
        user - cpu0.0,
        sys - cpu0.1,
        after.rss,
        after.hwm
    );
    drop(model);
    Ok(())
}

/// User and system CPU seconds of this process so far, all threads (`/proc/self/stat` fields 14
/// and 15, in clock ticks, taken as the usual 100 per second).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it follow the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |t| t / 100.0)
    };
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    (field(11), field(12))
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// This process's memory from `/proc/self/status`, in MiB: resident now (`VmRSS`), its peak
/// (`VmHWM`), and the resident split into anonymous memory (`RssAnon`: owned tensors, activations,
/// caches, heap) and file pages (`RssFile`: mapped weights, the binary).
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: f64,
    hwm: f64,
    anon: f64,
    file: f64,
}

impl Mem {
    fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(f64::NAN, |kb| kb / 1024.0)
        };
        Self {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
            anon: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }

    fn print(&self, phase: &str) {
        println!(
            "INFO\tmem\t{phase} rss_mib={:.0} hwm_mib={:.0} anon_mib={:.0} file_mib={:.0}",
            self.rss, self.hwm, self.anon, self.file
        );
    }
}
