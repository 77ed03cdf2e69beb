//! `kosmos2 serve` over real HTTP on 127.0.0.1 with the tiny real-vocabulary model: OpenAI-shaped
//! chat requests (plain and streamed), the grounding endpoint, errors, auth, the full queue,
//! continuous batching (requests joining a running batch answer as they do alone) and
//! metrics; chat and ground answers equal the CLI's for the same input.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kosmos2::generation::GenerationConfig;
use kosmos2_cli::serve::hooks::BoundaryHook;
use kosmos2_cli::serve::limits::Limits;
use kosmos2_cli::serve::{Server, ServerConfig};
use serde_json::{json, Value};
use support::http::{metric, post, request, wait_metric, Resp, JSON};
use support::{env, Env};

impl Env {
    fn config(&self) -> ServerConfig {
        let base = GenerationConfig::from_model_dir(&self.model).unwrap();
        ServerConfig {
            model_dir: self.model.clone(),
            processor_dir: self.processor.clone(),
            device: kosmos2::Device::Cpu,
            dtype: kosmos2::Precision::F32,
            // The CLI's defaults.
            gen: GenerationConfig {
                max_new_tokens: 16,
                no_repeat_ngram_size: 3,
                ..base
            },
            model_name: "kosmos-2".into(),
            api_key: None,
            queue_size: 8,
            max_batch: 1,
            limits: Limits {
                default_max_tokens: 16,
                ..Limits::default()
            },
            timeout: Duration::from_secs(120),
            hook: None,
        }
    }

    fn start(&self, cfg: ServerConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::start(cfg, listener).unwrap()
    }

    fn image_path(&self, name: &str) -> PathBuf {
        common::image_path(&self.assets, name)
    }

    fn data_url(&self, name: &str) -> String {
        let bytes = std::fs::read(self.image_path(name)).unwrap();
        let mime = if name.ends_with(".png") {
            "png"
        } else {
            "jpeg"
        };
        format!("data:image/{mime};base64,{}", base64::encode(bytes))
    }

    /// `kosmos2 ARGS... --json --model tiny --processor real`, one JSON record.
    fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_kosmos2"))
            .args(args)
            .args(["--json", "--model"])
            .arg(&self.model)
            .arg("--processor")
            .arg(&self.processor)
            .env_remove("KOSMOS2_MODEL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The body the official OpenAI Python client sends for one image and a prompt.
fn chat_body(image: &str, prompt: &str, extra: Value) -> Value {
    let mut b = json!({
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": image}},
        ]}],
        "model": "kosmos-2",
        "max_tokens": 16,
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            b[k] = v;
        }
    }
    b
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");
}

