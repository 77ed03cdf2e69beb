//! `cargo xtask bench`: HF transformers vs kosmos2 on CPU, side by side, in one run (issue 8).
//!
//! Every repetition runs each engine in its own process, alternating (HF f32, kosmos2 f32, HF
//! bf16, kosmos2 bf16), so peak RSS is per process and drifts in machine load hit every engine.
//! Each process loads the model (timed), warms up, then times one image → 64 forced tokens run.
//! The table (median and min–max) goes to stdout and into the generated block of
//! `docs/performance.md`, with the CPU, the measured DRAM read bandwidth and the decode floor.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::bail;

mod report;

use report::{write_docs, Report};

use crate::full_size::{build_driver, capture, hf_env, path_str, prepare};
use crate::paths::{assets_dir, repo_root};
use crate::venv;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory (config.json + safetensors) instead of the full-size random checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// One repetition and 16 decode tokens: a smoke run (the docs are not rewritten).
    #[arg(long)]
    quick: bool,
    /// Repetitions (processes per engine).
    #[arg(long)]
    reps: Option<usize>,
    /// Forced new tokens in the decode phase.
    #[arg(long)]
    tokens: Option<usize>,
    /// Threads per engine (both engines get the same number).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Image from the shared assets' images/ folder.
    #[arg(long, default_value = "snowman.jpg")]
    image: String,
    /// The prompt (71 tokens with the image and the default).
    #[arg(long, default_value = "<grounding>An image of")]
    prompt: String,
    /// Engines to run, in alternation order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hf-f32,kosmos2-f32,hf-bf16,kosmos2-bf16,kosmos2-int8,kosmos2-int8-bf16"
    )]
    engines: Vec<String>,
    /// Skip the int8-vs-f32 top-1 agreement run (64 greedy tokens on the same image and prompt).
    #[arg(long)]
    no_agreement: bool,
    /// Do not rewrite the generated block of docs/performance.md.
    #[arg(long)]
    no_docs: bool,
}

