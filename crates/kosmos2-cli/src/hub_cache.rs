//! `--model` as a local folder or as a Hugging Face hub id found in the local HF cache
//! (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), as `huggingface_hub`
//! lays it out: `models--ORG--NAME/refs/main` holds a commit hash, `snapshots/HASH/` the files.
//! Nothing is downloaded: a model missing from the cache is an error that says how to get it.

use std::path::{Path, PathBuf};

/// The model used when `--model` is not given.
pub const DEFAULT_MODEL_ID: &str = "microsoft/kosmos-2-patch14-224";

/// A `--model` that names neither a folder nor a cached hub model.
#[derive(Debug, thiserror::Error)]
pub enum ModelLookupError {
    /// A hub id that is not in the local cache.
    #[error(
        "{id} is not in the local Hugging Face cache ({}) and this build cannot download it: fetch it once (e.g. `huggingface-cli download {id}`) or pass --model DIR, a folder with config.json, model.safetensors and the tokenizer files",
        cache.display()
    )]
    NotCached {
        /// The hub id.
        id: String,
        /// The cache folder searched.
        cache: PathBuf,
    },
    /// A path that does not exist and is not a hub id.
    #[error("{}: model directory not found (pass --model DIR, a folder with config.json and model.safetensors)", .0.display())]
    NotFound(PathBuf),
}

/// The hub cache folder from the environment (`HF_HUB_CACHE`, `HF_HOME`, `HOME`).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("HF_HUB_CACHE") {
        return p;
    }
    if let Some(p) = var("HF_HOME") {
        return p.join("hub");
    }
    var("HOME")
        .unwrap_or_default()
        .join(".cache")
        .join("huggingface")
        .join("hub")
}

/// `org/name` with the characters the hub allows.
pub fn is_hub_id(s: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match s.split_once('/') {
        Some((org, name)) => ok(org) && ok(name),
        None => false,
    }
}

/// The snapshot folder of `id` in `cache`: the commit of `refs/main`, else the only snapshot.
pub fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(hash) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(hash.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    (dirs.len() == 1).then(|| dirs.remove(0))
}

/// Resolves `--model` (or its absence) to a folder.
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ModelLookupError> {
    let spec = arg.unwrap_or(DEFAULT_MODEL_ID);
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if is_hub_id(spec) {
        let cache = cache_dir();
        return cached_snapshot(&cache, spec).ok_or(ModelLookupError::NotCached {
            id: spec.to_string(),
            cache,
        });
    }
    Err(ModelLookupError::NotFound(p.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        assert!(is_hub_id("microsoft/kosmos-2-patch14-224"));
        assert!(is_hub_id("a_b/c.d"));
        for bad in ["kosmos", "/abs/path", "a/b/c", "./x", "a/", "../up"] {
            assert!(!is_hub_id(bad), "{bad}");
        }
    }

    #[test]
    fn snapshots_by_ref_or_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        assert_eq!(
            cached_snapshot(dir.path(), "org/name"),
            Some(repo.join("snapshots/abc"))
        );
        std::fs::create_dir_all(repo.join("snapshots/def")).unwrap();
        assert_eq!(cached_snapshot(dir.path(), "org/name"), None);
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "def\n").unwrap();
        assert_eq!(
            cached_snapshot(dir.path(), "org/name"),
            Some(repo.join("snapshots/def"))
        );
        assert_eq!(cached_snapshot(dir.path(), "org/other"), None);
    }
}
