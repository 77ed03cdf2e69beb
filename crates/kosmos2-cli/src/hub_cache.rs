//! `--model` as a local folder or as a Hugging Face hub id (`ORG/NAME`, optionally
//! `ORG/NAME@REVISION`), found in the local HF cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`) as `huggingface_hub` lays it out: `models--ORG--NAME/refs/REV`
//! holds a commit hash, `snapshots/HASH/` the files (symlinks into `blobs/`), and
//! `.no_exist/HASH/FILE` records a file the repo does not have. A model missing from the cache is
//! downloaded into it (see [`crate::hub_download`]) unless `HF_HUB_OFFLINE` is set.

use std::path::{Path, PathBuf};

use crate::hub_download::{self, HubEnv};

/// The model used when `--model` is not given.
pub const DEFAULT_MODEL_ID: &str = "microsoft/kosmos-2-patch14-224";

/// The files a task run needs from a model repo: the model's config and weights, the processor's.
pub const MODEL_CONFIG: &str = "config.json";
/// The single-file weights.
pub const WEIGHTS: &str = "model.safetensors";
/// The index of sharded weights.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// The fast tokenizer.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// The sentencepiece model, used when a repo has no `tokenizer.json`.
pub const SENTENCEPIECE: &str = "sentencepiece.bpe.model";
/// The processor configuration files (a repo may lack some: HF defaults apply).
pub const PROCESSOR_CONFIGS: [&str; 3] = [
    "tokenizer_config.json",
    "preprocessor_config.json",
    "special_tokens_map.json",
];
/// Optional generation defaults.
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// What a command needs from the model repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Everything: config, weights, tokenizer and processor files (the tasks, `serve`).
    Model,
    /// The tokenizer and processor files only (`process`, `postprocess`).
    Processor,
}

/// A `--model` that cannot be turned into a local folder.
#[derive(Debug, thiserror::Error)]
pub enum ModelLookupError {
    /// A path that does not exist and is not a hub id.
    #[error("{}: model directory not found (pass --model DIR, a folder with config.json and model.safetensors)", .0.display())]
    NotFound(PathBuf),
    /// `HF_HUB_OFFLINE` is set and the cache lacks a file.
    #[error(
        "HF_HUB_OFFLINE is set and {id} is not complete in the local Hugging Face cache ({}): {missing} is missing; unset HF_HUB_OFFLINE to download it, or pass --model DIR, a folder with config.json, model.safetensors and the tokenizer files",
        cache.display()
    )]
    Offline {
        /// The hub id (with `@revision` when given).
        id: String,
        /// The cache folder searched.
        cache: PathBuf,
        /// The first missing file.
        missing: String,
    },
    /// `HF_ENDPOINT` is not an http(s) URL.
    #[error("HF_ENDPOINT={0:?} is not an http:// or https:// URL (unset it for https://huggingface.co, or pass --model DIR)")]
    BadEndpoint(String),
    /// The hub cannot be reached.
    #[error(
        "cannot reach the Hugging Face hub at {endpoint} to download {id} ({cause}): pass --model DIR, a local folder with config.json, model.safetensors and the tokenizer files; or set HF_ENDPOINT to a reachable mirror; HF_HUB_OFFLINE=1 uses only the local cache ({})",
        cache.display()
    )]
    NoNetwork {
        /// The hub id.
        id: String,
        /// The hub URL tried.
        endpoint: String,
        /// The transport error.
        cause: String,
        /// The cache folder.
        cache: PathBuf,
    },
    /// The repo (or its revision) does not exist, or is private.
    #[error(
        "{id}: no such folder, and no such model on the hub at {endpoint} (HTTP {status}): check the id and the @revision, or set HF_TOKEN for a private model"
    )]
    RepoNotFound {
        /// The hub id.
        id: String,
        /// The hub URL.
        endpoint: String,
        /// 401 or 404.
        status: u16,
    },
    /// Access refused (a gated model whose terms were not accepted, or a bad token).
    #[error(
        "{id}: the hub at {endpoint} refuses access (HTTP 403): accept the model's terms on the hub and set HF_TOKEN to a token of that account"
    )]
    Forbidden {
        /// The hub id.
        id: String,
        /// The hub URL.
        endpoint: String,
    },
    /// The repo exists but lacks a file the model cannot do without.
    #[error("{id} on the hub has no {file}: {why}")]
    MissingFile {
        /// The hub id.
        id: String,
        /// The file.
        file: String,
        /// What the file is needed for.
        why: &'static str,
    },
    /// Another HTTP error.
    #[error("downloading {file} of {id} from {endpoint} failed: HTTP {status}")]
    Http {
        /// The hub id.
        id: String,
        /// The file.
        file: String,
        /// The hub URL.
        endpoint: String,
        /// The status code.
        status: u16,
    },
    /// A download that failed for another reason (a server that is not a hub, a bad index, ...).
    #[error("downloading {file} of {id} failed: {cause}")]
    Download {
        /// The hub id.
        id: String,
        /// The file.
        file: String,
        /// What went wrong.
        cause: String,
    },
    /// The cache folder cannot be written.
    #[error("the Hugging Face cache {}: {source}", path.display())]
    Cache {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The hub cache folder from the environment (`HF_HUB_CACHE`, `HF_HOME`, `HOME`).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = env_path("HF_HUB_CACHE") {
        return p;
    }
    hf_home().join("hub")
}