/// One engine: its runs' metrics.
#[derive(Debug, Default)]
struct Engine {
    runs: Vec<BTreeMap<String, f64>>,
    failures: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

impl Engine {
    fn stat(&self, key: &str) -> Option<Stat> {
        let mut v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.get(key).copied())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stat {
            median: sorted_median(&v),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// The median of sorted, non-empty values (the mean of the middle two for an even count).
fn sorted_median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Machine facts for the report.
#[derive(Debug)]
struct Machine {
    cpu: String,
    cores: usize,
    simd_flags: Vec<String>,
    all_flags: String,
    mem_total: String,
    bandwidth: BTreeMap<String, f64>,
    load_before: String,
    load_after: String,
}

const SIMD_FLAGS: [&str; 14] = [
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
];

fn machine_facts() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let all_flags = field("flags");
    let have: Vec<&str> = all_flags.split_whitespace().collect();
    let simd_flags = SIMD_FLAGS
        .iter()
        .filter(|f| have.contains(f))
        .map(|f| f.to_string())
        .collect();
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu: field("model name"),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        simd_flags,
        all_flags,
        mem_total,
        bandwidth: BTreeMap::new(),
        load_before: loadavg(),
        load_after: String::new(),
    }
}

fn loadavg_1min() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Parses `RESULT\tkey=value ...` (numbers only; other values are skipped).
fn parse_result(stdout: &str) -> Option<BTreeMap<String, f64>> {
    let line = stdout.lines().rev().find(|l| l.starts_with("RESULT\t"))?;
    Some(
        line["RESULT\t".len()..]
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.to_string(), v)))
            .collect(),
    )
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let tokens = args.tokens.unwrap_or(if args.quick { 16 } else { 64 });
    let model = match &args.model {
        Some(m) => m.clone(),
        None => prepare(true, args.threads)?,
    };
    if !model.join("config.json").is_file() {
        bail!("{} has no config.json", model.display());
    }
    let assets = assets_dir()?;
    let processor = if model.join("tokenizer.json").is_file() {
        model.clone()
    } else {
        assets.join("kosmos-2-patch14-224")
    };
    let image = assets.join("images").join(&args.image);
    let python = venv::ensure()?;
    let driver = build_driver()?;
    for e in &args.engines {
        if !matches!(
            e.as_str(),
            "hf-f32"
                | "hf-bf16"
                | "kosmos2-f32"
                | "kosmos2-bf16"
                | "kosmos2-f16"
                | "kosmos2-int8"
                | "kosmos2-int8-bf16"
        ) {
            bail!("unknown engine {e:?} (hf-f32, hf-bf16, kosmos2-f32, kosmos2-bf16, kosmos2-f16, kosmos2-int8, kosmos2-int8-bf16)");
        }
    }

    let mut machine = machine_facts();
    // The read bandwidth is probed once per repetition, right before it: on a shared VM it moves
    // between minutes (29–53 GB/s medians in one session), so one probe before the whole run can
    // put the floors far from the decode runs they judge.
    let mut probes: Vec<BTreeMap<String, f64>> = Vec::new();
    let probe = |probes: &mut Vec<BTreeMap<String, f64>>| -> anyhow::Result<()> {
        eprintln!(
            "xtask: measuring DRAM read bandwidth (2 GB, {} threads)",
            args.threads
        );
        let (ok, out) = capture(Command::new(&driver).args([
            "bandwidth",
            "--gb",
            "2",
            "--threads",
            &args.threads.to_string(),
        ]))?;
        if let Some(r) = parse_result(&out).filter(|_| ok) {
            probes.push(r);
        }
        Ok(())
    };
    let (_, out) = capture(
        Command::new(&driver)
            .arg("floor")
            .args(["--model", path_str(&model)?]),
    )?;
    let decode_params = parse_result(&out)
        .and_then(|r| r.get("decode_weight_params").copied())
        .unwrap_or(f64::NAN);

    let mut engines: BTreeMap<String, Engine> = BTreeMap::new();
    for rep in 0..reps {
        probe(&mut probes)?;
        for name in &args.engines {
            let (kind, dtype) = name.split_once('-').unwrap_or((name, "f32"));
            let mut cmd = if kind == "hf" {
                let mut c = Command::new(&python);
                c.arg(
                    repo_root()
                        .join("xtask")
                        .join("reference")
                        .join("bench_hf.py"),
                )
                .args(["--threads", &args.threads.to_string()]);
                hf_env(&mut c, args.threads);
                c
            } else {
                let mut c = Command::new(&driver);
                c.arg("bench")
                    .env("RAYON_NUM_THREADS", args.threads.to_string());
                c
            };
            cmd.args(["--model", path_str(&model)?])
                .args(["--processor", path_str(&processor)?])
                .args(["--image", path_str(&image)?])
                .args(["--prompt", &args.prompt])
                .args(["--dtype", dtype])
                .args(["--tokens", &tokens.to_string()])
                .current_dir(repo_root());
            let load = loadavg_1min();
            let t = Instant::now();
            let (ok, out) = capture(&mut cmd)?;
            let entry = engines.entry(name.clone()).or_default();
            match parse_result(&out).filter(|_| ok) {
                Some(mut r) => {
                    eprintln!(
                        "xtask: rep {}/{reps} {name:13} decode {:7.1} ms/token, e2e {:8.0} ms, peak {:6.0} MiB ({:.0} s, load avg {load:.1})",
                        rep + 1,
                        r.get("decode_ms_per_token").copied().unwrap_or(f64::NAN),
                        r.get("e2e_ms").copied().unwrap_or(f64::NAN),
                        r.get("peak_rss_mib").copied().unwrap_or(f64::NAN),
                        t.elapsed().as_secs_f64()
                    );
                    r.insert("loadavg_1min".into(), load);
                    // The bandwidth probed before this repetition, for per-run floor ratios.
                    if let Some(bw) = probes.last().and_then(|p| p.get("read_gb_s_median")) {
                        r.insert("probe_gb_s".into(), *bw);
                    }
                    entry.runs.push(r);
                }
                None => {
                    eprintln!("xtask: rep {}/{reps} {name} FAILED", rep + 1);
                    entry.failures.push(format!("rep {}", rep + 1));
                }
            }
        }
    }
    machine.load_after = loadavg();
    machine.bandwidth = combine_probes(&probes);

    // int8 top-1 agreement with f32 over a 64-token greedy run (one process, both models).
    let agreement = if args.no_agreement || !args.engines.iter().any(|e| e == "kosmos2-int8") {
        None
    } else {
        eprintln!("xtask: int8 vs f32 top-1 agreement (64 greedy tokens)");
        let (ok, out) = capture(
            Command::new(&driver)
                .arg("agree")
                .env("RAYON_NUM_THREADS", args.threads.to_string())
                .args(["--model", path_str(&model)?])
                .args(["--processor", path_str(&processor)?])
                .args(["--image", path_str(&image)?])
                .args(["--prompt", &args.prompt])
                .args(["--tokens", "64"])
                .current_dir(repo_root()),
        )?;
        if !ok {
            eprintln!("xtask: the agreement run FAILED");
        }
        parse_result(&out).filter(|_| ok)
    };

    let report = Report {
        engines: &engines,
        order: &args.engines,
        machine: &machine,
        decode_params,
        reps,
        tokens,
        threads: args.threads,
        command: command_line(args),
        model: &model,
        image: &args.image,
        prompt: &args.prompt,
        wall_s: started.elapsed().as_secs_f64(),
        agreement: agreement.as_ref(),
    };
    let text = report.render();
    println!("{text}");
    let raw = repo_root().join("target").join("bench");
    std::fs::create_dir_all(&raw)?;
    std::fs::write(raw.join("last-report.md"), &text)?;
    if !args.quick && !args.no_docs {
        write_docs(&text)?;
        eprintln!("xtask: docs/performance.md updated (generated block)");
    }
    Ok(())
}

