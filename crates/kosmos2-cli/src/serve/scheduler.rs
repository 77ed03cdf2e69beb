//! The model's worker: one thread owns the model and serves jobs from a bounded queue, streaming
//! each job's text back as it is generated. Greedy jobs with the same settings that wait in the
//! queue when the model becomes free are generated together as one batch. A full queue is a 429;
//! a job whose client has gone (its event receiver dropped) or whose deadline has passed stops
//! at the next token boundary (its batch-mates go on).

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kosmos2::generation::{BoxError, FinishReason, GenerationConfig, PromptBatch, TextStream};
use kosmos2::{
    prompts_from_processor, Device, ImageSession, Kosmos2ForConditionalGeneration, Tensor,
};
use kosmos_processor::{Kosmos2Processor, ProcessorOutput};
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::metrics::Metrics;

/// One generation request, processed and ready for the model.
#[derive(Debug)]
pub struct Job {
    /// The one-row processor output (prompt ids, image mask, pixels).
    pub processed: ProcessorOutput,
    /// The generation settings of this request.
    pub cfg: GenerationConfig,
    /// Stop strings: the text ends before the first one found.
    pub stop: Vec<String>,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// When the request times out.
    pub deadline: Instant,
    /// Where the text increments and the result go.
    pub events: UnboundedSender<Event>,
}

/// What a job sends back.
#[derive(Debug)]
pub enum Event {
    /// A new piece of the generated text.
    Delta(String),
    /// The end: the whole result, or why it failed.
    Done(Result<Finished, ApiError>),
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The full sequence, prompt included.
    pub sequence: Vec<u32>,
    /// The generated text (the concatenation of the deltas), cut at a stop string.
    pub content: String,
    /// Prompt length in tokens (image block included).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// OpenAI's finish reason: `stop` or `length`.
    pub finish_reason: &'static str,
    /// The CLI's finish reason: `eos`, `max_new_tokens` or `stopped`.
    pub cli_finish_reason: &'static str,
}

/// The sending side of the queue.
#[derive(Debug, Clone)]
pub struct Scheduler {
    tx: SyncSender<Job>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Queues a job, or refuses it with a 429 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => ApiError::busy(self.capacity),
                    TrySendError::Disconnected(_) => {
                        ApiError::unavailable("the model worker has stopped")
                    }
                })
            }
        }
    }
}

/// The model and what the worker needs to run it.
#[derive(Debug)]
pub struct Worker {
    /// The model.
    pub model: Kosmos2ForConditionalGeneration,
    /// Its device.
    pub device: Device,
    /// The processor (for detokenising).
    pub processor: Arc<Kosmos2Processor>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Most jobs generated together (greedy jobs with the same settings).
    pub max_batch: usize,
}

/// Starts the worker thread with a queue of `capacity` jobs waiting (the running one aside).
pub fn start(worker: Worker, capacity: usize) -> std::io::Result<(Scheduler, JoinHandle<()>)> {
    // A rendezvous channel would refuse a job while the worker is busy: keep at least one slot.
    let (tx, rx) = sync_channel(capacity);
    let metrics = worker.metrics.clone();
    let handle = std::thread::Builder::new()
        .name("kosmos2-model".into())
        .spawn(move || worker.serve(rx))?;
    Ok((
        Scheduler {
            tx,
            capacity,
            metrics,
        },
        handle,
    ))
}

