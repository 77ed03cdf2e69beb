//! JSON Lines output, one object per image, written and flushed line by line so that an
//! interrupted job leaves only whole lines (plus at most one partial line, dropped on resume).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// An output file problem.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output exists and neither `--resume` nor `--overwrite` was given.
    #[error(
        "{}: the output file already exists; pass --resume to skip the images it already has, or --overwrite to replace it",
        .0.display()
    )]
    Exists(PathBuf),
    /// An I/O error on the output file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record could not be serialised.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an existing output file already holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Images with a successful record (no `"error"` field): skipped by `--resume`.
    pub done: HashSet<String>,
    /// Whole lines that are not JSON objects with an `"image"` string (kept, not counted).
    pub unreadable_lines: usize,
    /// Bytes of whole lines; anything after (a partial last line) is cut on resume.
    pub complete_len: u64,
}

/// Reads an output file written by a previous run. A missing file is empty.
pub fn read_existing(path: &Path) -> Result<Existing, OutputError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut out = Existing {
        complete_len: complete_len as u64,
        ..Existing::default()
    };
    for line in bytes[..complete_len].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(v) => match v.get("image").and_then(|i| i.as_str()) {
                Some(image) => {
                    if v.get("error").is_none() {
                        out.done.insert(image.to_string());
                    }
                }
                None => out.unreadable_lines += 1,
            },
            Err(_) => out.unreadable_lines += 1,
        }
    }
    Ok(out)
}

/// Where records go: a file (flushed after each line) or standard output.
#[derive(Debug)]
pub enum Sink {
    /// A JSON Lines file.
    File {
        /// Its path.
        path: PathBuf,
        /// The buffered file.
        writer: BufWriter<File>,
    },
    /// Standard output.
    Stdout,
}

impl Sink {
    /// Opens the output file: fresh (refusing to replace an existing non-empty file unless
    /// `overwrite`), or for `resume`, appending after the last whole line.
    pub fn open(
        path: &Path,
        resume: bool,
        overwrite: bool,
    ) -> Result<(Self, Existing), OutputError> {
        let existing = if resume {
            read_existing(path)?
        } else {
            let non_empty = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
            if non_empty && !overwrite {
                return Err(OutputError::Exists(path.to_path_buf()));
            }
            Existing::default()
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = if resume {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io(path))?;
            // Drop a partial last line left by an interrupted run.
            f.set_len(existing.complete_len).map_err(io(path))?;
            f
        } else {
            File::create(path).map_err(io(path))?
        };
        Ok((
            Sink::File {
                path: path.to_path_buf(),
                writer: BufWriter::new(file),
            },
            existing,
        ))
    }

    /// Writes one record as one line and flushes it.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<(), OutputError> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        match self {
            Sink::File { path, writer } => {
                writer.write_all(&line).map_err(io(path))?;
                writer.flush().map_err(io(path))
            }
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                let p = Path::new("<stdout>");
                out.write_all(&line).map_err(io(p))?;
                out.flush().map_err(io(p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resume_skips_done_retries_errors_and_cuts_a_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/captions.jsonl");
        {
            let (mut sink, existing) = Sink::open(&path, false, false).unwrap();
            assert!(existing.done.is_empty());
            sink.write(&json!({"image": "a.jpg", "caption": "x"}))
                .unwrap();
            sink.write(&json!({"image": "b.jpg", "error": "bad"}))
                .unwrap();
        }
        // An interrupted write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"image\": \"c.jpg\", \"capt").unwrap();
        drop(f);

        assert!(matches!(
            Sink::open(&path, false, false),
            Err(OutputError::Exists(_))
        ));
        let (mut sink, existing) = Sink::open(&path, true, false).unwrap();
        assert_eq!(existing.done, HashSet::from(["a.jpg".to_string()]));
        sink.write(&json!({"image": "c.jpg", "caption": "y"}))
            .unwrap();
        drop(sink);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
        let again = read_existing(&path).unwrap();
        assert_eq!(again.done.len(), 2);

        // --overwrite replaces.
        let (_, existing) = Sink::open(&path, false, true).unwrap();
        assert!(existing.done.is_empty());
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    }

    #[test]
    fn unreadable_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        std::fs::write(&path, "not json\n{\"x\": 1}\n\n{\"image\": \"a\"}\n").unwrap();
        let e = read_existing(&path).unwrap();
        assert_eq!(e.unreadable_lines, 2);
        assert_eq!(e.done.len(), 1);
        assert_eq!(
            read_existing(&dir.path().join("missing")).unwrap(),
            Existing::default()
        );
    }
}
