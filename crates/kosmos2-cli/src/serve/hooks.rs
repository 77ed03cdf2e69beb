//! A hook the model worker calls at every token boundary, before it admits waiting requests: tests
//! use it to hold the worker (a full queue, a client that goes away) or to make a request join a
//! running batch at a chosen step, without sleeps. A server started from the command line has none.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::metrics::Metrics;
use super::scheduler::Event;

/// One running row, as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowView {
    /// The request's `max_tokens`.
    pub max_tokens: usize,
    /// Tokens it has generated so far.
    pub generated: usize,
}

/// The worker's state at a token boundary.
#[derive(Debug)]
pub struct Boundary<'a> {
    /// Decode steps run since the server started.
    pub decode_steps: u64,
    /// The rows of the running batch, in batch order.
    pub rows: Vec<RowView>,
    pub(crate) metrics: &'a Metrics,
    pub(crate) clients: Vec<&'a UnboundedSender<Event>>,
}

impl Boundary<'_> {
    /// Requests queued and not yet taken by the worker, now: when it is `n`, the next `n`
    /// admissions find them.
    pub fn waiting(&self) -> u64 {
        self.metrics.waiting.load(Ordering::SeqCst).max(0) as u64
    }

    /// Whether the client of row `i` has gone away, now.
    pub fn client_gone(&self, i: usize) -> bool {
        self.clients.get(i).is_some_and(|c| c.is_closed())
    }

    /// Waits (polling) until `ready(self)` holds or `limit` passes; returns whether it held.
    pub fn wait_until(&self, limit: Duration, ready: impl Fn(&Self) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if ready(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The hook: called on the worker thread at every token boundary (and before the first request).
#[derive(Clone)]
pub struct BoundaryHook(pub Arc<dyn Fn(&Boundary<'_>) + Send + Sync>);

impl BoundaryHook {
    /// A hook running `f`.
    pub fn new(f: impl Fn(&Boundary<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for BoundaryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoundaryHook(..)")
    }
}