impl Worker {
    fn serve(self, rx: Receiver<Job>) {
        let mut pending: Option<Job> = None;
        // Ends when every sender is gone (the server has shut down) and the queue is drained.
        loop {
            let first = match pending.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            // Greedy jobs with the same settings waiting in the queue run as one batch: each row
            // keeps its own KV rows and its output equals its output alone.
            let mut batch = vec![first];
            if !batch[0].cfg.do_sample {
                while batch.len() < self.max_batch {
                    match rx.try_recv() {
                        Ok(j) if j.cfg == batch[0].cfg => batch.push(j),
                        Ok(j) => {
                            pending = Some(j);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            let taken = batch.len() as u64;
            let mut live = Vec::with_capacity(batch.len());
            for job in batch {
                if job.events.is_closed() {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                } else if Instant::now() >= job.deadline {
                    let secs = (job.deadline - job.arrived).as_secs_f64();
                    let _ = job.events.send(Event::Done(Err(ApiError::timeout(secs))));
                } else {
                    live.push(job);
                }
            }
            if !live.is_empty() {
                self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .batch_rows
                    .fetch_add(live.len() as u64, Ordering::Relaxed);
                let senders: Vec<_> = live.iter().map(|j| j.events.clone()).collect();
                let results = match self.run(live) {
                    Ok(r) => r,
                    Err(e) => senders.iter().map(|_| Err(e.clone())).collect(),
                };
                for (tx, r) in senders.iter().zip(results) {
                    let _ = tx.send(Event::Done(r));
                }
            }
            self.metrics.queue_depth.fetch_sub(taken, Ordering::Relaxed);
        }
    }

    /// Generates the jobs (same settings) as one batch; one result per job.
    fn run(&self, jobs: Vec<Job>) -> Result<Vec<Result<Finished, ApiError>>, ApiError> {
        let internal = |e: &dyn std::fmt::Display| ApiError::internal(e.to_string());
        let n = jobs.len();
        let cfg = jobs[0].cfg.clone();
        let mut prompts = Vec::with_capacity(n);
        let mut data = Vec::new();
        let mut shape: Option<[usize; 4]> = None;
        for job in &jobs {
            prompts.extend(prompts_from_processor(&job.processed).map_err(|e| internal(&e))?);
            let px =
                job.processed.pixel_values.as_ref().ok_or_else(|| {
                    ApiError::invalid("missing_image", "the request has no image")
                })?;
            let s = px.shape();
            if s[0] != 1 || shape.is_some_and(|t| t[1..] != s[1..]) {
                return Err(ApiError::internal(format!(
                    "processed images of shape {s:?} cannot be batched"
                )));
            }
            shape = Some(s);
            data.extend(px.array().iter().copied());
        }
        let [_, c, h, w] = shape.ok_or_else(|| ApiError::internal("an empty batch"))?;
        let pixels =
            Tensor::from_vec(data, &[n, c, h, w], &self.device).map_err(|e| internal(&e))?;
        let mut session = ImageSession::new(&self.model, &pixels)
            .map_err(|e| internal(&e))?
            .with_prefix_reuse(false);
        let pad = cfg.resolved_pad_token_id().unwrap_or(1);
        let batch = PromptBatch::new(prompts, pad).map_err(|e| internal(&e))?;
        let images: Vec<Option<usize>> = (0..n).map(Some).collect();
        let mut rows = Vec::with_capacity(n);
        for job in &jobs {
            let prompt_ids = job.processed.input_ids.first().cloned().unwrap_or_default();
            let processor = self.processor.clone();
            let decode =
                move |ids: &[u32]| -> Result<String, BoxError> { Ok(processor.decode(ids, true)) };
            let stream = TextStream::with_context(decode, &prompt_ids).map_err(|e| internal(&e))?;
            rows.push(Row {
                prompt_len: prompt_ids.len(),
                stream,
                stop: StopFilter::new(job.stop.clone()),
                failure: None,
                cancelled: false,
                finished: false,
                last_token: None,
            });
        }
        let out = session
            .generate_batch_with(&batch, &images, &cfg, |ev| {
                let now = Instant::now();
                for t in ev.tokens {
                    let (Some(row), Some(job)) = (rows.get_mut(t.row), jobs.get(t.row)) else {
                        continue;
                    };
                    row.token(t.token, t.finished.is_some(), now, job, &self.metrics);
                }
                if rows.iter().all(Row::done) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .map_err(|e| internal(&e))?;
        let generated: usize = out.generated_lens.iter().sum();
        self.metrics
            .generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
        self.metrics.decode_micros.fetch_add(
            (out.stats.decode + out.stats.prefill).as_micros() as u64,
            Ordering::Relaxed,
        );
        let mut results = Vec::with_capacity(n);
        for (r, (mut row, job)) in rows.into_iter().zip(&jobs).enumerate() {
            results.push(row.finish(r, &out, job, &self.metrics));
        }
        Ok(results)
    }
}

/// The streaming state of one row of a batch.
struct Row<D> {
    prompt_len: usize,
    stream: TextStream<D>,
    stop: StopFilter,
    failure: Option<ApiError>,
    cancelled: bool,
    finished: bool,
    last_token: Option<Instant>,
}

impl<D: kosmos2::generation::Detokenize> Row<D> {
    /// Nothing more to send: the row ended, hit a stop string, failed or lost its client.
    fn done(&self) -> bool {
        self.finished || self.cancelled || self.failure.is_some() || self.stop.hit
    }

    fn token(&mut self, token: u32, last: bool, now: Instant, job: &Job, metrics: &Metrics) {
        if self.done() {
            return;
        }
        match self.last_token {
            None => metrics.ttft.observe(now - job.arrived),
            Some(t) => metrics.token_latency.observe(now - t),
        }
        self.last_token = Some(now);
        self.finished = last;
        match self.stream.push(token) {
            Ok(Some(piece)) => {
                let safe = self.stop.push(&piece);
                if !safe.is_empty() && job.events.send(Event::Delta(safe)).is_err() {
                    self.cancelled = true;
                }
            }
            Ok(None) => {}
            Err(e) => self.failure = Some(ApiError::internal(e.to_string())),
        }
        if job.events.is_closed() {
            self.cancelled = true;
        }
        if now >= job.deadline {
            let secs = (job.deadline - job.arrived).as_secs_f64();
            self.failure = Some(ApiError::timeout(secs));
        }
    }

    fn finish(
        &mut self,
        r: usize,
        out: &kosmos2::generation::GenerationOutput,
        job: &Job,
        metrics: &Metrics,
    ) -> Result<Finished, ApiError> {
        metrics
            .prompt_tokens
            .fetch_add(self.prompt_len as u64, Ordering::Relaxed);
        if self.cancelled {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::internal("the client went away"));
        }
        if let Some(e) = self.failure.take() {
            if e.code == "timeout" {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        let mut rest = String::new();
        if !self.stop.hit {
            if let Some(piece) = self
                .stream
                .finish()
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                rest = self.stop.push(&piece);
            }
        }
        rest.push_str(&self.stop.finish());
        if !rest.is_empty() {
            let _ = job.events.send(Event::Delta(rest));
        }
        let reason = out.finish_reasons.get(r).copied();
        let (finish_reason, cli_finish_reason) = match reason {
            _ if self.stop.hit => ("stop", "stopped"),
            Some(FinishReason::MaxNewTokens) => ("length", "max_new_tokens"),
            Some(FinishReason::Stopped) => ("stop", "stopped"),
            _ => ("stop", "eos"),
        };
        Ok(Finished {
            sequence: out.tokens(r).to_vec(),
            content: std::mem::take(&mut self.stop.text),
            prompt_tokens: self.prompt_len,
            completion_tokens: out.generated_lens.get(r).copied().unwrap_or(0),
            finish_reason,
            cli_finish_reason,
        })
    }
}

/// Cuts the text at the first stop string, holding back a tail that could start one.
#[derive(Debug, Clone, Default)]
struct StopFilter {
    stops: Vec<String>,
    text: String,
    sent: usize,
    hit: bool,
}

impl StopFilter {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Adds a piece; returns the text that is now safe to send.
    fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(pos.max(self.sent));
            self.hit = true;
        }
        let safe = if self.hit {
            self.text.len()
        } else {
            self.text.len() - self.held()
        };
        let out = self.text[self.sent..safe].to_string();
        self.sent = safe;
        out
    }

    /// The longest tail of the text that is a proper prefix of a stop string.
    fn held(&self) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > best && self.text.ends_with(&s[..k]) {
                    best = k;
                }
            }
        }
        best.min(self.text.len() - self.sent)
    }

    /// The rest of the text.
    fn finish(&mut self) -> String {
        let out = self.text[self.sent..].to_string();
        self.sent = self.text.len();
        out
    }
}

/// How long a request may take.
pub fn deadline(arrived: Instant, timeout: Duration) -> Instant {
    arrived + timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_cut_the_text_and_hold_back_prefixes() {
        let mut f = StopFilter::new(vec!["</phrase>".into()]);
        assert_eq!(f.push(" a dog"), " a dog");
        assert_eq!(f.push("</ph"), "");
        assert_eq!(f.push("rase> runs"), "");
        assert!(f.hit);
        assert_eq!(f.text, " a dog");
        let mut f = StopFilter::new(vec!["xyz".into()]);
        assert_eq!(f.push("abx"), "ab");
        assert_eq!(f.push("a"), "xa");
        assert_eq!(f.push("x"), "");
        assert_eq!(f.finish(), "x");
        assert_eq!(f.text, "abxax");
        let mut f = StopFilter::new(vec![]);
        assert_eq!(f.push("é"), "é");
    }
}