fn command_line(args: &Args) -> String {
    let mut s = String::from("cargo xtask bench");
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(r) = args.reps {
        let _ = write!(s, " --reps {r}");
    }
    if let Some(t) = args.tokens {
        let _ = write!(s, " --tokens {t}");
    }
    if args.model.is_some() {
        s.push_str(" --model DIR");
    }
    s
}

/// The bandwidth probes of one run as one summary: `read_gb_s_median` is the median of the
/// probes' medians (what the floors use), with their range (`probe_median_min` / `_max`), the best
/// and worst single pass over all probes, and the probe count (`probes`). Empty without probes.
fn combine_probes(probes: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut medians: Vec<f64> = probes
        .iter()
        .filter_map(|p| p.get("read_gb_s_median").copied())
        .collect();
    if medians.is_empty() {
        return BTreeMap::new();
    }
    medians.sort_by(f64::total_cmp);
    let n = medians.len();
    let median = sorted_median(&medians);
    let over = |key: &str, pick: fn(f64, f64) -> f64| {
        probes
            .iter()
            .filter_map(|p| p.get(key).copied())
            .reduce(pick)
            .unwrap_or(f64::NAN)
    };
    BTreeMap::from([
        ("read_gb_s_median".to_string(), median),
        ("probe_median_min".to_string(), medians[0]),
        ("probe_median_max".to_string(), medians[n - 1]),
        (
            "read_gb_s_best".to_string(),
            over("read_gb_s_best", f64::max),
        ),
        (
            "read_gb_s_worst".to_string(),
            over("read_gb_s_worst", f64::min),
        ),
        ("probes".to_string(), n as f64),
    ])
}

#[cfg(test)]
mod tests {
    use super::report::fmt_stat;
    use super::*;

    #[test]
    fn result_lines_parse_numbers_only() {
        let out = "noise\nRESULT\tload_ms=12.5 attn=sdpa e2e_ms=3\n";
        let r = parse_result(out).unwrap();
        assert_eq!(r.get("load_ms"), Some(&12.5));
        assert_eq!(r.get("e2e_ms"), Some(&3.0));
        assert!(!r.contains_key("attn"));
        assert!(parse_result("no result here").is_none());
    }

    #[test]
    fn stats_are_median_min_max() {
        let mut e = Engine::default();
        for v in [5.0, 1.0, 3.0, 10.0] {
            e.runs.push(BTreeMap::from([("x".to_string(), v)]));
        }
        let s = e.stat("x").unwrap();
        assert_eq!((s.median, s.min, s.max), (4.0, 1.0, 10.0));
        assert!(e.stat("y").is_none());
        assert_eq!(fmt_stat(Some(s)), "4.0 (1.0–10.0)");
    }

    #[test]
    fn bandwidth_probes_combine_into_the_median_of_medians() {
        let p = |median: f64, best: f64, worst: f64| {
            BTreeMap::from([
                ("read_gb_s_median".to_string(), median),
                ("read_gb_s_best".to_string(), best),
                ("read_gb_s_worst".to_string(), worst),
            ])
        };
        let c = combine_probes(&[
            p(53.0, 53.4, 48.2),
            p(31.0, 48.9, 28.1),
            p(30.6, 32.5, 29.8),
        ]);
        assert_eq!(c["read_gb_s_median"], 31.0);
        assert_eq!((c["probe_median_min"], c["probe_median_max"]), (30.6, 53.0));
        assert_eq!((c["read_gb_s_best"], c["read_gb_s_worst"]), (53.4, 28.1));
        assert_eq!(c["probes"], 3.0);
        assert_eq!(
            combine_probes(&[p(30.0, 31.0, 29.0), p(32.0, 33.0, 31.0)])["read_gb_s_median"],
            31.0
        );
        assert!(combine_probes(&[]).is_empty());
    }
}
