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
            panic!(
                "cannot find the workspace root above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
}

/// The committed fixtures folder, `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// True when running under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
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
    eprintln!(
        "skipping {test}: shared assets not found at {}",
        dir.display()
    );
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

/// The result of comparing a computed tensor with its reference.
#[derive(Debug, Clone, Copy)]
pub struct Parity {
    /// max |got - want|
    pub max_abs: f64,
    /// max |got - want| / max |want| (the error relative to the reference's scale)
    pub max_rel: f64,
}

/// Compares `got` with `want`, element by element.
///
/// The relative error is `max|got - want| / max|want|`: elementwise relative
/// errors are meaningless for entries near zero, so the reference's largest
/// magnitude sets the scale. Panics on a length mismatch or a NaN.
pub fn parity(got: &[f32], want: &[f32]) -> Parity {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut max_abs = 0f64;
    let mut scale = 0f64;
    for (&g, &w) in got.iter().zip(want) {
        assert!(!g.is_nan(), "NaN in computed output");
        max_abs = max_abs.max((g as f64 - w as f64).abs());
        scale = scale.max((w as f64).abs());
    }
    Parity {
        max_abs,
        max_rel: max_abs / scale.max(f64::MIN_POSITIVE),
    }
}

/// Compares, records the row for `cargo xtask parity`, and asserts `max_rel <= tol`.
pub fn assert_parity(component: &str, got: &[f32], want: &[f32], tol: f64) -> Parity {
    let p = parity(got, want);
    record_parity(component, p, tol);
    assert!(
        p.max_rel <= tol,
        "{component}: max rel error {:.3e} (max abs {:.3e}) exceeds tolerance {tol:.1e}",
        p.max_rel,
        p.max_abs
    );
    p
}

/// Appends one row to the parity report when `KOSMOS2_PARITY_REPORT` names a
/// file (set by `cargo xtask parity`). Rows are tab-separated:
/// component, max_abs, max_rel, tolerance, pass.
pub fn record_parity(component: &str, p: Parity, tol: f64) {
    use std::io::Write;
    let Some(path) = std::env::var_os("KOSMOS2_PARITY_REPORT") else {
        return;
    };
    let line = format!(
        "{component}\t{:e}\t{:e}\t{:e}\t{}\n",
        p.max_abs,
        p.max_rel,
        tol,
        p.max_rel <= tol
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
