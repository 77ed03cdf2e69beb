//! The git-ignored Python venv holding the pinned HF reference stack.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::paths::repo_root;

/// The requirements file that pins the reference stack.
fn requirements() -> PathBuf {
    repo_root()
        .join("xtask")
        .join("reference")
        .join("requirements.txt")
}

/// The venv folder (`<repo>/.venv`, git-ignored), or `$KOSMOS2_VENV`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("KOSMOS2_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"))
}

/// The venv's python, creating the venv and installing the pinned stack when needed.
pub fn ensure() -> anyhow::Result<PathBuf> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    let stamp = dir.join(".kosmos2-requirements");
    let wanted = std::fs::read_to_string(requirements()).context("reading requirements.txt")?;
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !python.is_file() || have != wanted {
        if !python.is_file() {
            eprintln!("xtask: creating the reference venv at {}", dir.display());
            run(Command::new("python3").arg("-m").arg("venv").arg(&dir))?;
        }
        eprintln!("xtask: installing the pinned HF reference stack (first run downloads torch)");
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements()))?;
        std::fs::write(&stamp, wanted).context("writing the venv stamp")?;
    }
    check_no_torchvision(&python)?;
    Ok(python)
}

/// torchvision switches HF's CLIP image processor to a different resize: refuse it.
fn check_no_torchvision(python: &Path) -> anyhow::Result<()> {
    let status = Command::new(python)
        .args([
            "-c",
            "import importlib.util, sys; sys.exit(1 if importlib.util.find_spec('torchvision') else 0)",
        ])
        .status()
        .context("running the venv python")?;
    if !status.success() {
        bail!(
            "torchvision is installed in {}: it changes HF's image resize; remove it",
            venv_dir().display()
        );
    }
    Ok(())
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
