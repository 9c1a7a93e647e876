//! Changes in the consumer's pool of workers, counted process-wide (one supervisor per
//! process) for the Prometheus metrics (feature `metrics`) to read.

use std::sync::atomic::{AtomicU64, Ordering};

/// Worker changes counted by the pool (process-wide: one supervisor per process).
static WORKER_STARTS: AtomicU64 = AtomicU64::new(0);
/// Workers that died (killed, crashed) rather than being stopped.
static WORKER_DEATHS: AtomicU64 = AtomicU64::new(0);
/// Workers replaced on purpose: `--max-tasks`, `--max-memory`, SIGHUP, timeouts, revocations.
static WORKER_RECYCLES: AtomicU64 = AtomicU64::new(0);

/// A change in a consumer's pool of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerChange {
    /// Started (at boot, or to replace one).
    Start,
    /// Died (killed, crashed) rather than being stopped.
    Death,
    /// Replaced on purpose (`--max-tasks`, `--max-memory`, SIGHUP, a timeout, a revocation).
    Recycle,
}

/// Count a worker change (the pool calls it; the metrics read the counts).
pub fn count_worker(change: WorkerChange) {
    let c = match change {
        WorkerChange::Start => &WORKER_STARTS,
        WorkerChange::Death => &WORKER_DEATHS,
        WorkerChange::Recycle => &WORKER_RECYCLES,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counts so far: starts, deaths, recycles.
#[cfg(feature = "metrics")]
pub(crate) fn counts() -> [u64; 3] {
    [
        WORKER_STARTS.load(Ordering::Relaxed),
        WORKER_DEATHS.load(Ordering::Relaxed),
        WORKER_RECYCLES.load(Ordering::Relaxed),
    ]
}
