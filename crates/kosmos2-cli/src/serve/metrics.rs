//! Server metrics in Prometheus' text format: requests, errors, queue depth, tokens, tokens/s,
//! and histograms of the time to first token and of the per-token latency.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram with fixed buckets (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {n}");
    }
}

const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const TOKEN_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// All counters of a server.
#[derive(Debug)]
pub struct Metrics {
    /// Requests received, by endpoint.
    requests: Mutex<Vec<(&'static str, u64)>>,
    /// Error responses, by status.
    errors: Mutex<Vec<(u16, u64)>>,
    /// Requests queued or running.
    pub queue_depth: AtomicU64,
    /// Requests queued and not yet taken by the model worker (briefly -1 when the worker takes
    /// a job before its sender counts it).
    pub waiting: AtomicI64,
    /// Requests in the running decode batch.
    pub running: AtomicU64,
    /// Requests that joined a batch already decoding (continuous batching).
    pub joined_running: AtomicU64,
    /// Prompt tokens processed.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Decode time, microseconds, all requests.
    pub decode_micros: AtomicU64,
    /// Generations cancelled (client gone or timed out).
    pub cancelled: AtomicU64,
    /// Decode steps run (one forward pass of the running batch each).
    pub batches: AtomicU64,
    /// Rows decoded, all steps (over `batches`: the mean batch size).
    pub batch_rows: AtomicU64,
    /// Time from the request's arrival to its first generated token.
    pub ttft: Histogram,
    /// Time per generated token after the first.
    pub token_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            queue_depth: AtomicU64::new(0),
            waiting: AtomicI64::new(0),
            running: AtomicU64::new(0),
            joined_running: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            decode_micros: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_rows: AtomicU64::new(0),
            ttft: Histogram::new(TTFT_BUCKETS),
            token_latency: Histogram::new(TOKEN_BUCKETS),
        }
    }
}

fn bump<K: PartialEq + Copy>(m: &Mutex<Vec<(K, u64)>>, key: K) {
    if let Ok(mut v) = m.lock() {
        match v.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => v.push((key, 1)),
        }
    }
}

impl Metrics {
    /// Counts a request to `endpoint`.
    pub fn request(&self, endpoint: &'static str) {
        bump(&self.requests, endpoint);
    }

    /// Counts an error response.
    pub fn error(&self, status: u16) {
        bump(&self.errors, status);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP kosmos2_requests_total Requests received.\n# TYPE kosmos2_requests_total counter\n",
        );
        if let Ok(v) = self.requests.lock() {
            for (k, n) in v.iter() {
                let _ = writeln!(out, "kosmos2_requests_total{{endpoint=\"{k}\"}} {n}");
            }
        }
        out.push_str(
            "# HELP kosmos2_errors_total Error responses.\n# TYPE kosmos2_errors_total counter\n",
        );
        if let Ok(v) = self.errors.lock() {
            for (k, n) in v.iter() {
                let _ = writeln!(out, "kosmos2_errors_total{{status=\"{k}\"}} {n}");
            }
        }
        let gen = self.generated_tokens.load(Ordering::Relaxed);
        let decode = self.decode_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let tps = if decode > 0.0 {
            gen as f64 / decode
        } else {
            0.0
        };
        let simple = [
            (
                "kosmos2_queue_depth",
                "gauge",
                "Requests queued or running.",
                self.queue_depth.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_waiting_requests",
                "gauge",
                "Requests queued and not yet taken by the model worker.",
                self.waiting.load(Ordering::Relaxed).max(0) as f64,
            ),
            (
                "kosmos2_running_requests",
                "gauge",
                "Requests in the running decode batch.",
                self.running.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_joined_running_total",
                "counter",
                "Requests that joined a batch already decoding (continuous batching).",
                self.joined_running.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
                self.prompt_tokens.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_generated_tokens_total",
                "counter",
                "Tokens generated.",
                gen as f64,
            ),
            (
                "kosmos2_cancelled_total",
                "counter",
                "Generations cancelled (client gone or timed out).",
                self.cancelled.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_batches_total",
                "counter",
                "Decode steps run (one forward pass of the running batch each).",
                self.batches.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_batch_rows_total",
                "counter",
                "Rows decoded, all steps (over batches: the mean batch size).",
                self.batch_rows.load(Ordering::Relaxed) as f64,
            ),
            (
                "kosmos2_decode_tokens_per_second",
                "gauge",
                "Generated tokens over decode time, all requests.",
                tps,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        self.ttft.render(
            &mut out,
            "kosmos2_time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
        );
        self.token_latency.render(
            &mut out,
            "kosmos2_time_per_output_token_seconds",
            "Time per generated token after the first.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.request("chat");
        m.request("chat");
        m.error(429);
        m.ttft.observe(Duration::from_millis(30));
        let s = m.render();
        assert!(
            s.contains("kosmos2_requests_total{endpoint=\"chat\"} 2"),
            "{s}"
        );
        assert!(s.contains("kosmos2_errors_total{status=\"429\"} 1"), "{s}");
        assert!(s.contains("kosmos2_time_to_first_token_seconds_bucket{le=\"0.025\"} 0"));
        assert!(s.contains("kosmos2_time_to_first_token_seconds_bucket{le=\"0.05\"} 1"));
        assert!(s.contains("kosmos2_time_to_first_token_seconds_count 1"));
    }
}