/// `$HF_HOME`, else `~/.cache/huggingface` (where the token file lives too).
pub fn hf_home() -> PathBuf {
    if let Some(p) = env_path("HF_HOME") {
        return p;
    }
    let base = env_path("XDG_CACHE_HOME")
        .unwrap_or_else(|| env_path("HOME").unwrap_or_default().join(".cache"));
    base.join("huggingface")
}

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
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

/// A model on the hub: `ORG/NAME` at a revision (a branch, a tag or a commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    /// `ORG/NAME`.
    pub id: String,
    /// The revision (`main` when not given).
    pub revision: String,
}

impl HubModel {
    /// Parses `ORG/NAME` or `ORG/NAME@REVISION`; `None` when it is not a hub id.
    pub fn parse(spec: &str) -> Option<Self> {
        let (id, revision) = match spec.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (spec, "main"),
        };
        let rev_ok = !revision.is_empty()
            && !revision.starts_with('.')
            && !revision.contains("..")
            && revision
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        (is_hub_id(id) && rev_ok).then(|| Self {
            id: id.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The id as the user wrote it (`@revision` only when not `main`).
    pub fn display(&self) -> String {
        if self.revision == "main" {
            self.id.clone()
        } else {
            format!("{}@{}", self.id, self.revision)
        }
    }

    /// `cache/models--ORG--NAME`.
    pub fn repo_dir(&self, cache: &Path) -> PathBuf {
        cache.join(format!("models--{}", self.id.replace('/', "--")))
    }

    /// The commit the revision points to in the cache: `refs/REV`, or the revision itself when it
    /// is a commit hash with a snapshot.
    pub fn cached_commit(&self, cache: &Path) -> Option<String> {
        let repo = self.repo_dir(cache);
        if is_commit_hash(&self.revision) && repo.join("snapshots").join(&self.revision).is_dir() {
            return Some(self.revision.clone());
        }
        let hash = std::fs::read_to_string(repo.join("refs").join(&self.revision)).ok()?;
        let hash = hash.trim();
        (!hash.is_empty() && !hash.contains(['/', '\\']) && hash != "..").then(|| hash.to_string())
    }
}

/// A 40-hex-digit git commit hash.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The snapshot folder of `id` (revision `main`) in `cache`: the commit of `refs/main`, else the
/// only snapshot.
pub fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let model = HubModel {
        id: id.to_string(),
        revision: "main".to_string(),
    };
    let snapshots = model.repo_dir(cache).join("snapshots");
    if let Some(hash) = model.cached_commit(cache) {
        let dir = snapshots.join(hash);
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

/// The snapshot of `model` in `cache` and the first file it lacks for `needs` (`None`: complete).
/// A file recorded under `.no_exist/COMMIT/` counts as settled: the repo does not have it.
pub fn snapshot_status(
    cache: &Path,
    model: &HubModel,
    needs: Needs,
) -> (Option<PathBuf>, Option<String>) {
    let snap = match model.cached_commit(cache) {
        Some(hash) => Some(model.repo_dir(cache).join("snapshots").join(hash)),
        None if model.revision == "main" => cached_snapshot(cache, &model.id),
        None => None,
    };
    let Some(snap) = snap.filter(|s| s.is_dir()) else {
        return (None, Some(MODEL_CONFIG.to_string()));
    };
    let missing = missing_in_snapshot(cache, model, &snap, needs);
    (Some(snap), missing)
}

/// The first file `snap` (a snapshot folder of `model`) lacks for `needs`, if any.
pub fn missing_in_snapshot(
    cache: &Path,
    model: &HubModel,
    snap: &Path,
    needs: Needs,
) -> Option<String> {
    let commit = snap
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let no_exist = model.repo_dir(cache).join(".no_exist").join(commit);
    let has = |f: &str| snap.join(f).is_file();
    let settled = |f: &str| has(f) || no_exist.join(f).is_file();
    first_missing(snap, needs, &has, &settled)
}

fn first_missing(
    snap: &Path,
    needs: Needs,
    has: &dyn Fn(&str) -> bool,
    settled: &dyn Fn(&str) -> bool,
) -> Option<String> {
    // A tokenizer file, or the record that the repo has neither.
    let tokenizer = has(TOKENIZER_JSON)
        || has(SENTENCEPIECE)
        || (settled(TOKENIZER_JSON) && settled(SENTENCEPIECE));
    if !tokenizer {
        return Some(TOKENIZER_JSON.to_string());
    }
    if let Some(f) = PROCESSOR_CONFIGS.iter().find(|f| !settled(f)) {
        return Some(f.to_string());
    }
    if needs == Needs::Processor {
        return None;
    }
    if !has(MODEL_CONFIG) {
        return Some(MODEL_CONFIG.to_string());
    }
    if has(WEIGHTS) {
        return None;
    }
    if !has(WEIGHTS_INDEX) {
        return Some(WEIGHTS.to_string());
    }
    match shard_names(&snap.join(WEIGHTS_INDEX)) {
        Ok(shards) => shards.into_iter().find(|s| !has(s)),
        Err(_) => Some(WEIGHTS_INDEX.to_string()),
    }
}

/// The shard files of a `model.safetensors.index.json` (its `weight_map` values), sorted, each
/// once; names that would leave the snapshot folder are refused.
pub fn shard_names(index: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no weight_map object")?;
    let mut names = Vec::new();
    for file in map.values() {
        let name = file.as_str().ok_or("a weight_map value is not a string")?;
        let safe = !name.is_empty()
            && !name.starts_with('/')
            && Path::new(name)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(format!("bad shard name {name:?}"));
        }
        names.push(name.to_string());
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err("the weight_map is empty".to_string());
    }
    Ok(names)
}

/// Resolves `--model` (or its absence) to a folder with everything a task run needs,
/// downloading from the hub when needed.
pub fn resolve_model(arg: Option<&str>) -> Result<PathBuf, ModelLookupError> {
    resolve(arg, Needs::Model)
}

/// Resolves `--model` (or its absence) to a folder with what `needs` asks for: an existing path
/// as it is, else a hub id from the cache, else from the hub (unless `HF_HUB_OFFLINE`).
pub fn resolve(arg: Option<&str>, needs: Needs) -> Result<PathBuf, ModelLookupError> {
    let spec = arg.unwrap_or(DEFAULT_MODEL_ID);
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let Some(model) = HubModel::parse(spec) else {
        return Err(ModelLookupError::NotFound(p.to_path_buf()));
    };
    let env = HubEnv::from_env();
    let (snap, missing) = snapshot_status(&env.cache, &model, needs);
    match (snap, missing) {
        (Some(snap), None) => Ok(snap),
        (_, Some(missing)) if env.offline => Err(ModelLookupError::Offline {
            id: model.display(),
            cache: env.cache.clone(),
            missing,
        }),
        _ => hub_download::download(&env, &model, needs),
    }
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
        let m = HubModel::parse("org/name@v1.0").unwrap();
        assert_eq!((m.id.as_str(), m.revision.as_str()), ("org/name", "v1.0"));
        assert_eq!(m.display(), "org/name@v1.0");
        let m = HubModel::parse("org/name").unwrap();
        assert_eq!(
            (m.revision.as_str(), m.display()),
            ("main", "org/name".into())
        );
        assert_eq!(
            HubModel::parse("org/name@refs/pr/1").unwrap().revision,
            "refs/pr/1"
        );
        for bad in ["org/name@", "org/name@../x", "org@main", "a/b/c@main"] {
            assert!(HubModel::parse(bad).is_none(), "{bad}");
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

    fn touch(dir: &Path, f: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(f), "{}").unwrap();
    }

    #[test]
    fn a_snapshot_is_complete_with_every_needed_file_or_a_no_exist_marker() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let hash = "0123456789abcdef0123456789abcdef01234567";
        let model = HubModel::parse("org/name").unwrap();
        let missing = |needs| snapshot_status(cache, &model, needs).1;
        assert_eq!(missing(Needs::Model).as_deref(), Some("config.json"));

        let repo = model.repo_dir(cache);
        let snap = repo.join("snapshots").join(hash);
        touch(&repo.join("refs"), "main");
        std::fs::write(repo.join("refs/main"), hash).unwrap();
        std::fs::create_dir_all(&snap).unwrap();
        assert_eq!(missing(Needs::Model).as_deref(), Some("tokenizer.json"));
        touch(&snap, SENTENCEPIECE);
        assert_eq!(
            missing(Needs::Processor).as_deref(),
            Some("tokenizer_config.json")
        );
        for f in PROCESSOR_CONFIGS {
            touch(&snap, f);
        }
        assert_eq!(missing(Needs::Processor), None);
        assert_eq!(missing(Needs::Model).as_deref(), Some("config.json"));
        touch(&snap, MODEL_CONFIG);
        assert_eq!(missing(Needs::Model).as_deref(), Some("model.safetensors"));

        // Sharded weights: every shard of the index.
        std::fs::write(
            snap.join(WEIGHTS_INDEX),
            r#"{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors", "c": "m-1.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(missing(Needs::Model).as_deref(), Some("m-1.safetensors"));
        touch(&snap, "m-1.safetensors");
        touch(&snap, "m-2.safetensors");
        assert_eq!(missing(Needs::Model), None);
        assert_eq!(
            snapshot_status(cache, &model, Needs::Model).0,
            Some(snap.clone())
        );

        // A processor file the repo does not have, recorded under .no_exist.
        std::fs::remove_file(snap.join("special_tokens_map.json")).unwrap();
        assert_eq!(
            missing(Needs::Model).as_deref(),
            Some("special_tokens_map.json")
        );
        touch(
            &repo.join(".no_exist").join(hash),
            "special_tokens_map.json",
        );
        assert_eq!(missing(Needs::Model), None);

        // A commit hash as the revision finds its snapshot without a ref.
        let pinned = HubModel::parse(&format!("org/name@{hash}")).unwrap();
        assert_eq!(snapshot_status(cache, &pinned, Needs::Model).1, None);
        let other = HubModel::parse("org/name@v2").unwrap();
        assert_eq!(
            snapshot_status(cache, &other, Needs::Model),
            (None, Some("config.json".to_string()))
        );
    }

    #[test]
    fn shard_names_refuse_paths_out_of_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("i.json");
        for (text, ok) in [
            (r#"{"weight_map": {"a": "x.safetensors"}}"#, true),
            (r#"{"weight_map": {"a": "../x.safetensors"}}"#, false),
            (r#"{"weight_map": {"a": "/etc/passwd"}}"#, false),
            (r#"{"weight_map": {}}"#, false),
            (r#"{"weight_map": {"a": 3}}"#, false),
            (r#"[]"#, false),
        ] {
            std::fs::write(&index, text).unwrap();
            assert_eq!(shard_names(&index).is_ok(), ok, "{text}");
        }
    }
}
