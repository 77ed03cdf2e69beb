//! A fake Hugging Face hub on loopback for the CLI's hub tests: it answers
//! `GET /{org}/{name}/resolve/{revision}/{file}` as huggingface.co does for the `hf-hub` client:
//! `etag` and `x-repo-commit` headers, `Range: bytes=A-B` answered with 206 and
//! `Content-Range: bytes A-B/SIZE`, safetensors files redirected (302, absolute `Location`, with
//! `x-linked-etag`) to a CDN path as LFS files are, 401 `RepoNotFound` for an unknown repo, 404
//! `RevisionNotFound` / `EntryNotFound`, 403 `GatedRepo` for any `ORG/gated`, and a plain web
//! server under `/not-a-hub/`. Every request is logged with its `Authorization` header.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One model repo.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// `org/name`.
    pub id: String,
    /// The 40-hex commit `main` points to.
    pub commit: String,
    /// File name -> content.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The request path.
    pub path: String,
    /// The `Authorization` header.
    pub auth: Option<String>,
}

/// The running server; dropping it (or [`FakeHub::stop`]) closes the port.
#[derive(Debug)]
pub struct FakeHub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A 64-bit FNV-1a hash as hex: the etag of a content.
pub fn etag_of(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{:08x}", data.len())
}

impl FakeHub {
    /// Starts serving `repos` on 127.0.0.1 (a free port).
    pub fn start(repos: Vec<FakeRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let repos = Arc::new(repos);
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (repos, seen) = (repos.clone(), seen.clone());
                    std::thread::spawn(move || {
                        let _ = serve(conn, addr, &repos, &seen);
                    });
                }
            })
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
            seen,
        }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops accepting and closes the port.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that refuses connections (bound, then closed).
pub fn refused_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn serve(
    mut conn: TcpStream,
    addr: SocketAddr,
    repos: &[FakeRepo],
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let path = request.split(' ').nth(1).unwrap_or_default().to_string();
    let mut headers = BTreeMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        auth: headers.get("authorization").cloned(),
    });
    let range = headers.get("range").cloned();
    let resp = route(&path, addr, repos, range.as_deref());
    conn.write_all(&resp)?;
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn error(status: &str, code: &str, commit: Option<&str>) -> Vec<u8> {
    let mut h = vec![("x-error-code", code.to_string())];
    if let Some(c) = commit {
        h.push(("x-repo-commit", c.to_string()));
    }
    response(status, &h, code.as_bytes())
}

/// The bytes of `data` a `Range` header asks for (`bytes=A-` or `bytes=A-B`), as 206, else 200.
fn ranged(data: &[u8], range: Option<&str>, mut headers: Vec<(&str, String)>) -> Vec<u8> {
    let parsed = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let a: usize = a.parse().ok()?;
            let b: usize = if b.is_empty() {
                data.len().checked_sub(1)?
            } else {
                b.parse::<usize>().ok()?.min(data.len().checked_sub(1)?)
            };
            (a <= b).then_some((a, b))
        });
    match parsed {
        Some((a, b)) => {
            headers.push(("content-range", format!("bytes {a}-{b}/{}", data.len())));
            response("206 Partial Content", &headers, &data[a..=b])
        }
        None => response("200 OK", &headers, data),
    }
}

fn route(path: &str, addr: SocketAddr, repos: &[FakeRepo], range: Option<&str>) -> Vec<u8> {
    if let Some(etag) = path.strip_prefix("/cdn/") {
        for repo in repos {
            for data in repo.files.values() {
                if etag_of(data) == etag {
                    return ranged(data, range, vec![("etag", format!("\"{etag}\""))]);
                }
            }
        }
        return error("404 Not Found", "NoSuchKey", None);
    }
    if path.starts_with("/not-a-hub/") {
        // A plain web server: the file, but none of the hub's headers.
        return response("200 OK", &[], b"{}");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = parts[..] else {
        return error("404 Not Found", "NotFound", None);
    };
    let id = format!("{org}/{name}");
    if name == "gated" {
        return error("403 Forbidden", "GatedRepo", None);
    }
    if name == "no-location" {
        // A broken proxy: a redirect without its `Location` header.
        let headers = [
            ("x-repo-commit", "0".repeat(40)),
            ("etag", "\"0123abcd\"".to_string()),
        ];
        return response("302 Found", &headers, b"");
    }
    let Some(repo) = repos.iter().find(|r| r.id == id) else {
        return error("401 Unauthorized", "RepoNotFound", None);
    };
    if rev != "main" && rev != repo.commit {
        return error("404 Not Found", "RevisionNotFound", None);
    }
    let commit = repo.commit.clone();
    let Some(data) = repo.files.get(file) else {
        return error("404 Not Found", "EntryNotFound", Some(&commit));
    };
    let etag = etag_of(data);
    if file.ends_with(".safetensors") {
        // LFS: the hub answers with a redirect to its CDN and the file's sha as x-linked-etag.
        let headers = [
            ("location", format!("http://{addr}/cdn/{etag}")),
            ("x-linked-etag", format!("\"{etag}\"")),
            ("x-linked-size", data.len().to_string()),
            ("x-repo-commit", commit),
            ("etag", "\"pointer\"".to_string()),
        ];
        return response("302 Found", &headers, b"");
    }
    // A proxy may weaken the etag of a small file.
    let etag = if file.ends_with("special_tokens_map.json") {
        format!("W/\"{etag}\"")
    } else {
        format!("\"{etag}\"")
    };
    ranged(data, range, vec![("etag", etag), ("x-repo-commit", commit)])
}
