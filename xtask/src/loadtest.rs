//! `cargo xtask loadtest`: a bounded load test of `kosmos2 serve` (issue 10), loopback only.
//!
//! Builds the release binary, then for each `--max-batch` setting (serial `1` and continuous
//! batching, side by side in one run) starts `kosmos2 serve` on 127.0.0.1 (any free port) with the
//! tiny real-vocabulary fixture model (or `--model DIR`), and sends a fixed number of streamed chat
//! requests from N concurrent clients (varied images and prompts, greedy, a fixed `max_tokens`).
//! Each run has a time limit; a request not answered by then counts as an error. Reported per
//! setting: throughput (requests/s, generated tokens/s), p50/p99 latency and time to first token,
//! and the error count, which must be 0 (the command fails otherwise).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::paths::{assets_dir, fixtures_dir, repo_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Requests per setting.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// `--max-batch` settings to compare (1 = serial serving).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    max_batch: Vec<usize>,
    /// Seconds each setting may take before the remaining requests count as errors.
    #[arg(long, default_value_t = 300)]
    time_limit: u64,
    /// A model directory instead of the tiny real-vocabulary fixture model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The processor directory (default: the shared assets' kosmos-2-patch14-224).
    #[arg(long)]
    processor: Option<PathBuf>,
    /// `--threads` of the server.
    #[arg(long)]
    threads: Option<usize>,
    /// Use the already built target/release/kosmos2.
    #[arg(long)]
    no_build: bool,
}

/// What one request measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: Duration,
    ttft: Duration,
    tokens: usize,
}

/// One setting's results.
#[derive(Debug)]
struct Report {
    max_batch: usize,
    wall: Duration,
    samples: Vec<Sample>,
    errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.requests == 0 || args.clients == 0 || args.max_tokens == 0 {
        bail!("--requests, --clients and --max-tokens must be at least 1");
    }
    if args.max_batch.contains(&0) {
        bail!("--max-batch values must be at least 1");
    }
    let root = repo_root();
    if !args.no_build {
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "-p",
                "kosmos2-cli",
                "--bin",
                "kosmos2",
            ])
            .current_dir(&root)
            .status()
            .context("running cargo build")?;
        if !st.success() {
            bail!("cargo build --release -p kosmos2-cli failed");
        }
    }
    let bin = root.join("target/release/kosmos2");
    if !bin.is_file() {
        bail!("{} not found (build it or drop --no-build)", bin.display());
    }
    let assets = assets_dir()?;
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| fixtures_dir().join("models/tiny-realvocab"));
    let processor = args
        .processor
        .clone()
        .unwrap_or_else(|| assets.join("kosmos-2-patch14-224"));
    let bodies = request_bodies(&assets.join("images"), args.max_tokens)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "loadtest: {} requests, {} clients, max_tokens {}, model {}, load average before: {}",
        args.requests,
        args.clients,
        args.max_tokens,
        model.display(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut reports = Vec::new();
    for &b in &args.max_batch {
        let server = ServerProcess::start(&bin, &model, &processor, b, args)?;
        // One request first: the model is warm and the answers are checked to be non-empty.
        let warm = one_request(
            server.addr,
            &bodies[0],
            Instant::now() + Duration::from_secs(60),
        )
        .map_err(|e| anyhow::anyhow!("warm-up request failed: {e}"))?;
        if warm.tokens == 0 {
            bail!("the warm-up request generated no token");
        }
        let report = drive(server.addr, &bodies, args, b);
        drop(server);
        print_report(&report);
        reports.push(report);
    }
    println!();
    println!("| --max-batch | req/s | tokens/s | latency p50 | latency p99 | TTFT p50 | TTFT p99 | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!("{}", table_row(r));
    }
    if let (Some(serial), Some(best)) = (
        reports.iter().find(|r| r.max_batch == 1),
        reports
            .iter()
            .filter(|r| r.max_batch > 1)
            .max_by_key(|r| r.max_batch),
    ) {
        println!(
            "\ncontinuous batching (--max-batch {}) vs serial: {:.2}x requests/s, {:.2}x tokens/s",
            best.max_batch,
            rate(best) / rate(serial).max(1e-9),
            token_rate(best) / token_rate(serial).max(1e-9)
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let errors: usize = reports.iter().map(|r| r.errors.len()).sum();
    if errors > 0 {
        for r in &reports {
            for e in r.errors.iter().take(5) {
                eprintln!("--max-batch {}: {e}", r.max_batch);
            }
        }
        bail!("{errors} requests failed");
    }
    Ok(())
}

/// A `kosmos2 serve` child process on a free loopback port; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(
        bin: &Path,
        model: &Path,
        processor: &Path,
        max_batch: usize,
        args: &Args,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(["--served-model-name", "kosmos-2"])
            .arg("--model")
            .arg(model)
            .arg("--processor")
            .arg(processor)
            .args(["--max-batch", &max_batch.to_string()])
            // Every client's request fits in the queue: the test measures serving, not 429s.
            .args(["--queue-size", &args.requests.max(1).to_string()])
            .args(["--max-new-tokens", &args.max_tokens.to_string()])
            .args(["--max-tokens-limit", &args.max_tokens.to_string()])
            .args(["--request-timeout", &args.time_limit.to_string()])
            .env_remove("KOSMOS2_API_KEY")
            .env_remove("KOSMOS2_MODEL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = args.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        let mut child = cmd.spawn().context("starting kosmos2 serve")?;
        let stderr = child
            .stderr
            .take()
            .context("no stderr from kosmos2 serve")?;
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("kosmos2 serve exited before listening");
            };
            let line = line?;
            if let Some(a) = line
                .split("http://")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<SocketAddr>().ok())
            {
                break a;
            }
        };
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        if !addr.ip().is_loopback() {
            let _ = child.kill();
            bail!("the server listens on {addr}, not on loopback");
        }
        Ok(Self { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The request bodies: every image of the assets with three prompts, round robin.
fn request_bodies(images: &Path, max_tokens: usize) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(images)
        .with_context(|| format!("reading {}", images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jpg" | "jpeg" | "png")
            )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no images in {}", images.display());
    }
    let prompts = [
        "<grounding>An image of",
        "<grounding> Describe this image in detail:",
        "<grounding>A photo of",
    ];
    let mut bodies = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mime = if f.extension().is_some_and(|e| e == "png") {
            "png"
        } else {
            "jpeg"
        };
        let body = serde_json::json!({
            "model": "kosmos-2",
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": prompts[i % prompts.len()]},
                {"type": "image_url", "image_url": {"url": format!("data:image/{mime};base64,{}", base64(&bytes))}},
            ]}],
        });
        bodies.push(body.to_string());
    }
    Ok(bodies)
}

