//! Downloads a model from the Hugging Face hub into the local HF cache with the `hf-hub` crate
//! (its sync API over ureq): `HF_ENDPOINT` (default `https://huggingface.co`), a token from
//! `HF_TOKEN` or the token file (`$HF_TOKEN_PATH`, else `$HF_HOME/token`), a progress bar per file
//! on a terminal. Files are fetched from `ENDPOINT/ORG/NAME/resolve/REVISION/FILE` and laid out as
//! `huggingface_hub` does (blobs, snapshots, refs, `.no_exist` for files the repo lacks), so the
//! Python tools and this one share the cache.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};
use indicatif::ProgressBar;

use crate::hub_cache::{
    missing_in_snapshot, shard_names, HubModel, ModelLookupError, Needs, GENERATION_CONFIG,
    MODEL_CONFIG, PROCESSOR_CONFIGS, SENTENCEPIECE, TOKENIZER_JSON, WEIGHTS, WEIGHTS_INDEX,
};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The hub settings from the environment.
#[derive(Clone)]
pub struct HubEnv {
    /// The cache folder (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// `HF_ENDPOINT` without a trailing slash.
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` is set to a true value: only the cache is used.
    pub offline: bool,
    /// Progress bars (off with `HF_HUB_DISABLE_PROGRESS_BARS`; hidden anyway off a terminal).
    pub progress: bool,
}

impl std::fmt::Debug for HubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("HubEnv")
            .field("cache", &self.cache)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .finish()
    }
}

/// `huggingface_hub`'s reading of a boolean variable: 1, ON, YES or TRUE (any case).
pub fn env_true(name: &str) -> bool {
    std::env::var(name)
        .map(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        })
        .unwrap_or(false)
}

impl HubEnv {
    /// Reads `HF_HUB_CACHE`/`HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`/`HF_TOKEN_PATH`,
    /// `HF_HUB_OFFLINE` and `HF_HUB_DISABLE_PROGRESS_BARS`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]
            .iter()
            .filter_map(|k| std::env::var(k).ok())
            .map(|t| t.trim().to_string())
            .find(|t| !t.is_empty())
            .or_else(|| {
                let path = std::env::var_os("HF_TOKEN_PATH")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| crate::hub_cache::hf_home().join("token"));
                let t = std::fs::read_to_string(path).ok()?;
                let t = t.trim();
                (!t.is_empty()).then(|| t.to_string())
            });
        Self {
            cache: crate::hub_cache::cache_dir(),
            endpoint,
            token,
            offline: env_true("HF_HUB_OFFLINE"),
            progress: !env_true("HF_HUB_DISABLE_PROGRESS_BARS"),
        }
    }
}

/// What went wrong with one request.
enum Failure {
    /// An HTTP status the server answered.
    Status(u16),
    /// The server could not be reached.
    Network(String),
    /// Anything else.
    Other(String),
}

fn failure(e: ApiError) -> Failure {
    match e {
        ApiError::RequestError(e) => match *e {
            ureq::Error::StatusCode(code) => Failure::Status(code),
            ureq::Error::BadUri(u) => Failure::Other(format!("bad URL {u} (check HF_ENDPOINT)")),
            other => Failure::Network(other.to_string()),
        },
        ApiError::TooManyRetries(inner) => failure(*inner),
        e @ (ApiError::MissingHeader(_) | ApiError::InvalidHeader(_)) => Failure::Other(format!(
            "the server does not answer like the Hugging Face hub ({e}): check HF_ENDPOINT"
        )),
        other => Failure::Other(other.to_string()),
    }
}

/// Downloads what `needs` asks for of `model` into the cache and returns its snapshot folder.
pub fn download(env: &HubEnv, model: &HubModel, needs: Needs) -> Result<PathBuf, ModelLookupError> {
    let scheme_ok = ["http://", "https://"].iter().any(|p| {
        env.endpoint.len() > p.len()
            && env
                .endpoint
                .get(..p.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(p))
    });
    if !scheme_ok {
        return Err(ModelLookupError::BadEndpoint(env.endpoint.clone()));
    }
    let api = ApiBuilder::from_cache(Cache::new(env.cache.clone()))
        .with_endpoint(env.endpoint.clone())
        .with_token(env.token.clone())
        .with_progress(env.progress)
        .with_user_agent("kosmos2-rs", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| ModelLookupError::Download {
            id: model.display(),
            file: MODEL_CONFIG.to_string(),
            cause: e.to_string(),
        })?;
    let mut f = Fetcher {
        repo: api.repo(Repo::with_revision(
            model.id.clone(),
            RepoType::Model,
            model.revision.clone(),
        )),
        api,
        env,
        model,
        commit: None,
        announced: false,
    };
    // config.json first: every transformers repo has it, so its absence means no such repo.
    f.fetch(MODEL_CONFIG, true)?;
    for file in PROCESSOR_CONFIGS {
        f.fetch(file, false)?;
    }
    if f.fetch(TOKENIZER_JSON, false)?.is_none() {
        f.fetch(SENTENCEPIECE, false)?;
    }
    if needs == Needs::Model {
        f.fetch(GENERATION_CONFIG, false)?;
        if f.fetch(WEIGHTS, false)?.is_none() {
            let Some(index) = f.fetch(WEIGHTS_INDEX, false)? else {
                return Err(f.missing(
                    WEIGHTS,
                    "the weights must be safetensors (model.safetensors or model.safetensors.index.json)",
                ));
            };
            let shards = shard_names(&index).map_err(|cause| ModelLookupError::Download {
                id: model.display(),
                file: WEIGHTS_INDEX.to_string(),
                cause,
            })?;
            for shard in shards {
                if f.fetch(&shard, false)?.is_none() {
                    return Err(f.missing(
                        &shard,
                        "a weight shard named in model.safetensors.index.json",
                    ));
                }
            }
        }
    }
    // Every file is in the snapshot of the commit config.json came from, unless the repo
    // changed in between.
    let Some(commit) = f.commit.clone() else {
        return Err(ModelLookupError::Download {
            id: model.display(),
            file: MODEL_CONFIG.to_string(),
            cause: "the hub named no commit".to_string(),
        });
    };
    let snap = model.repo_dir(&env.cache).join("snapshots").join(commit);
    match missing_in_snapshot(&env.cache, model, &snap, needs) {
        None if snap.is_dir() => Ok(snap),
        missing => Err(ModelLookupError::Download {
            id: model.display(),
            file: missing.unwrap_or_else(|| MODEL_CONFIG.to_string()),
            cause: "the repo changed during the download; run the command again".to_string(),
        }),
    }
}

/// Fetches files of one repo at one revision, remembering its commit.
struct Fetcher<'a> {
    api: Api,
    repo: ApiRepo,
    env: &'a HubEnv,
    model: &'a HubModel,
    commit: Option<String>,
    /// The "downloading" line is printed once the hub has answered (an error stays one line).
    announced: bool,
}

impl Fetcher<'_> {
    fn repo_dir(&self) -> PathBuf {
        self.model.repo_dir(&self.env.cache)
    }

    fn cache_err(path: &Path, source: std::io::Error) -> ModelLookupError {
        ModelLookupError::Cache {
            path: path.to_path_buf(),
            source,
        }
    }

    fn missing(&self, file: &str, why: &'static str) -> ModelLookupError {
        ModelLookupError::MissingFile {
            id: self.model.display(),
            file: file.to_string(),
            why,
        }
    }

    /// The file in the snapshot (downloaded if needed), or `None` when the repo does not have it
    /// (HTTP 404, recorded under `.no_exist/COMMIT/`). `first` marks the request that tells
    /// whether the repo exists at all.
    fn fetch(&mut self, file: &str, first: bool) -> Result<Option<PathBuf>, ModelLookupError> {
        let id = self.model.display();
        let endpoint = self.env.endpoint.clone();
        let url = self.repo.url(file);
        let meta = match without_panics(&id, file, || self.api.metadata(&url))? {
            Ok(m) => m,
            Err(e) => {
                return match failure(e) {
                    Failure::Status(status @ (401 | 404)) if first => {
                        Err(ModelLookupError::RepoNotFound {
                            id,
                            endpoint,
                            status,
                        })
                    }
                    Failure::Status(404) => {
                        self.mark_missing(file)?;
                        Ok(None)
                    }
                    Failure::Status(401 | 403) => Err(ModelLookupError::Forbidden { id, endpoint }),
                    Failure::Status(status) => Err(ModelLookupError::Http {
                        id,
                        file: file.to_string(),
                        endpoint,
                        status,
                    }),
                    Failure::Network(cause) => Err(ModelLookupError::NoNetwork {
                        id,
                        endpoint,
                        cause,
                        cache: self.env.cache.clone(),
                    }),
                    Failure::Other(cause) => Err(ModelLookupError::Download {
                        id,
                        file: file.to_string(),
                        cause,
                    }),
                };
            }
        };
        let commit = meta.commit_hash().trim().to_string();
        // A weak etag (`W/"..."`, from a proxy) names the same blob.
        let etag = meta.etag().trim().trim_start_matches("W/").to_string();
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        };
        if !plain(&commit) || !plain(&etag) {
            return Err(ModelLookupError::Download {
                id,
                file: file.to_string(),
                cause: format!("the hub sent a bad commit {commit:?} or etag {etag:?}"),
            });
        }
        self.commit.get_or_insert_with(|| commit.clone());
        let repo_dir = self.repo_dir();
        let pointer = repo_dir.join("snapshots").join(&commit).join(file);
        if !pointer.is_file() {
            let blob = repo_dir.join("blobs").join(&etag);
            if !self.announced {
                self.announced = true;
                eprintln!(
                    "downloading {} from {} into {}",
                    self.model.display(),
                    self.env.endpoint,
                    self.env.cache.display()
                );
            }
            if blob.is_file() {
                link_blob(&blob, &pointer, file).map_err(|e| Self::cache_err(&pointer, e))?;
            } else {
                let (repo, progress) = (&self.repo, self.env.progress);
                let got = without_panics(&id, file, || {
                    if progress {
                        repo.download_with_progress(file, ProgressBar::new(0))
                    } else {
                        repo.download_with_progress(file, ())
                    }
                })?;
                got.map_err(|e| match failure(e) {
                    Failure::Network(cause) => ModelLookupError::NoNetwork {
                        id: id.clone(),
                        endpoint: endpoint.clone(),
                        cause,
                        cache: self.env.cache.clone(),
                    },
                    Failure::Status(status) => ModelLookupError::Http {
                        id: id.clone(),
                        file: file.to_string(),
                        endpoint: endpoint.clone(),
                        status,
                    },
                    Failure::Other(cause) => ModelLookupError::Download {
                        id: id.clone(),
                        file: file.to_string(),
                        cause,
                    },
                })?;
            }
        }
        let cache = Cache::new(self.env.cache.clone());
        let repo = Repo::with_revision(
            self.model.id.clone(),
            RepoType::Model,
            self.model.revision.clone(),
        );
        cache
            .repo(repo)
            .create_ref(&commit)
            .map_err(|e| Self::cache_err(&repo_dir.join("refs"), e))?;
        Ok(Some(pointer))
    }

    /// Records that the repo has no `file` at the current commit (`.no_exist/COMMIT/FILE`).
    fn mark_missing(&self, file: &str) -> Result<(), ModelLookupError> {
        let Some(commit) = &self.commit else {
            return Ok(());
        };
        let marker = self.repo_dir().join(".no_exist").join(commit).join(file);
        if let Some(dir) = marker.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Self::cache_err(dir, e))?;
        }
        std::fs::write(&marker, b"").map_err(|e| Self::cache_err(&marker, e))
    }
}

/// Puts an already downloaded blob in a snapshot: a relative symlink as `huggingface_hub` makes
/// (a copy where symlinks are not available).
fn link_blob(blob: &Path, pointer: &Path, file: &str) -> std::io::Result<()> {
    if let Some(dir) = pointer.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // snapshots/COMMIT/a/b/FILE -> ../../../blobs/ETAG: one level per folder of FILE, plus two.
    let depth = Path::new(file).components().count() + 1;
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.push("blobs");
    if let Some(name) = blob.file_name() {
        rel.push(name);
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&rel, pointer)
    }
    #[cfg(not(unix))]
    {
        let _ = rel;
        std::fs::copy(blob, pointer).map(|_| ())
    }
}

/// Runs one hf-hub call, turning a panic inside it (hf-hub `expect`s some headers, e.g. a
/// redirect's `Location`, that a server other than the hub may omit) into a typed error, with the
/// panic message kept off the terminal.
fn without_panics<T>(
    id: &str,
    file: &str,
    call: impl FnOnce() -> T,
) -> Result<T, ModelLookupError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
    std::panic::set_hook(previous);
    result.map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unexpected reply".to_string());
        ModelLookupError::Download {
            id: id.to_string(),
            file: file.to_string(),
            cause: format!("the server's reply broke the hub client: {why}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_links_are_relative_to_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs/e1"), "x").unwrap();
        for file in ["config.json", "sub/dir/w.safetensors"] {
            let pointer = repo.join("snapshots/c1").join(file);
            link_blob(&repo.join("blobs/e1"), &pointer, file).unwrap();
            assert_eq!(std::fs::read_to_string(&pointer).unwrap(), "x", "{file}");
        }
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let env = HubEnv {
            cache: PathBuf::from("/c"),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: Some("hf_secret".to_string()),
            offline: false,
            progress: false,
        };
        let s = format!("{env:?}");
        assert!(!s.contains("hf_secret") && s.contains("<set>"), "{s}");
    }
}
