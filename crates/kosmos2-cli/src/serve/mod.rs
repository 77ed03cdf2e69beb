//! `kosmos2 serve`: an HTTP server (axum + tokio) for KOSMOS-2.
//!
//! - `POST /v1/chat/completions`: OpenAI's chat schema, images as `data:` URLs, `stream: true`
//!   over server-sent events; the reply carries the grounded entities in `grounding`.
//! - `POST /v1/ground`: a task (caption, caption_detailed, ground, refer, vqa) on one image,
//!   answered with the CLI's grounded JSON.
//! - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text).
//!
//! One worker thread owns the model and runs continuous batching ([`scheduler`]): at every token
//! boundary, requests waiting in a bounded queue (a full queue answers 429 with `Retry-After`) are
//! prefilled and join the running decode batch (at most `--max-batch` rows); finished, cancelled
//! and timed-out requests leave it and free their KV rows. Each request keeps its own settings and
//! its output equals its output served alone. Requests are decoded and processed on tokio's
//! blocking threads meanwhile. A client that goes away stops its generation at the next token;
//! shutdown (Ctrl-C) stops accepting, lets the requests in flight finish, then stops the worker.
//! `docs/serving.md` describes the scheduler, the limits, the flags and the metrics.

pub mod error;
pub mod ground;
pub mod hooks;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod routes;
pub mod scheduler;
pub mod state;
mod stop;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use kosmos2::generation::GenerationConfig;
use kosmos2::{Device, Kosmos2ForConditionalGeneration, Precision};

use crate::cli::{DTypeArg, DeviceArg, GenArgs};
use limits::Limits;
use metrics::Metrics;
use scheduler::Worker;
use state::AppState;

