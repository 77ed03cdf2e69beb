//! Finding the images of a job: files, folders (recursively) and glob patterns; then
//! `--shard K/N`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// File extensions taken from folders and globs (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"];

/// An input argument that gives no image.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A path that does not exist (and is not a glob pattern).
    #[error("{}: no such file or folder", .0.display())]
    NotFound(PathBuf),
    /// A folder that cannot be listed.
    #[error("{}: cannot list folder: {source}", path.display())]
    ReadDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An invalid glob pattern.
    #[error("{pattern:?} is not a valid glob pattern: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A folder or pattern that matched no image.
    #[error("{0}: no image found (looked for {exts})", exts = IMAGE_EXTENSIONS.join(", "))]
    NoImages(String),
    /// No input at all.
    #[error("no image given")]
    Empty,
}

/// One image of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageJob {
    /// The path, as given or as found.
    pub path: PathBuf,
    /// The path relative to the folder or pattern base it was found under (the file name for a
    /// file given directly); names annotated images.
    pub rel: PathBuf,
}

impl ImageJob {
    /// The key that identifies the image in JSON output (and for `--resume`).
    pub fn key(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// A file name for derived outputs: the relative path with separators replaced by `__` and
    /// the extension replaced by `ext`.
    pub fn output_name(&self, ext: &str) -> String {
        let stem = self.rel.with_extension("");
        let parts: Vec<String> = stem
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        format!("{}.{ext}", parts.join("__"))
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The images of a folder, recursively, sorted by path.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InputError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries: Vec<PathBuf> = Vec::new();
    for e in rd {
        let e = e.map_err(|source| InputError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        entries.push(e.path());
    }
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The fixed leading folders of a glob pattern (`photos/2024/*.jpg` → `photos/2024`).
fn pattern_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for c in Path::new(pattern).components() {
        if is_pattern(&c.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(c);
    }
    base
}

/// Expands the arguments: a file is taken as it is (whatever its extension), a folder gives its
/// images recursively, a pattern (`*`, `?`, `[`) gives its matching images. Each list is sorted;
/// duplicates are dropped (first occurrence kept).
pub fn discover(args: &[String]) -> Result<Vec<ImageJob>, InputError> {
    if args.is_empty() {
        return Err(InputError::Empty);
    }
    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |path: PathBuf, rel: PathBuf, jobs: &mut Vec<ImageJob>| {
        if seen.insert(path.clone()) {
            jobs.push(ImageJob { path, rel });
        }
    };
    for a in args {
        let p = Path::new(a);
        if p.is_file() {
            let rel = p.file_name().map(PathBuf::from).unwrap_or_else(|| p.into());
            push(p.to_path_buf(), rel, &mut jobs);
        } else if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            if found.is_empty() {
                return Err(InputError::NoImages(a.clone()));
            }
            for f in found {
                let rel = f
                    .strip_prefix(p)
                    .map(Path::to_path_buf)
                    .unwrap_or(f.clone());
                push(f, rel, &mut jobs);
            }
        } else if is_pattern(a) {
            let paths = glob::glob(a).map_err(|e| InputError::Pattern {
                pattern: a.clone(),
                message: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|f| f.is_file() && is_image(f))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(InputError::NoImages(a.clone()));
            }
            let base = pattern_base(a);
            for f in found {
                let rel = f
                    .strip_prefix(&base)
                    .map(Path::to_path_buf)
                    .unwrap_or(f.clone());
                push(f, rel, &mut jobs);
            }
        } else {
            return Err(InputError::NotFound(p.to_path_buf()));
        }
    }
    Ok(jobs)
}

/// `--shard K/N`: this process handles images `K, K + N, K + 2N, …` (0-based), so N machines with
/// K = 0..N cover every image exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard (0-based, below `count`).
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Shard {
    /// Keeps every `count`-th item from `index`.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index)
            .map(|(_, t)| t)
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not K/N with 0 <= K < N (e.g. 0/4)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn folders_globs_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "b.jpg",
            "a.PNG",
            "notes.txt",
            "sub/c.webp",
            "sub/deeper/d.jpeg",
        ] {
            touch(&d.join(f));
        }
        let jobs = discover(&[d.to_string_lossy().into_owned()]).unwrap();
        let rels: Vec<String> = jobs
            .iter()
            .map(|j| j.rel.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rels, ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.jpeg"]);
        assert_eq!(jobs[3].output_name("png"), "sub__deeper__d.png");

        let pattern = format!("{}/sub/**/*.jpeg", d.display());
        let jobs = discover(&[pattern]).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].rel, Path::new("deeper/d.jpeg"));

        // A file is taken whatever its extension; duplicates are dropped.
        let f = d.join("notes.txt").to_string_lossy().into_owned();
        let jobs = discover(&[
            f.clone(),
            f.clone(),
            d.join("b.jpg").to_string_lossy().into(),
        ])
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].output_name("png"), "notes.png");
    }

    #[test]
    fn errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(discover(&[]), Err(InputError::Empty)));
        let missing = d.join("nope.jpg").to_string_lossy().into_owned();
        assert!(matches!(discover(&[missing]), Err(InputError::NotFound(_))));
        let empty = d.to_string_lossy().into_owned();
        let e = discover(&[empty]).unwrap_err();
        assert!(e.to_string().contains("no image found"), "{e}");
        let pat = format!("{}/*.jpg", d.display());
        assert!(matches!(discover(&[pat]), Err(InputError::NoImages(_))));
        assert!(matches!(
            discover(&["[".to_string()]),
            Err(InputError::Pattern { .. })
        ));
    }

    #[test]
    fn shards_cover_everything_once() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s.select((0..10).collect()), vec![1, 4, 7]);
        let mut all: Vec<i32> = (0..3)
            .flat_map(|k| Shard { index: k, count: 3 }.select((0..10).collect()))
            .collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(s.to_string(), "1/3");
    }
}
