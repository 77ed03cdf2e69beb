//! `cargo xtask kernels`: compile `kernels/*.cu` to `kernels/ptx/*.ptx` with a pinned nvcc.
//!
//! - nvcc comes from PyPI, installed into the git-ignored venv `<repo>/.venv-nvcc` (or
//!   `$KOSMOS2_NVCC_VENV`). Every package is pinned and installed with `--no-deps`: the nvcc wheel
//!   leaves `nvidia-nvvm` unpinned, and the newest NVVM emits PTX ISA 9.5, which the CUDA 13.0
//!   driver of the test machines rejects.
//! - Target `compute_80` with PTX ISA 9.0: the same PTX is JIT-compiled by the driver on A100, L4,
//!   RTX 4090, H100 and H200.
//! - Each PTX is also assembled by `ptxas` for sm_80 and sm_90, so a kernel that the driver would
//!   reject fails here, on the CPU machine.
//! - `kernels/ptx/manifest.txt` records the sha256 of every source, header and PTX. The CPU test
//!   `crates/kosmos-tensor/tests/ptx_fresh.rs` recomputes them, so stale PTX fails `cargo test`.
//! - `--check` compiles into `target/kernels-check` and compares byte for byte with the committed
//!   PTX and manifest.
//! - `--emu` also runs every kernel on a CPU emulator (`kernels/emu`) against f64 references.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use crate::paths::repo_root;
use crate::venv;

/// The pinned compiler packages (installed with `--no-deps`, so this is the complete set).
const NVCC_PACKAGES: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
];

/// nvcc flags. No `-lineinfo`/`-G`: they embed absolute paths and would make the PTX depend on
/// the checkout location. No fast math: the kernels must match the CPU backend to ~1e-6.
const NVCC_FLAGS: &[&str] = &["--ptx", "-arch=compute_80", "-std=c++17"];

/// What the PTX header must say (checked after every compile).
const PTX_VERSION_LINE: &str = ".version 9.0";
const PTX_TARGET_LINE: &str = ".target sm_80";

/// Architectures `ptxas` assembles each PTX for, as a check.
const PTXAS_ARCHS: &[&str] = &["sm_80", "sm_90"];

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Compile into target/kernels-check and fail unless the committed PTX and manifest match.
    #[arg(long)]
    check: bool,
    /// Print ptxas resource usage (registers, shared memory, spills) for sm_90.
    #[arg(long)]
    verbose: bool,
    /// Also run every kernel on the CPU emulator against f64 references (kernels/emu/run.sh;
    /// needs a C++20 compiler, takes a few minutes).
    #[arg(long)]
    emu: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let nvcc = ensure_nvcc()?;
    let kernels = repo_root().join("kernels");
    let sources = list(&kernels, "cu")?;
    let headers = list(&kernels, "cuh")?;
    if sources.is_empty() {
        bail!("no kernels/*.cu found in {}", kernels.display());
    }
    let committed = kernels.join("ptx");
    let out = if args.check {
        let scratch = repo_root().join("target").join("kernels-check");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).context("clearing target/kernels-check")?;
        }
        scratch
    } else {
        committed.clone()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if !args.check {
        remove_orphans(&out, &sources)?;
    }

    for src in &sources {
        let ptx = out.join(ptx_name(src)?);
        eprintln!("xtask: nvcc {}", file_name(src)?);
        venv::run(
            Command::new(&nvcc)
                .args(NVCC_FLAGS)
                .arg("-I")
                .arg(&kernels)
                .arg(src)
                .arg("-o")
                .arg(&ptx)
                .current_dir(&kernels),
        )?;
        check_header(&ptx)?;
        assemble(&nvcc, &ptx, args.verbose)?;
    }
    let manifest = manifest(&kernels, &sources, &headers, &out)?;
    std::fs::write(out.join("manifest.txt"), manifest).context("writing manifest.txt")?;

    if args.emu {
        eprintln!("xtask: running the kernels on the CPU emulator");
        venv::run(&mut Command::new(kernels.join("emu").join("run.sh")))?;
    }
    if args.check {
        compare(&out, &committed)?;
        eprintln!(
            "xtask: kernels/ptx is fresh ({} kernels, {} headers)",
            sources.len(),
            headers.len()
        );
    } else {
        eprintln!(
            "xtask: wrote {} PTX files and manifest.txt to {}",
            sources.len(),
            out.display()
        );
    }
    Ok(())
}

/// The venv's nvcc, creating the venv and installing the pinned packages when needed.
fn ensure_nvcc() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("KOSMOS2_NVCC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-nvcc"));
    let python = dir.join("bin").join("python");
    let stamp = dir.join(".kosmos2-nvcc");
    let wanted = NVCC_PACKAGES.join("\n");
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !python.is_file() || have != wanted {
        if !python.is_file() {
            eprintln!("xtask: creating the nvcc venv at {}", dir.display());
            venv::run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
        }
        eprintln!("xtask: installing {}", NVCC_PACKAGES.join(" "));
        venv::run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--no-deps"])
                .args(NVCC_PACKAGES),
        )?;
        std::fs::write(&stamp, &wanted).context("writing the nvcc venv stamp")?;
    }
    find_nvcc(&dir)
}

