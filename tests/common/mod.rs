//! Shared helpers for the workspace's integration tests.
//!
//! Every crate's integration tests include this file with
//! `#[path = "../../../tests/common/mod.rs"] mod common;` so that the
//! rules for finding assets and fixtures live in one place.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/<name> or xtask; walk up to the workspace.
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("Cargo.toml").is_file() && dir.join("crates").is_dir() {
            return dir;
        }
        if !dir.pop() {
            panic!("cannot find the workspace root above {}", env!("CARGO_MANIFEST_DIR"));
        }
    }
}

/// The committed fixtures folder, `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// True when running under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// The shared assets folder: `$KOSMOS2_ASSETS`, or `<repo>/../shared/assets`.
///
/// Returns `None` (after printing a skip line) when the folder is missing,
/// and panics instead when `CI=true`: CI must never silently skip.
pub fn assets_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("KOSMOS2_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("..").join("shared").join("assets"),
    };
    if dir.join("kosmos-2-patch14-224").is_dir() && dir.join("images").is_dir() {
        return Some(dir);
    }
    if in_ci() {
        panic!(
            "{test}: shared assets not found at {} (set KOSMOS2_ASSETS); CI=true forbids skipping",
            dir.display()
        );
    }
    eprintln!("skipping {test}: shared assets not found at {}", dir.display());
    None
}

/// The real processor directory inside the shared assets.
pub fn real_model_dir(test: &str) -> Option<PathBuf> {
    assets_dir(test).map(|d| d.join("kosmos-2-patch14-224"))
}

/// An image from the shared assets.
pub fn image_path(assets: &Path, name: &str) -> PathBuf {
    assets.join("images").join(name)
}
