//! `cargo xtask parity --full-size`: HF and kosmos2 on the full-size (1.66B) random-weight model.
//!
//! 1. `xtask/reference/full_size_reference.py` builds the checkpoint once (HF init, fixed seed,
//!    cached in `target/full-size/model/`) and the HF reference outputs on `snowman.jpg` +
//!    `"<grounding>An image of"` (cached in `target/full-size/reference.*`).
//! 2. `bench_driver parity` (a kosmos2 example, one process per dtype) loads the checkpoint, runs
//!    HF's processor output and prints error rows, top-1 agreements and info lines.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::paths::{assets_dir, repo_root};
use crate::venv;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Weight dtypes of the kosmos2 runs (f32 must stay within 1e-4 of HF f32).
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16,f16")]
    pub dtypes: Vec<String>,
    /// Threads of each engine (RAYON_NUM_THREADS / torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dtypes: vec!["f32".into(), "bf16".into(), "f16".into()],
            threads: 2,
        }
    }
}

/// `target/full-size`, where the checkpoint and the reference are cached.
pub fn full_size_dir() -> PathBuf {
    repo_root().join("target").join("full-size")
}

/// Runs the reference script: the checkpoint only (`build_only`) or the checkpoint and the HF
/// reference outputs. Both are cached; returns the model directory.
pub fn prepare(build_only: bool, threads: usize) -> anyhow::Result<PathBuf> {
    let python = venv::ensure()?;
    let out = full_size_dir();
    std::fs::create_dir_all(&out).context("creating target/full-size")?;
    let script = repo_root()
        .join("xtask")
        .join("reference")
        .join("full_size_reference.py");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--assets")
        .arg(assets_dir()?)
        .arg("--out")
        .arg(&out)
        .arg("--threads")
        .arg(threads.to_string());
    if build_only {
        cmd.arg("--build-only");
    }
    venv::run(hf_env(&mut cmd, threads).current_dir(repo_root()))?;
    Ok(out.join("model"))
}

/// The environment of an HF reference process: offline, CPU, `threads` threads.
pub fn hf_env(cmd: &mut Command, threads: usize) -> &mut Command {
    cmd.env("OMP_NUM_THREADS", threads.to_string())
        .env("MKL_NUM_THREADS", threads.to_string())
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
}

/// Builds `bench_driver` (release) and returns its path.
pub fn build_driver() -> anyhow::Result<PathBuf> {
    venv::run(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "kosmos2",
                "--example",
                "bench_driver",
            ])
            .current_dir(repo_root()),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let exe = target.join("release").join("examples").join("bench_driver");
    if !exe.is_file() {
        bail!("bench_driver not found at {}", exe.display());
    }
    Ok(exe)
}

/// Runs a command and returns its stdout (stderr passes through); fails when it fails, after
/// handing back what it printed.
pub fn capture(cmd: &mut Command) -> anyhow::Result<(bool, String)> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// The full-size parity run.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let model = prepare(false, opts.threads)?;
    let driver = build_driver()?;
    let assets = assets_dir()?;
    let mut rows = String::new();
    let mut top1 = Vec::new();
    let mut info = Vec::new();
    let mut failed = Vec::new();
    for dtype in &opts.dtypes {
        eprintln!("xtask: kosmos2 {dtype} on the full-size checkpoint");
        let (ok, stdout) = capture(
            Command::new(&driver)
                .arg("parity")
                .args(["--model", path_str(&model)?])
                .args(["--reference", path_str(&full_size_dir())?])
                .args(["--dtype", dtype])
                .args(["--assets", path_str(&assets)?])
                .env("RAYON_NUM_THREADS", opts.threads.to_string()),
        )?;
        for line in stdout.lines() {
            let mut parts = line.splitn(2, '\t');
            match (parts.next(), parts.next()) {
                (Some("ROW"), Some(rest)) => {
                    rows.push_str(rest);
                    rows.push('\n');
                }
                (Some("TOP1"), Some(rest)) => top1.push(rest.to_string()),
                (Some("INFO"), Some(rest)) => info.push(format!("{dtype}\t{rest}")),
                _ => {}
            }
        }
        if !ok {
            failed.push(dtype.clone());
        }
    }
    crate::parity::print_table(&rows);
    println!("\ntop-1 agreement");
    for t in &top1 {
        let f: Vec<&str> = t.split('\t').collect();
        if let [name, agree, total] = f[..] {
            println!("  {name:60}  {agree}/{total}");
        }
    }
    println!("\ninfo");
    for i in &info {
        let f: Vec<&str> = i.split('\t').collect();
        if let [dtype, key, value] = f[..] {
            println!("  {dtype:5} {key:44} {value}");
        }
    }
    let report = full_size_dir().join("parity-report.txt");
    std::fs::write(
        &report,
        format!("{rows}\n{}\n\n{}\n", top1.join("\n"), info.join("\n")),
    )?;
    eprintln!("xtask: raw rows in {}", report.display());
    if !failed.is_empty() {
        bail!("full-size parity failed for {}", failed.join(", "));
    }
    Ok(())
}

pub fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