/// The options of `kosmos2 serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The model folder (config.json, model.safetensors, tokenizer and preprocessor files) or a
    /// hub id (`ORG/NAME[@REVISION]`: the local Hugging Face cache, else a download).
    #[arg(long, value_name = "DIR|HF_ID", env = "KOSMOS2_MODEL")]
    pub model: Option<String>,
    /// The processor directory, when the tokenizer and preprocessor files are not in --model.
    #[arg(long, value_name = "DIR")]
    pub processor: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Precision.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Address to listen on (loopback by default; use 0.0.0.0 to listen on every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer TOKEN` on /v1/* and /metrics.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "KOSMOS2_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The model name clients send (default: the model folder's name).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Requests waiting for the model beyond the running ones; more get 429.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue_size: usize,
    /// Most requests decoding together (continuous batching: new requests join the running
    /// batch at token boundaries; each keeps its own KV rows and its output equals its output
    /// alone). 1 = one request at a time.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_batch: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 20 << 20, value_name = "BYTES")]
    pub max_request_bytes: usize,
    /// Largest image (width × height).
    #[arg(long, default_value_t = 40_000_000, value_name = "PIXELS")]
    pub max_image_pixels: u64,
    /// Longest prompt in tokens (the 64 image tokens included).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_prompt_tokens: usize,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_tokens_limit: usize,
    /// Seconds a request may take, queue included.
    #[arg(long, default_value_t = 300.0, value_name = "SECS")]
    pub request_timeout: f64,
    /// Accept file:// image URLs (reads files on the server; http(s) URLs are never fetched).
    #[arg(long)]
    pub allow_file_urls: bool,
    /// Generation defaults (`--max-new-tokens` is the default `max_tokens`).
    #[command(flatten)]
    pub gen: GenArgs,
}

/// Everything a server needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model folder.
    pub model_dir: PathBuf,
    /// The processor folder.
    pub processor_dir: PathBuf,
    /// The device.
    pub device: Device,
    /// The precision.
    pub dtype: Precision,
    /// Generation defaults.
    pub gen: GenerationConfig,
    /// The model name clients send.
    pub model_name: String,
    /// The bearer token.
    pub api_key: Option<String>,
    /// Queue capacity.
    pub queue_size: usize,
    /// Most requests decoding together.
    pub max_batch: usize,
    /// Request limits.
    pub limits: Limits,
    /// Request time limit.
    pub timeout: Duration,
    /// Called by the model worker at every token boundary (tests; `None` from the command line).
    pub hook: Option<hooks::BoundaryHook>,
}

impl ServerConfig {
    /// The configuration of a command line.
    pub fn from_args(args: &ServeArgs) -> Result<Self> {
        let model_dir = crate::hub_cache::resolve_model(args.model.as_deref())?;
        crate::app::check_model_dir(&model_dir)?;
        let base = GenerationConfig::from_model_dir(&model_dir).with_context(|| {
            format!(
                "{}: cannot read the generation defaults",
                model_dir.display()
            )
        })?;
        let gen = crate::app::generation_config(base, &args.gen)?;
        if gen.num_beams > 1 {
            anyhow::bail!("serve generates token by token: --num-beams must be 1");
        }
        if args.max_batch == 0 {
            anyhow::bail!("--max-batch must be at least 1");
        }
        if args.queue_size == 0 {
            anyhow::bail!("--queue-size must be at least 1");
        }
        if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
            anyhow::bail!("--request-timeout must be a positive number of seconds");
        }
        if args.gen.max_new_tokens > args.max_tokens_limit {
            anyhow::bail!(
                "--max-new-tokens {} exceeds --max-tokens-limit {}",
                args.gen.max_new_tokens,
                args.max_tokens_limit
            );
        }
        let model_name = args.served_model_name.clone().unwrap_or_else(|| {
            model_dir
                .file_name()
                .map_or_else(|| "kosmos-2".into(), |n| n.to_string_lossy().into_owned())
        });
        Ok(Self {
            processor_dir: args.processor.clone().unwrap_or_else(|| model_dir.clone()),
            model_dir,
            device: crate::app::device(args.device)?,
            dtype: crate::app::dtype(args.dtype),
            gen,
            model_name,
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            queue_size: args.queue_size,
            max_batch: args.max_batch,
            limits: Limits {
                max_request_bytes: args.max_request_bytes,
                max_image_pixels: args.max_image_pixels,
                max_prompt_tokens: args.max_prompt_tokens,
                max_tokens: args.max_tokens_limit,
                default_max_tokens: args.gen.max_new_tokens,
                allow_file_urls: args.allow_file_urls,
            },
            timeout: Duration::from_secs_f64(args.request_timeout),
            hook: None,
        })
    }
}

/// A running server (for tests and embedding): stop it with [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Server {
    /// Loads the model and serves on `listener` from a background thread.
    pub fn start(cfg: ServerConfig, listener: TcpListener) -> Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let prepared = prepare(&cfg)?;
        let thread = std::thread::Builder::new()
            .name("kosmos2-http".into())
            .spawn(move || {
                serve_on(prepared, listener, async {
                    let _ = rx.await;
                })
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests in flight finish, and waits for the end.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The loaded model and state, before serving.
struct Prepared {
    state: Arc<AppState>,
    worker: JoinHandle<()>,
}

fn prepare(cfg: &ServerConfig) -> Result<Prepared> {
    let processor = Arc::new(crate::debug::load_processor(&cfg.processor_dir)?);
    let model = Kosmos2ForConditionalGeneration::load(&cfg.model_dir, &cfg.device, cfg.dtype)
        .with_context(|| format!("cannot load the model from {}", cfg.model_dir.display()))?;
    let max_positions = model.model.config().text_config.max_position_embeddings;
    let metrics = Arc::new(Metrics::default());
    let (scheduler, worker) = scheduler::start(
        Worker {
            model,
            device: cfg.device.clone(),
            processor: processor.clone(),
            metrics: metrics.clone(),
            max_batch: cfg.max_batch,
            hook: cfg.hook.clone(),
        },
        cfg.queue_size,
    )?;
    let state = Arc::new(AppState::new(
        processor,
        scheduler,
        metrics,
        cfg.limits.clone(),
        cfg.gen.clone(),
        cfg.model_name.clone(),
        cfg.api_key.clone(),
        max_positions,
        cfg.timeout,
    ));
    Ok(Prepared { state, worker })
}

fn serve_on(
    p: Prepared,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let Prepared { state, worker } = p;
    let app = routes::router(state);
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("the server failed")
    })?;
    // Every handler (and with it every queue sender) is gone: the worker drains and ends.
    drop(rt);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the model worker panicked"))
}

/// `kosmos2 serve`: serves until Ctrl-C (or SIGTERM), then drains.
pub fn run(args: &ServeArgs) -> Result<()> {
    let cfg = ServerConfig::from_args(args)?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("--threads: cannot start the thread pool")?;
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let prepared = prepare(&cfg)?;
    eprintln!(
        "serving {} on http://{addr} (queue {}, batch {}, auth {})",
        cfg.model_name,
        cfg.queue_size,
        cfg.max_batch,
        if cfg.api_key.is_some() { "on" } else { "off" }
    );
    serve_on(prepared, listener, async {
        shutdown_signal().await;
        eprintln!("shutting down: finishing the requests in flight");
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