/// `<venv>/lib/python3.*/site-packages/nvidia/cu13/bin/nvcc`.
fn find_nvcc(venv: &Path) -> anyhow::Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
        let candidate = entry?
            .path()
            .join("site-packages")
            .join("nvidia")
            .join("cu13")
            .join("bin")
            .join("nvcc");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nvcc not found under {}/python3.*/site-packages/nvidia/cu13/bin",
        lib.display()
    )
}

/// Files `dir/*.ext`, sorted by name.
fn list(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    files.sort();
    Ok(files)
}

fn file_name(p: &Path) -> anyhow::Result<&str> {
    p.file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("non-UTF-8 file name {}", p.display()))
}

fn ptx_name(src: &Path) -> anyhow::Result<String> {
    let name = file_name(src)?;
    Ok(format!("{}.ptx", name.trim_end_matches(".cu")))
}

/// PTX files whose source is gone would stay embedded-looking but unchecked: remove them.
fn remove_orphans(out: &Path, sources: &[PathBuf]) -> anyhow::Result<()> {
    let wanted: Vec<String> = sources
        .iter()
        .map(|s| ptx_name(s))
        .collect::<Result<_, _>>()?;
    for ptx in list(out, "ptx")? {
        if !wanted.iter().any(|w| w == file_name(&ptx).unwrap_or("")) {
            eprintln!("xtask: removing orphan {}", ptx.display());
            std::fs::remove_file(&ptx)?;
        }
    }
    Ok(())
}

/// The PTX must be ISA 9.0 for sm_80, whatever nvcc was found.
fn check_header(ptx: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(ptx).with_context(|| format!("reading {}", ptx.display()))?;
    for want in [PTX_VERSION_LINE, PTX_TARGET_LINE] {
        if !text.lines().any(|l| l.trim() == want) {
            bail!(
                "{} lacks `{want}`: the nvcc in the venv is not the pinned 13.0.88",
                ptx.display()
            );
        }
    }
    Ok(())
}

/// Assemble with ptxas for each checked architecture (output discarded).
fn assemble(nvcc: &Path, ptx: &Path, verbose: bool) -> anyhow::Result<()> {
    let ptxas = nvcc.with_file_name("ptxas");
    for arch in PTXAS_ARCHS {
        let mut cmd = Command::new(&ptxas);
        cmd.arg(format!("-arch={arch}"))
            .arg(ptx)
            .arg("-o")
            .arg("/dev/null");
        if verbose && *arch == "sm_90" {
            cmd.arg("-v");
        }
        venv::run(&mut cmd)?;
    }
    Ok(())
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The manifest: toolchain, flags, then one line per header and per kernel.
fn manifest(
    kernels: &Path,
    sources: &[PathBuf],
    headers: &[PathBuf],
    out: &Path,
) -> anyhow::Result<String> {
    let mut m = String::new();
    m.push_str("# Generated by `cargo xtask kernels`; checked by crates/kosmos-tensor/tests/ptx_fresh.rs.\n");
    m.push_str("# Do not edit: change kernels/*.cu or kernels/*.cuh and rerun the xtask.\n");
    writeln!(m, "toolchain {}", NVCC_PACKAGES.join(" "))?;
    writeln!(m, "flags {}", NVCC_FLAGS.join(" "))?;
    for h in headers {
        writeln!(m, "header {} {}", file_name(h)?, sha256_file(h)?)?;
    }
    for s in sources {
        let ptx = ptx_name(s)?;
        writeln!(
            m,
            "kernel {} {} {} {}",
            file_name(s)?,
            sha256_file(&kernels.join(file_name(s)?))?,
            ptx,
            sha256_file(&out.join(&ptx))?
        )?;
    }
    Ok(m)
}

/// Every file of the fresh build must match the committed one, and nothing extra may be committed.
fn compare(fresh: &Path, committed: &Path) -> anyhow::Result<()> {
    let mut differ = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for f in std::fs::read_dir(fresh)? {
        let f = f?.path();
        let name = file_name(&f)?.to_string();
        let old = std::fs::read(committed.join(&name)).unwrap_or_default();
        if old != std::fs::read(&f)? {
            differ.push(name.clone());
        }
        names.push(name);
    }
    for f in std::fs::read_dir(committed)? {
        let name = file_name(&f?.path())?.to_string();
        if !names.contains(&name) {
            differ.push(format!("{name} (no source)"));
        }
    }
    if !differ.is_empty() {
        differ.sort();
        bail!(
            "kernels/ptx is stale; run `cargo xtask kernels`. Differing: {}",
            differ.join(", ")
        );
    }
    Ok(())
}
