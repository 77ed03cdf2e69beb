//! `kosmos2 serve` lifecycle over real HTTP on 127.0.0.1 with the tiny model: a client that goes
//! away cancels its generation (its batch row is freed while a request that joined it goes on),
//! a request past its time limit gets 504, shutdown lets the requests in flight finish, and the
//! `serve` subcommand itself answers.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kosmos2::generation::GenerationConfig;
use kosmos2_cli::serve::hooks::BoundaryHook;
use kosmos2_cli::serve::limits::Limits;
use kosmos2_cli::serve::{Server, ServerConfig};
use serde_json::{json, Value};
use support::http::{metric, wait_metric};
use support::{env, Env};

impl Env {
    fn config(&self) -> ServerConfig {
        let base = GenerationConfig::from_model_dir(&self.model).unwrap();
        ServerConfig {
            model_dir: self.model.clone(),
            processor_dir: self.processor.clone(),
            device: kosmos2::Device::Cpu,
            dtype: kosmos2::Precision::F32,
            gen: GenerationConfig {
                no_repeat_ngram_size: 3,
                ..base
            },
            model_name: "kosmos-2".into(),
            api_key: None,
            queue_size: 4,
            max_batch: 1,
            limits: Limits {
                max_tokens: 1500,
                ..Limits::default()
            },
            timeout: Duration::from_secs(120),
            hook: None,
        }
    }

    fn body(&self, max_tokens: usize, stream: bool) -> String {
        self.body_of("snowman.jpg", max_tokens, stream)
    }

    fn body_of(&self, image: &str, max_tokens: usize, stream: bool) -> String {
        let bytes = std::fs::read(common::image_path(&self.assets, image)).unwrap();
        json!({
            "model": "kosmos-2",
            "max_tokens": max_tokens,
            "stream": stream,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{}", base64::encode(bytes))}},
            ]}],
        })
        .to_string()
    }
}

fn send(addr: SocketAddr, path: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

fn status_and_body(mut s: TcpStream) -> (u16, String) {
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn a_client_that_goes_away_cancels_its_generation() {
    let Some(env) = env("a_client_that_goes_away_cancels_its_generation") else {
        return;
    };
    // A second request joins the running stream at a boundary the hook chooses: when the stream
    // has made 3 tokens, the worker waits for it.
    let joined = Arc::new(AtomicBool::new(false));
    let (told_tx, told_rx) = std::sync::mpsc::channel::<()>();
    let told_tx = Mutex::new(told_tx);
    let mut cfg = env.config();
    cfg.max_batch = 2;
    let j = joined.clone();
    cfg.hook = Some(BoundaryHook::new(move |b| {
        if !j.load(Ordering::SeqCst) && b.rows.len() == 1 && b.rows[0].generated >= 3 {
            let _ = told_tx.lock().unwrap().send(());
            assert!(b.wait_until(Duration::from_secs(120), |b| b.waiting() >= 1));
            j.store(true, Ordering::SeqCst);
        }
    }));
    let server = Server::start(cfg, TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let addr = server.addr();
    let s = send(addr, "/v1/chat/completions", &env.body(1500, true));
    told_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    let other_body = env.body_of("corgi.jpg", 40, false);
    let other = send(addr, "/v1/chat/completions", &other_body);
    let other = std::thread::spawn(move || status_and_body(other));
    // The stream, read up to its second piece of text, then dropped mid-generation.
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut contents = 0;
    for _ in 0..10_000 {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains("\"content\":\"") && !line.contains("\"content\":\"\"") {
            contents += 1;
            if contents == 2 {
                break;
            }
        }
    }
    assert_eq!(contents, 2, "the stream sent text");
    drop(r);
    // Its row leaves the batch; the request that shared the batch finishes as it does alone.
    let (status, body) = other.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(joined.load(Ordering::SeqCst));
    assert_eq!(metric(addr, "kosmos2_joined_running_total"), 1.0);
    wait_metric(addr, "kosmos2_cancelled_total", 1.0);
    wait_metric(addr, "kosmos2_queue_depth", 0.0);
    assert_eq!(metric(addr, "kosmos2_running_requests"), 0.0);
    // Far fewer tokens than asked for were generated.
    assert!(metric(addr, "kosmos2_generated_tokens_total") < 1000.0);
    let (_, solo) = status_and_body(send(addr, "/v1/chat/completions", &other_body));
    let (a, b): (Value, Value) = (
        serde_json::from_str(&body).unwrap(),
        serde_json::from_str(&solo).unwrap(),
    );
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["usage"], b["usage"]);
    server.shutdown().unwrap();
}

#[test]
fn a_request_past_its_time_limit_gets_504() {
    let Some(env) = env("a_request_past_its_time_limit_gets_504") else {
        return;
    };
    let mut cfg = env.config();
    cfg.timeout = Duration::from_millis(1);
    let server = Server::start(cfg, TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let (status, body) = status_and_body(send(
        server.addr(),
        "/v1/chat/completions",
        &env.body(8, false),
    ));
    assert_eq!(status, 504, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "timeout");
    server.shutdown().unwrap();
}

#[test]
fn shutdown_lets_the_requests_in_flight_finish() {
    let Some(env) = env("shutdown_lets_the_requests_in_flight_finish") else {
        return;
    };
    let server = Server::start(env.config(), TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let addr = server.addr();
    let s = send(addr, "/v1/chat/completions", &env.body(200, false));
    let client = std::thread::spawn(move || status_and_body(s));
    // The request is running.
    wait_metric(addr, "kosmos2_queue_depth", 1.0);
    server.shutdown().unwrap();
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn the_serve_subcommand_answers_on_loopback() {
    let Some(env) = env("the_serve_subcommand_answers_on_loopback") else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_kosmos2"))
        .args([
            "serve",
            "--port",
            "0",
            "--api-key",
            "k",
            "--served-model-name",
            "kosmos-2",
        ])
        .arg("--model")
        .arg(&env.model)
        .arg("--processor")
        .arg(&env.processor)
        .env_remove("KOSMOS2_MODEL")
        .env_remove("KOSMOS2_API_KEY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(addr.ip().is_loopback(), "binds to 127.0.0.1 by default");
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"id\":\"kosmos-2\""), "{raw}");
}
