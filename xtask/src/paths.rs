//! Where things are: the workspace root, the shared assets, the fixtures.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `$KOSMOS2_ASSETS`, or `<repo>/../shared/assets`; an error when missing.
pub fn assets_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("KOSMOS2_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("..").join("shared").join("assets"),
    };
    if !dir
        .join("kosmos-2-patch14-224")
        .join("tokenizer.json")
        .is_file()
    {
        bail!(
            "shared assets not found at {} (set KOSMOS2_ASSETS to the folder holding \
             kosmos-2-patch14-224/ and images/)",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The committed fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}