/// N clients share a counter of requests to send until all are sent or the time limit passes.
fn drive(addr: SocketAddr, bodies: &[String], args: &Args, max_batch: usize) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.time_limit);
    let bodies: Arc<Vec<String>> = Arc::new(bodies.to_vec());
    let total = args.requests;
    let handles: Vec<_> = (0..args.clients.min(total))
        .map(|_| {
            let (next, samples, errors, bodies) = (
                next.clone(),
                samples.clone(),
                errors.clone(),
                bodies.clone(),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                if Instant::now() >= deadline {
                    push(
                        &errors,
                        format!("request {i}: not sent before the time limit"),
                    );
                    continue;
                }
                match one_request(addr, &bodies[i % bodies.len()], deadline) {
                    Ok(s) => push(&samples, s),
                    Err(e) => push(&errors, format!("request {i}: {e}")),
                }
            })
        })
        .collect();
    for h in handles {
        if h.join().is_err() {
            push(&errors, "a client thread panicked".to_string());
        }
    }
    let wall = start.elapsed();
    Report {
        max_batch,
        wall,
        samples: take(&samples),
        errors: take(&errors),
    }
}

fn take<T: Clone>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock().map(|v| v.clone()).unwrap_or_default()
}

fn push<T>(m: &Mutex<Vec<T>>, x: T) {
    if let Ok(mut v) = m.lock() {
        v.push(x);
    }
}

/// One streamed chat request over a fresh connection: latency, TTFT, generated tokens.
fn one_request(addr: SocketAddr, body: &str, deadline: Instant) -> Result<Sample, String> {
    let t0 = Instant::now();
    let left = deadline.saturating_duration_since(t0);
    if left.is_zero() {
        return Err("past the time limit".into());
    }
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("read: {e}"))?;
    if status.split(' ').nth(1) != Some("200") {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        return Err(format!("{} {}", status.trim(), rest.trim()));
    }
    let mut ttft = None;
    let mut tokens = None;
    let mut done = false;
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("bad chunk {data:?}: {e}"))?;
        if ttft.is_none()
            && v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        {
            ttft = Some(t0.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
        if v.get("error").is_some() {
            return Err(format!("error chunk: {data}"));
        }
    }
    let latency = t0.elapsed();
    if !done {
        return Err("the stream ended without [DONE]".into());
    }
    let tokens = tokens.ok_or("no usage in the stream")?;
    Ok(Sample {
        latency,
        ttft: ttft.unwrap_or(latency),
        tokens,
    })
}

fn rate(r: &Report) -> f64 {
    r.samples.len() as f64 / r.wall.as_secs_f64().max(1e-9)
}

fn token_rate(r: &Report) -> f64 {
    r.samples.iter().map(|s| s.tokens).sum::<usize>() as f64 / r.wall.as_secs_f64().max(1e-9)
}

/// The `q` quantile (nearest rank) in milliseconds.
fn quantile_ms(mut xs: Vec<Duration>, q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort();
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1].as_secs_f64() * 1e3
}

fn table_row(r: &Report) -> String {
    let lat: Vec<Duration> = r.samples.iter().map(|s| s.latency).collect();
    let ttft: Vec<Duration> = r.samples.iter().map(|s| s.ttft).collect();
    format!(
        "| {} | {:.2} | {:.1} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
        r.max_batch,
        rate(r),
        token_rate(r),
        quantile_ms(lat.clone(), 0.5),
        quantile_ms(lat, 0.99),
        quantile_ms(ttft.clone(), 0.5),
        quantile_ms(ttft, 0.99),
        r.errors.len()
    )
}

fn print_report(r: &Report) {
    println!(
        "--max-batch {}: {} ok, {} errors in {:.2} s",
        r.max_batch,
        r.samples.len(),
        r.errors.len(),
        r.wall.as_secs_f64()
    );
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(A[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let xs: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(xs.clone(), 0.5), 50.0);
        assert_eq!(quantile_ms(xs.clone(), 0.99), 99.0);
        assert_eq!(quantile_ms(xs[..1].to_vec(), 0.99), 1.0);
        assert!(quantile_ms(Vec::new(), 0.5).is_nan());
    }
}
