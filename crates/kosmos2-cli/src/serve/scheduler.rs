//! The model's worker: one thread owns the model and runs **continuous batching** over a bounded
//! queue. At every token boundary it takes waiting requests (up to `--max-batch` running rows),
//! prefills each one alone (image encode + prompt) and adds its KV rows to the running decode batch;
//! then one forward pass decodes a token for every row. A request that finishes (eos, `max_tokens`,
//! a stop string), whose client went away (its event receiver dropped) or whose deadline passed
//! leaves at the next boundary and its KV rows are freed; the others go on. Each request keeps its
//! own settings (greedy or seeded sampling, temperature, top-p, stop strings, `max_tokens`, n-gram
//! blocking), and its tokens equal its tokens served alone ([`kosmos2::continuous`]).
//! A full queue is a 429.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kosmos2::continuous::{ContinuousBatch, Joined, RowId, RowStep};
use kosmos2::generation::{FinishReason, GenerationConfig, TextStream};
use kosmos2::{
    prompts_from_processor, Device, Kosmos2ForConditionalGeneration, ProcessorDetokenizer, Tensor,
};
use kosmos_processor::{Kosmos2Processor, ProcessorOutput};
use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use super::hooks::{Boundary, BoundaryHook, RowView};
use super::metrics::Metrics;
use super::stop::StopFilter;

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
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(job) {
            Ok(()) => {
                // Counted once it is in the channel (the worker may already have taken it: the
                // count is signed), so a count of n means n jobs are there to be taken.
                self.metrics.waiting.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
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
    /// Most requests decoding together (1: one at a time).
    pub max_batch: usize,
    /// Called at every token boundary (tests).
    pub hook: Option<BoundaryHook>,
}

/// Starts the worker thread with a queue of `capacity` jobs waiting (the running ones aside).
pub fn start(worker: Worker, capacity: usize) -> std::io::Result<(Scheduler, JoinHandle<()>)> {
    // A rendezvous channel would refuse a job while the worker is busy: keep at least one slot.
    let (tx, rx) = sync_channel(capacity.max(1));
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

/// A running request: its row of the batch and its streaming state.
struct Live<'p> {
    id: RowId,
    job: Job,
    prompt_ids: Vec<u32>,
    tokens: Vec<u32>,
    stream: TextStream<ProcessorDetokenizer<'p>>,
    stop: StopFilter,
    last_token: Option<Instant>,
}

/// Why a running request leaves the batch.
enum Leave {
    /// It finished (eos, length, or the stop filter).
    Done(FinishReason),
    /// Its client went away.
    Gone,
    /// Its deadline passed.
    Timeout,
    /// Streaming its text failed.
    Failed(ApiError),
}

impl Worker {
    fn serve(self, rx: Receiver<Job>) {
        let mut batch = ContinuousBatch::new(&self.model);
        let mut live: Vec<Live<'_>> = Vec::new();
        let mut open = true;
        // Ends when every sender is gone (the server has shut down), the queue is drained and
        // every running request has finished.
        loop {
            if live.is_empty() {
                if !open {
                    break;
                }
                match rx.recv() {
                    Ok(job) => {
                        self.metrics.waiting.fetch_sub(1, Ordering::SeqCst);
                        self.admit(job, &mut batch, &mut live, false);
                    }
                    Err(_) => break,
                }
            }
            self.call_hook(&batch, &live);
            while open && live.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(job) => {
                        self.metrics.waiting.fetch_sub(1, Ordering::SeqCst);
                        let running = !batch.is_empty();
                        self.admit(job, &mut batch, &mut live, running);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // Clients gone or out of time leave before the next forward pass.
            let now = Instant::now();
            let mut leaving = Vec::new();
            for l in &live {
                if l.job.events.is_closed() {
                    leaving.push((l.id, Leave::Gone));
                } else if now >= l.job.deadline {
                    leaving.push((l.id, Leave::Timeout));
                }
            }
            self.retire(leaving, &mut batch, &mut live);
            if batch.is_empty() {
                continue;
            }
            let t = Instant::now();
            let steps = batch.step();
            let spent = t.elapsed();
            match steps {
                Ok(steps) => {
                    self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                    self.metrics
                        .batch_rows
                        .fetch_add(steps.len() as u64, Ordering::Relaxed);
                    self.metrics
                        .decode_micros
                        .fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
                    let mut leaving = Vec::new();
                    for s in steps {
                        if let Some(l) = live.iter_mut().find(|l| l.id == s.id) {
                            if let Some(why) = self.token(l, s) {
                                leaving.push((s.id, why));
                            }
                        }
                    }
                    self.retire(leaving, &mut batch, &mut live);
                }
                Err(e) => {
                    // The batch is lost: every running request gets the error.
                    let err = ApiError::internal(e.to_string());
                    let all: Vec<_> = live
                        .iter()
                        .map(|l| (l.id, Leave::Failed(err.clone())))
                        .collect();
                    self.retire(all, &mut batch, &mut live);
                    batch = ContinuousBatch::new(&self.model);
                }
            }
        }
    }

    fn call_hook(&self, batch: &ContinuousBatch<'_>, live: &[Live<'_>]) {
        let Some(hook) = &self.hook else {
            return;
        };
        let boundary = Boundary {
            decode_steps: self.metrics.batches.load(Ordering::SeqCst),
            rows: live
                .iter()
                .map(|l| RowView {
                    max_tokens: l.job.cfg.max_new_tokens,
                    generated: batch.generated(l.id).map_or(l.tokens.len(), <[u32]>::len),
                })
                .collect(),
            metrics: &self.metrics,
            clients: live.iter().map(|l| &l.job.events).collect(),
        };
        (hook.0)(&boundary);
    }

    /// Prefills a new request and adds it to the batch (or answers it at once).
    fn admit<'p>(
        &'p self,
        job: Job,
        batch: &mut ContinuousBatch<'_>,
        live: &mut Vec<Live<'p>>,
        joins_running: bool,
    ) {
        if job.events.is_closed() {
            self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if Instant::now() >= job.deadline {
            let secs = (job.deadline - job.arrived).as_secs_f64();
            self.answer(&job, Err(ApiError::timeout(secs)));
            return;
        }
        let prepared = self.join(&job, batch);
        let (prompt_ids, joined, stream) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.answer(&job, Err(e));
                return;
            }
        };
        self.metrics
            .prompt_tokens
            .fetch_add(prompt_ids.len() as u64, Ordering::Relaxed);
        self.metrics.decode_micros.fetch_add(
            (joined.encode + joined.prefill).as_micros() as u64,
            Ordering::Relaxed,
        );
        if joins_running {
            self.metrics.joined_running.fetch_add(1, Ordering::Relaxed);
        }
        live.push(Live {
            id: joined.id,
            stop: StopFilter::new(job.stop.clone()),
            job,
            tokens: Vec::with_capacity(prompt_ids.len()),
            prompt_ids,
            stream,
            last_token: None,
        });
        self.metrics
            .running
            .store(live.len() as u64, Ordering::SeqCst);
        let Some(l) = live.last_mut() else {
            return;
        };
        if let Some(why) = self.token(l, joined.first) {
            self.retire(vec![(joined.id, why)], batch, live);
        }
    }

    /// Prefills a job and adds its row: its prompt ids, the join, its text stream.
    fn join<'p>(
        &'p self,
        job: &Job,
        batch: &mut ContinuousBatch<'_>,
    ) -> Result<(Vec<u32>, Joined, TextStream<ProcessorDetokenizer<'p>>), ApiError> {
        let internal = |e: &dyn std::fmt::Display| ApiError::internal(e.to_string());
        let prompt = prompts_from_processor(&job.processed)
            .map_err(|e| internal(&e))?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the request has no prompt"))?;
        let px = job
            .processed
            .pixel_values
            .as_ref()
            .ok_or_else(|| ApiError::invalid("missing_image", "the request has no image"))?;
        let pixels = Tensor::from_vec(
            px.array().iter().copied().collect(),
            &px.shape(),
            &self.device,
        )
        .map_err(|e| internal(&e))?;
        let joined = batch
            .join(&prompt, Some(&pixels), &job.cfg)
            .map_err(|e| internal(&e))?;
        let stream = TextStream::with_context(
            ProcessorDetokenizer::new(&self.processor),
            &prompt.input_ids,
        )
        .map_err(|e| internal(&e))?;
        Ok((prompt.input_ids, joined, stream))
    }

    /// Streams one new token of a request; `Some` when the request must leave.
    fn token(&self, l: &mut Live<'_>, s: RowStep) -> Option<Leave> {
        let now = Instant::now();
        match l.last_token {
            None => self.metrics.ttft.observe(now - l.job.arrived),
            Some(t) => self.metrics.token_latency.observe(now - t),
        }
        l.last_token = Some(now);
        l.tokens.push(s.token);
        self.metrics
            .generated_tokens
            .fetch_add(1, Ordering::Relaxed);
        match l.stream.push(s.token) {
            Ok(Some(piece)) => {
                let safe = l.stop.push(&piece);
                if !safe.is_empty() && l.job.events.send(Event::Delta(safe)).is_err() {
                    return Some(Leave::Gone);
                }
            }
            Ok(None) => {}
            Err(e) => return Some(Leave::Failed(ApiError::internal(e.to_string()))),
        }
        if l.stop.hit {
            return Some(Leave::Done(FinishReason::Stopped));
        }
        s.finished.map(Leave::Done)
    }

    /// Removes requests from the batch (freeing their KV rows) and answers them.
    fn retire(
        &self,
        leaving: Vec<(RowId, Leave)>,
        batch: &mut ContinuousBatch<'_>,
        live: &mut Vec<Live<'_>>,
    ) {
        if leaving.is_empty() {
            return;
        }
        let ids: Vec<RowId> = leaving.iter().map(|(id, _)| *id).collect();
        if let Err(e) = batch.leave(&ids) {
            // Cannot happen with ids of running rows; answer the requests all the same.
            eprintln!("kosmos2 serve: freeing batch rows failed: {e}");
        }
        let mut gone = Vec::with_capacity(leaving.len());
        for (id, why) in leaving {
            if let Some(pos) = live.iter().position(|l| l.id == id) {
                gone.push((live.remove(pos), why));
            }
        }
        // The gauges are right before any client hears its answer.
        self.metrics
            .running
            .store(live.len() as u64, Ordering::SeqCst);
        for (mut l, why) in gone {
            let result = match why {
                Leave::Done(reason) => self.finish(&mut l, reason),
                Leave::Gone => {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    Err(ApiError::internal("the client went away"))
                }
                Leave::Timeout => {
                    self.metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                    let secs = (l.job.deadline - l.job.arrived).as_secs_f64();
                    Err(ApiError::timeout(secs))
                }
                Leave::Failed(e) => Err(e),
            };
            self.answer(&l.job, result);
        }
    }

    /// Sends the end of a request and counts it out of the queue.
    fn answer(&self, job: &Job, result: Result<Finished, ApiError>) {
        self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
        let _ = job.events.send(Event::Done(result));
    }

    /// The result of a request that finished: the rest of its text, its finish reason.
    fn finish(&self, l: &mut Live<'_>, reason: FinishReason) -> Result<Finished, ApiError> {
        let mut rest = String::new();
        if !l.stop.hit {
            if let Some(piece) = l
                .stream
                .finish()
                .map_err(|e| ApiError::internal(e.to_string()))?
            {
                rest = l.stop.push(&piece);
            }
        }
        rest.push_str(&l.stop.finish());
        if !rest.is_empty() {
            let _ = l.job.events.send(Event::Delta(rest));
        }
        let (finish_reason, cli_finish_reason) = match reason {
            _ if l.stop.hit => ("stop", "stopped"),
            FinishReason::MaxNewTokens => ("length", "max_new_tokens"),
            FinishReason::Stopped => ("stop", "stopped"),
            FinishReason::Eos => ("stop", "eos"),
        };
        let mut sequence = std::mem::take(&mut l.prompt_ids);
        let prompt_tokens = sequence.len();
        sequence.extend_from_slice(&l.tokens);
        Ok(Finished {
            sequence,
            content: std::mem::take(&mut l.stop.text),
            prompt_tokens,
            completion_tokens: l.tokens.len(),
            finish_reason,
            cli_finish_reason,
        })
    }
}

/// How long a request may take.
pub fn deadline(arrived: Instant, timeout: Duration) -> Instant {
    arrived + timeout
}
