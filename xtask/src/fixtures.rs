//! `cargo xtask fixtures`: regenerate `tests/fixtures` from the HF reference.
//!
//! Every `xtask/reference/gen_*.py` script runs as
//! `python gen_X.py --assets <shared assets> --out <out>` and writes its own
//! sub-folder of `<out>`. With `--check` the output goes to a scratch folder
//! and is compared byte for byte with the committed fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::paths::{assets_dir, fixtures_dir, repo_root};
use crate::venv;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Regenerate into target/fixtures-check and compare byte for byte with tests/fixtures.
    #[arg(long)]
    check: bool,
    /// Run only the generators whose name contains this (e.g. `processor`, `models`).
    #[arg(long)]
    only: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let python = venv::ensure()?;
    let assets = assets_dir()?;
    let out = if args.check {
        let scratch = repo_root().join("target").join("fixtures-check");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).context("clearing target/fixtures-check")?;
        }
        std::fs::create_dir_all(&scratch)?;
        scratch
    } else {
        fixtures_dir()
    };
    for script in generators(args.only.as_deref())? {
        eprintln!("xtask: running {}", script.display());
        venv::run(
            Command::new(&python)
                .arg(&script)
                .arg("--assets")
                .arg(&assets)
                .arg("--out")
                .arg(&out)
                .current_dir(repo_root())
                .env("PYTHONHASHSEED", "0")
                .env("OMP_NUM_THREADS", "1")
                .env("MKL_NUM_THREADS", "1")
                .env("CUDA_VISIBLE_DEVICES", "")
                .env("HF_HUB_OFFLINE", "1")
                .env("TRANSFORMERS_OFFLINE", "1"),
        )?;
    }
    if args.check {
        compare_trees(&out, &fixtures_dir())?;
        eprintln!("xtask: regenerated fixtures are byte-identical to tests/fixtures");
    }
    Ok(())
}

/// The generator scripts, sorted by name.
fn generators(only: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let dir = repo_root().join("xtask").join("reference");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("gen_")
                && name.ends_with(".py")
                && only.is_none_or(|o| name.contains(o))
        })
        .collect();
    scripts.sort();
    if scripts.is_empty() {
        bail!("no generator scripts matched in {}", dir.display());
    }
    Ok(scripts)
}

/// Every file under `fresh` must exist under `committed` with the same bytes.
fn compare_trees(fresh: &Path, committed: &Path) -> anyhow::Result<()> {
    let mut files = Vec::new();
    walk(fresh, &mut files)?;
    let mut differ = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(fresh)?;
        let old = std::fs::read(committed.join(rel)).unwrap_or_default();
        let new = std::fs::read(f)?;
        if old != new {
            differ.push(rel.display().to_string());
        }
    }
    if !differ.is_empty() {
        bail!(
            "{} of {} regenerated fixture files differ from tests/fixtures: {}",
            differ.len(),
            files.len(),
            differ.join(", ")
        );
    }
    eprintln!("xtask: {} files compared", files.len());
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
