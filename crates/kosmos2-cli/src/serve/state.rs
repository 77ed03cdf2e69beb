//! What every handler shares: the processor, the queue, the limits, the counters; and the
//! preparation of a request (decode the image, build and process the prompt, check the limits)
//! before it is queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use image::RgbImage;
use kosmos2::generation::GenerationConfig;
use kosmos2::task::TaskPrompt;
use kosmos_processor::{Kosmos2Processor, ProcessorOutput};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::error::ApiError;
use super::limits::{decode_image, image_bytes, Limits};
use super::metrics::Metrics;
use super::scheduler::{Event, Job, Scheduler};
use crate::run::process_prompt;

/// The server's shared state.
#[derive(Debug)]
pub struct AppState {
    /// The processor (prompts and images in, text out).
    pub processor: Arc<Kosmos2Processor>,
    /// The model's queue.
    pub scheduler: Scheduler,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Request limits.
    pub limits: Limits,
    /// The generation defaults (the model's special ids and the serve flags).
    pub gen: GenerationConfig,
    /// The name clients use for the model.
    pub model_name: String,
    /// The bearer token, when set.
    pub api_key: Option<String>,
    /// The model's positions (prompt plus new tokens must fit).
    pub max_positions: usize,
    /// How long one request may take, queue included.
    pub timeout: Duration,
    /// When the server started (Unix seconds, for `created`).
    pub started_unix: u64,
    next_id: AtomicU64,
}

/// An image and prompt, processed and checked.
#[derive(Debug)]
pub struct Prepared {
    /// The decoded image.
    pub image: RgbImage,
    /// The prompt as built.
    pub prompt: TaskPrompt,
    /// The processor output.
    pub processed: ProcessorOutput,
}

impl Prepared {
    /// The prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.processed.input_ids.first().map_or(0, Vec::len)
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AppState {
    /// The state of a server.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        processor: Arc<Kosmos2Processor>,
        scheduler: Scheduler,
        metrics: Arc<Metrics>,
        limits: Limits,
        gen: GenerationConfig,
        model_name: String,
        api_key: Option<String>,
        max_positions: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            processor,
            scheduler,
            metrics,
            limits,
            gen,
            model_name,
            api_key,
            max_positions,
            timeout,
            started_unix: unix_now(),
            next_id: AtomicU64::new(1),
        }
    }

    /// A fresh request id.
    pub fn next_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:x}{:06x}",
            self.started_unix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Checks the bearer token.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        // Compare every byte, whatever the first difference, so that timing says nothing.
        let ok = given.is_some_and(|g| {
            g.len() == key.len()
                && g.bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if ok {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// Checks the model name of a request.
    pub fn check_model(&self, name: Option<&str>) -> Result<(), ApiError> {
        match name {
            Some(n) if n != self.model_name => Err(ApiError::unknown_model(n, &self.model_name)),
            _ => Ok(()),
        }
    }

    /// The generation settings of a request: the defaults, then its `max_tokens`, `temperature`
    /// (> 0 samples, 0 is greedy), `top_p` and `seed`.
    pub fn generation(
        &self,
        max_tokens: Option<usize>,
        temperature: Option<f64>,
        top_p: Option<f64>,
        seed: Option<u64>,
    ) -> Result<GenerationConfig, ApiError> {
        let mut cfg = self.gen.clone();
        cfg.max_new_tokens = max_tokens.unwrap_or(self.limits.default_max_tokens);
        if cfg.max_new_tokens == 0 {
            return Err(ApiError::invalid(
                "invalid_max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        if cfg.max_new_tokens > self.limits.max_tokens {
            return Err(ApiError::invalid(
                "max_tokens_too_large",
                format!(
                    "max_tokens {} exceeds this server's limit of {}",
                    cfg.max_new_tokens, self.limits.max_tokens
                ),
            ));
        }
        if let Some(t) = temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "invalid_temperature",
                    format!("temperature {t} is not in [0, 2]"),
                ));
            }
            cfg.do_sample = t > 0.0;
            if t > 0.0 {
                cfg.temperature = t;
            }
        }
        if let Some(p) = top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "invalid_top_p",
                    format!("top_p {p} is not in (0, 1]"),
                ));
            }
            cfg.top_p = p;
        }
        if let Some(s) = seed {
            cfg.seed = s;
        }
        cfg.validate()
            .map_err(|e| ApiError::invalid("invalid_generation_settings", e.to_string()))?;
        Ok(cfg)
    }

    /// Decodes the image and processes the prompt (on a blocking thread), checking the limits.
    pub async fn prepare(
        self: &Arc<Self>,
        image_url: String,
        prompt: PromptSource,
        max_new_tokens: usize,
    ) -> Result<Prepared, ApiError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            state.prepare_blocking(&image_url, prompt, max_new_tokens)
        })
        .await
        .map_err(|e| ApiError::internal(format!("request preparation failed: {e}")))?
    }

    fn prepare_blocking(
        &self,
        image_url: &str,
        prompt: PromptSource,
        max_new_tokens: usize,
    ) -> Result<Prepared, ApiError> {
        let bytes = image_bytes(image_url, &self.limits)?;
        let image = decode_image(bytes, &self.limits)?;
        let (w, h) = image.dimensions();
        let prompt = match prompt {
            PromptSource::Text(t) => TaskPrompt {
                text: t,
                boxes: None,
            },
            PromptSource::Task(spec) => spec
                .task(w, h)
                .prompt()
                .map_err(|e| ApiError::invalid("invalid_task", e.to_string()))?,
        };
        let processed = process_prompt(&self.processor, &prompt, &image)
            .map_err(|e| ApiError::invalid("invalid_prompt", crate::app::one_line(&e)))?;
        let p = Prepared {
            image,
            prompt,
            processed,
        };
        let n = p.prompt_tokens();
        if n > self.limits.max_prompt_tokens {
            return Err(ApiError::invalid(
                "prompt_too_long",
                format!(
                    "the prompt is {n} tokens (the 64 image tokens included), over this server's limit of {}",
                    self.limits.max_prompt_tokens
                ),
            ));
        }
        if n + max_new_tokens > self.max_positions {
            return Err(ApiError::invalid(
                "context_length_exceeded",
                format!(
                    "the prompt is {n} tokens; with max_tokens {max_new_tokens} that exceeds the model's {} positions",
                    self.max_positions
                ),
            ));
        }
        Ok(p)
    }

    /// Queues a prepared request; its events come back on the receiver.
    pub fn enqueue(
        &self,
        processed: ProcessorOutput,
        cfg: GenerationConfig,
        stop: Vec<String>,
        arrived: Instant,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = unbounded_channel();
        self.scheduler.submit(Job {
            processed,
            cfg,
            stop,
            arrived,
            deadline: arrived + self.timeout,
            events: tx,
        })?;
        Ok(rx)
    }
}

/// Where a request's prompt comes from.
#[derive(Debug, Clone)]
pub enum PromptSource {
    /// A raw prompt (chat).
    Text(String),
    /// A task (`/v1/ground`).
    Task(crate::run::TaskSpec),
}

/// Waits for the end of a job, dropping its text increments.
pub async fn wait_done(
    mut rx: UnboundedReceiver<Event>,
) -> Result<super::scheduler::Finished, ApiError> {
    while let Some(ev) = rx.recv().await {
        if let Event::Done(r) = ev {
            return r;
        }
    }
    Err(ApiError::unavailable(
        "the model worker stopped before answering",
    ))
}