fn check_completion_schema(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].is_u64());
    assert_eq!(v["model"], "kosmos-2");
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert!(c["message"]["content"].is_string());
    assert!(matches!(
        c["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
}

#[test]
fn chat_and_ground_equal_the_cli() {
    let Some(env) = env("chat_and_ground_equal_the_cli") else {
        return;
    };
    let server = env.start(env.config());
    let addr = server.addr();
    let img = env.image_path("snowman.jpg");
    let img = img.to_str().unwrap();

    // Chat, as the OpenAI client sends it, against `kosmos2 generate`.
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body(
            &env.data_url("snowman.jpg"),
            "<grounding>An image of",
            json!({}),
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    check_completion_schema(&v);
    let cli = env.cli(&[
        "generate",
        img,
        "--prompt",
        "<grounding>An image of",
        "--max-new-tokens",
        "16",
    ]);
    let g = &v["grounding"];
    for k in ["text", "caption", "entities", "objects", "width", "height"] {
        assert_eq!(g[k], cli[k], "{k}");
    }
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty());
    assert!(
        cli["text"].as_str().unwrap().ends_with(content),
        "{content:?} vs {}",
        cli["text"]
    );
    let gen_ids = cli["generated_ids"].as_array().unwrap().len() as u64;
    assert_eq!(v["usage"]["total_tokens"].as_u64().unwrap(), gen_ids);
    assert_eq!(
        v["choices"][0]["finish_reason"],
        if cli["finish_reason"] == "eos" {
            "stop"
        } else {
            "length"
        }
    );

    // The same request streamed: OpenAI's chunks, the same text, usage last.
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body(
            &env.data_url("snowman.jpg"),
            "<grounding>An image of",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(chunks.len() >= 3);
    let id = chunks[0]["id"].clone();
    let mut streamed = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "kosmos-2");
        assert!(
            c.get("usage").is_some(),
            "include_usage puts usage (null) in every chunk"
        );
        if i + 1 == chunks.len() {
            assert_eq!(c["choices"], json!([]));
            assert_eq!(c["usage"], v["usage"]);
            continue;
        }
        let ch = &c["choices"][0];
        assert_eq!(ch["index"], 0);
        if i == 0 {
            assert_eq!(ch["delta"]["role"], "assistant");
        }
        if let Some(s) = ch["delta"]["content"].as_str() {
            streamed.push_str(s);
        }
        if i + 2 == chunks.len() {
            assert_eq!(ch["finish_reason"], v["choices"][0]["finish_reason"]);
            assert_eq!(c["grounding"], v["grounding"]);
        } else {
            assert!(ch["finish_reason"].is_null());
        }
    }
    assert_eq!(streamed, content);

    // Stop strings cut the text.
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body(
            &env.data_url("snowman.jpg"),
            "<grounding>An image of",
            json!({"stop": ["</phrase>"]}),
        ),
        &[],
    );
    let s = r.json();
    let stopped = s["choices"][0]["message"]["content"].as_str().unwrap();
    match content.find("</phrase>") {
        Some(i) => {
            assert_eq!(stopped, &content[..i]);
            assert_eq!(s["choices"][0]["finish_reason"], "stop");
        }
        None => assert_eq!(stopped, content),
    }

    // /v1/ground against the task subcommands.
    let cases = [
        (
            json!({"task": "caption"}),
            vec!["caption", img, "--max-new-tokens", "16"],
        ),
        (
            json!({"task": "ground", "phrase": "a snowman"}),
            vec![
                "ground",
                img,
                "--phrase",
                "a snowman",
                "--max-new-tokens",
                "16",
            ],
        ),
        (
            json!({"task": "refer", "box": [0.1, 0.2, 0.6, 0.9]}),
            vec![
                "refer",
                img,
                "--box",
                "0.1,0.2,0.6,0.9",
                "--max-new-tokens",
                "16",
            ],
        ),
        (
            json!({"task": "vqa", "question": "What is it?"}),
            vec![
                "vqa",
                img,
                "--question",
                "What is it?",
                "--max-new-tokens",
                "16",
            ],
        ),
    ];
    for (mut body, args) in cases {
        body["image"] = json!(env.data_url("snowman.jpg"));
        let r = post(addr, "/v1/ground", &body, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let cli = env.cli(&args);
        for k in [
            "task",
            "prompt",
            "bbox",
            "width",
            "height",
            "text",
            "caption",
            "entities",
            "objects",
            "answer",
            "grounding",
            "finish_reason",
        ] {
            assert_eq!(v.get(k), cli.get(k), "{}: {k}", body["task"]);
        }
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    }

    // Metrics saw it all.
    let m = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    let m = m.text();
    assert!(
        m.contains("kosmos2_requests_total{endpoint=\"chat_completions\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("kosmos2_requests_total{endpoint=\"ground\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("kosmos2_time_to_first_token_seconds_count 7"),
        "{m}"
    );
    assert!(m.contains("kosmos2_queue_depth 0"), "{m}");
    assert!(m.contains("# TYPE kosmos2_time_per_output_token_seconds histogram"));
    server.shutdown().unwrap();
}

#[test]
fn bad_requests_get_json_4xx_and_the_server_keeps_serving() {
    let Some(env) = env("bad_requests_get_json_4xx_and_the_server_keeps_serving") else {
        return;
    };
    let mut cfg = env.config();
    cfg.limits.max_image_pixels = 2_000_000;
    cfg.limits.max_request_bytes = 2_000_000;
    cfg.limits.max_prompt_tokens = 80;
    let server = env.start(cfg);
    let addr = server.addr();
    let small = env.data_url("snowman.jpg");
    let chat = "/v1/chat/completions";

    let r = request(addr, "POST", chat, &[JSON], b"{\"model\": ");
    assert_error(&r, 400, "invalid_json");
    let r = request(addr, "POST", chat, &[("Content-Type", "text/plain")], b"{}");
    assert_error(&r, 415, "unsupported_media_type");
    assert_error(
        &post(
            addr,
            chat,
            &chat_body("data:image/png;base64,!!notbase64", "", json!({})),
            &[],
        ),
        400,
        "invalid_base64",
    );
    let not_image = format!(
        "data:image/png;base64,{}",
        base64::encode(b"this is not an image")
    );
    assert_error(
        &post(addr, chat, &chat_body(&not_image, "", json!({})), &[]),
        400,
        "invalid_image",
    );
    let big = image::RgbImage::new(2000, 2000);
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(big)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let big_url = format!("data:image/png;base64,{}", base64::encode(&png));
    assert_error(
        &post(addr, chat, &chat_body(&big_url, "", json!({})), &[]),
        413,
        "image_too_large",
    );
    assert_error(
        &post(
            addr,
            chat,
            &chat_body(&small, "", json!({"model": "gpt-4o"})),
            &[],
        ),
        404,
        "model_not_found",
    );
    assert_error(
        &post(
            addr,
            chat,
            &chat_body(&small, "", json!({"max_tokens": 100000})),
            &[],
        ),
        400,
        "max_tokens_too_large",
    );
    assert_error(
        &post(
            addr,
            chat,
            &chat_body(&small, &"a photo of a dog ".repeat(20), json!({})),
            &[],
        ),
        400,
        "prompt_too_long",
    );
    assert_error(
        &post(addr, chat, &chat_body(&small, "", json!({"n": 2})), &[]),
        400,
        "invalid_n",
    );
    assert_error(
        &post(
            addr,
            chat,
            &chat_body("https://example.com/a.png", "", json!({})),
            &[],
        ),
        400,
        "image_url_not_allowed",
    );
    let huge = vec![b'a'; 3_000_000];
    let r = request(addr, "POST", chat, &[JSON], &huge);
    assert_error(&r, 413, "request_too_large");
    let r = post(
        addr,
        "/v1/ground",
        &json!({"image": small, "task": "refer", "box": [0.5, 0.5, 0.2, 0.9]}),
        &[],
    );
    assert_error(&r, 400, "invalid_task");
    let r = post(
        addr,
        "/v1/ground",
        &json!({"image": small, "task": "ground"}),
        &[],
    );
    assert_error(&r, 400, "missing_field");
    let r = post(
        addr,
        "/v1/ground",
        &json!({"image": small, "task": "paint"}),
        &[],
    );
    assert_error(&r, 400, "invalid_task");
    assert_error(
        &request(addr, "GET", "/v1/nothing", &[], b""),
        404,
        "not_found",
    );

    // Still serving.
    let r = request(addr, "GET", "/health", &[], b"");
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let r = post(
        addr,
        chat,
        &chat_body(&small, "", json!({"max_tokens": 4})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = request(addr, "GET", "/metrics", &[], b"").text();
    assert!(m.contains("kosmos2_errors_total{status=\"400\"}"), "{m}");
    server.shutdown().unwrap();
}

#[test]
fn bearer_token_and_models() {
    let Some(env) = env("bearer_token_and_models") else {
        return;
    };
    let mut cfg = env.config();
    cfg.api_key = Some("s3cret".into());
    let server = env.start(cfg);
    let addr = server.addr();
    assert_error(
        &request(addr, "GET", "/v1/models", &[], b""),
        401,
        "invalid_api_key",
    );
    assert_error(
        &request(
            addr,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer nope")],
            b"",
        ),
        401,
        "invalid_api_key",
    );
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body(&env.data_url("snowman.jpg"), "", json!({})),
        &[],
    );
    assert_error(&r, 401, "invalid_api_key");
    let r = request(
        addr,
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "kosmos-2");
    assert_eq!(v["data"][0]["object"], "model");
    // Health needs no token.
    assert_eq!(request(addr, "GET", "/health", &[], b"").status, 200);
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body(&env.data_url("snowman.jpg"), "", json!({"max_tokens": 4})),
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    server.shutdown().unwrap();
}

/// The text and finish reason of a streamed answer.
fn streamed(r: &Resp) -> (String, Value) {
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let mut content = String::new();
    let mut finish = Value::Null;
    for e in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = e.strip_prefix("data: ").unwrap();
        if data == "[DONE]" {
            continue;
        }
        let c: Value = serde_json::from_str(data).unwrap();
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(s);
        }
        if !c["choices"][0]["finish_reason"].is_null() {
            finish = c["choices"][0]["finish_reason"].clone();
        }
    }
    (content, finish)
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let Some(env) = env("a_full_queue_answers_429_with_retry_after") else {
        return;
    };
    // The worker is held at its token boundaries while `hold` is set: the running request cannot
    // finish and no waiting request is taken, so the queue fills deterministically.
    let hold = Arc::new(AtomicBool::new(true));
    let mut cfg = env.config();
    cfg.queue_size = 2;
    cfg.max_batch = 1;
    let h = hold.clone();
    cfg.hook = Some(BoundaryHook::new(move |b| {
        if !b.rows.is_empty() {
            assert!(b.wait_until(Duration::from_secs(300), |_| !h.load(Ordering::SeqCst)));
        }
    }));
    let server = env.start(cfg);
    let addr = server.addr();
    let body = chat_body(
        &env.data_url("snowman.jpg"),
        "<grounding>An image of",
        json!({"max_tokens": 12}),
    );
    let send = |body: &Value| {
        let body = body.clone();
        std::thread::spawn(move || post(addr, "/v1/chat/completions", &body, &[]))
    };
    let running = send(&body);
    wait_metric(addr, "kosmos2_running_requests", 1.0);
    let queued: Vec<_> = (0..2).map(|_| send(&body)).collect();
    wait_metric(addr, "kosmos2_waiting_requests", 2.0);
    // One running, two waiting: the queue (2) is full.
    let busy = post(addr, "/v1/chat/completions", &body, &[]);
    assert_error(&busy, 429, "queue_full");
    assert_eq!(busy.header("retry-after"), Some("1"));
    hold.store(false, Ordering::SeqCst);
    let first = running.join().unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    for q in queued {
        let r = q.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.json()["choices"],
            first.json()["choices"],
            "the same request, the same answer"
        );
    }
    assert_eq!(metric(addr, "kosmos2_joined_running_total"), 0.0);
    server.shutdown().unwrap();
}

/// Where the join hook stands: which request may join next.
#[derive(Debug, Default)]
struct Joins {
    /// Requests let in so far (the test sends request k + 1 when told).
    next: usize,
    /// Batch sizes seen at each boundary.
    sizes: Vec<usize>,
}

#[test]
fn requests_join_the_running_batch_and_equal_their_solo_answers() {
    let Some(env) = env("requests_join_the_running_batch_and_equal_their_solo_answers") else {
        return;
    };
    // Different images, prompts, lengths and settings (greedy, stop string, seeded sampling, a
    // stream); request k + 1 joins when the newest running request has made 2 tokens.
    let bodies = [
        chat_body(
            &env.data_url("snowman.jpg"),
            "<grounding>An image of",
            json!({"max_tokens": 40, "temperature": 0}),
        ),
        chat_body(
            &env.data_url("corgi.jpg"),
            "<grounding> Describe this image in detail:",
            json!({"max_tokens": 9}),
        ),
        chat_body(
            &env.data_url("two_dogs.jpg"),
            "<grounding>A photo of",
            json!({"max_tokens": 30, "temperature": 0.8, "top_p": 0.9, "seed": 7}),
        ),
        chat_body(
            &env.data_url("snowman.png"),
            "<grounding>An image of",
            json!({"max_tokens": 20, "stream": true, "stop": "</phrase>"}),
        ),
    ];
    let n = bodies.len();
    let state = Arc::new(Mutex::new(Joins::default()));
    let (told_tx, told_rx) = std::sync::mpsc::channel::<usize>();
    let told_tx = Mutex::new(told_tx);
    let enabled = Arc::new(AtomicBool::new(true));
    let mut cfg = env.config();
    cfg.max_batch = 4;
    cfg.queue_size = 4;
    let (st, on) = (state.clone(), enabled.clone());
    cfg.hook = Some(BoundaryHook::new(move |b| {
        if !on.load(Ordering::SeqCst) {
            return;
        }
        let mut s = st.lock().unwrap();
        s.sizes.push(b.rows.len());
        let newest = b.rows.last().map_or(0, |r| r.generated);
        if s.next < n && b.rows.len() == s.next && newest >= 2 {
            // Ask the test for the next request and hold this boundary until it is queued.
            let _ = told_tx.lock().unwrap().send(s.next);
            assert!(b.wait_until(Duration::from_secs(120), |b| b.waiting() >= 1));
            s.next += 1;
        }
    }));
    let server = env.start(cfg);
    let addr = server.addr();
    state.lock().unwrap().next = 1;
    let mut handles = vec![{
        let b = bodies[0].clone();
        std::thread::spawn(move || post(addr, "/v1/chat/completions", &b, &[]))
    }];
    for (k, b) in bodies.iter().enumerate().skip(1) {
        let asked = told_rx.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(asked, k);
        let b = b.clone();
        handles.push(std::thread::spawn(move || {
            post(addr, "/v1/chat/completions", &b, &[])
        }));
    }
    let joined: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    enabled.store(false, Ordering::SeqCst);
    let sizes = state.lock().unwrap().sizes.clone();
    assert!(sizes.contains(&n), "all {n} ran together: {sizes:?}");
    assert_eq!(metric(addr, "kosmos2_joined_running_total"), (n - 1) as f64);
    // Alone, each gives the same answer.
    for (b, got) in bodies.iter().zip(&joined) {
        let solo = post(addr, "/v1/chat/completions", b, &[]);
        if b["stream"] == json!(true) {
            assert_eq!(streamed(got), streamed(&solo));
            continue;
        }
        let (got, solo) = (got.json(), solo.json());
        assert_eq!(got["choices"], solo["choices"]);
        assert_eq!(got["grounding"], solo["grounding"]);
        assert_eq!(got["usage"], solo["usage"]);
    }
    // The streamed request stopped at its stop string or its length.
    let (text, finish) = streamed(&joined[n - 1]);
    assert!(!text.contains("</phrase>"), "{text}");
    assert!(finish == "stop" || finish == "length", "{finish}");
    assert_eq!(metric(addr, "kosmos2_running_requests"), 0.0);
    assert_eq!(metric(addr, "kosmos2_queue_depth"), 0.0);
    server.shutdown().unwrap();
}
