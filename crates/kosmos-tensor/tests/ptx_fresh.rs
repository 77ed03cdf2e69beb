//! The committed PTX (`kernels/ptx/*.ptx`, embedded by the `cuda` feature) must be fresh: the
//! manifest written by `cargo xtask kernels` lists every kernel source and header with its
//! sha256, and every PTX with its own. Runs on every CPU machine, with or without `cuda`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const REGENERATE: &str = "run `cargo xtask kernels` and commit kernels/ptx";

fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("kernels")
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// File names `dir/*.ext`, sorted.
fn names(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()?.to_str()? == ext).then(|| p.file_name()?.to_str().map(String::from))?
        })
        .collect();
    v.sort();
    v
}

struct Manifest {
    toolchain: String,
    flags: String,
    headers: BTreeMap<String, String>,
    /// source -> (source sha, ptx name, ptx sha)
    kernels: BTreeMap<String, (String, String, String)>,
}

fn manifest() -> Manifest {
    let path = kernels_dir().join("ptx").join("manifest.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {REGENERATE}", path.display()));
    let mut m = Manifest {
        toolchain: String::new(),
        flags: String::new(),
        headers: BTreeMap::new(),
        kernels: BTreeMap::new(),
    };
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let f: Vec<&str> = rest.split(' ').collect();
        match (kind, f.as_slice()) {
            ("toolchain", _) => m.toolchain = rest.to_string(),
            ("flags", _) => m.flags = rest.to_string(),
            ("header", [name, sha]) => {
                m.headers.insert(name.to_string(), sha.to_string());
            }
            ("kernel", [src, sha, ptx, ptx_sha]) => {
                m.kernels.insert(
                    src.to_string(),
                    (sha.to_string(), ptx.to_string(), ptx_sha.to_string()),
                );
            }
            _ => panic!("malformed manifest line {line:?}; {REGENERATE}"),
        }
    }
    m
}

#[test]
fn manifest_pins_the_toolchain_and_target() {
    let m = manifest();
    for pin in [
        "nvidia-cuda-nvcc==13.0.88",
        "nvidia-cuda-cccl==13.0.85",
        "nvidia-nvvm==13.0.88",
    ] {
        assert!(
            m.toolchain.contains(pin),
            "toolchain lacks {pin}: {REGENERATE}"
        );
    }
    assert!(m.flags.contains("-arch=compute_80"), "flags: {}", m.flags);
    assert!(!m.flags.contains("lineinfo"), "flags: {}", m.flags);
}

#[test]
fn every_source_and_header_is_listed_with_its_current_hash() {
    let dir = kernels_dir();
    let m = manifest();
    let sources = names(&dir, "cu");
    let headers = names(&dir, "cuh");
    assert!(!sources.is_empty(), "no kernels/*.cu");
    assert_eq!(
        m.kernels.keys().cloned().collect::<Vec<_>>(),
        sources,
        "the manifest's kernels differ from kernels/*.cu; {REGENERATE}"
    );
    assert_eq!(
        m.headers.keys().cloned().collect::<Vec<_>>(),
        headers,
        "the manifest's headers differ from kernels/*.cuh; {REGENERATE}"
    );
    let mut stale = Vec::new();
    for h in &headers {
        if sha256(&dir.join(h)) != m.headers[h] {
            stale.push(h.clone());
        }
    }
    for (src, (sha, _, _)) in &m.kernels {
        if sha256(&dir.join(src)) != *sha {
            stale.push(src.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "PTX is stale: {stale:?} changed since the last compile; {REGENERATE}"
    );
}

#[test]
fn every_ptx_matches_the_manifest_and_targets_sm_80_isa_9_0() {
    let ptx_dir = kernels_dir().join("ptx");
    let m = manifest();
    let listed: Vec<String> = m.kernels.values().map(|(_, p, _)| p.clone()).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        names(&ptx_dir, "ptx"),
        sorted,
        "kernels/ptx holds PTX without a source (or lacks one); {REGENERATE}"
    );
    for (src, (_, ptx, ptx_sha)) in &m.kernels {
        assert_eq!(
            format!("{}.ptx", src.trim_end_matches(".cu")),
            *ptx,
            "manifest pairs {src} with {ptx}"
        );
        let path = ptx_dir.join(ptx);
        assert_eq!(
            sha256(&path),
            *ptx_sha,
            "{ptx} was edited or replaced; {REGENERATE}"
        );
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(text.lines().any(|l| l.trim() == ".version 9.0"), "{ptx}");
        assert!(text.lines().any(|l| l.trim() == ".target sm_80"), "{ptx}");
        assert!(
            !text.contains(".file"),
            "{ptx} embeds source paths (-lineinfo?)"
        );
    }
}
