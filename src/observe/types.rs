//! The records observability reads and writes.

use serde::{Deserialize, Serialize};

/// A live consumer, as its heartbeat record tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerInfo {
    /// `host:pid`, the name its leases are held under.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its supervisor's process id.
    pub pid: u32,
    /// The app's name.
    pub app: String,
    /// The huey version it runs.
    pub version: String,
    /// Worker kind: `thread` or `process`.
    pub kind: String,
    /// Worker slots.
    pub workers: usize,
    /// Queues served, in order.
    pub queues: Vec<String>,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it last wrote its record (ms since the epoch).
    pub last_seen_ms: u64,
    /// Its workers and what each runs now.
    pub workers_now: Vec<WorkerInfo>,
}

/// One worker of a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's pid (process workers) or number (thread workers); 0 while none is up.
    pub pid: u32,
    /// The task it runs, if any.
    pub task_id: Option<String>,
    /// That task's name.
    pub task_name: Option<String>,
    /// Since when it runs that task (ms since the epoch).
    pub since_ms: Option<u64>,
}

/// Where a task is, read from the storage (see [`crate::Huey::task_state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Ready to run in `queue`; `position` messages of that queue run before it (when the
    /// backend can tell).
    Queued {
        /// The queue it waits in.
        queue: String,
        /// How many messages of the queue run before it.
        position: Option<u64>,
        /// Its priority (higher runs first).
        priority: i32,
    },
    /// Waiting for its eta (a delayed task or a retry with a delay).
    Scheduled {
        /// When it becomes ready (ms since the epoch).
        eta_ms: u64,
    },
    /// Leased by `consumer` (when known); `worker` and `since_ms` when a live consumer's
    /// heartbeat says a worker runs it (none: waiting in the consumer for a worker).
    Running {
        /// The consumer that holds its lease (`host:pid`).
        consumer: Option<String>,
        /// The worker that runs it.
        worker: Option<u32>,
        /// Since when (ms since the epoch).
        since_ms: Option<u64>,
        /// Which delivery of the message this is (1 for the first).
        attempt: u32,
    },
    /// Finished, its result stored (a task whose result is not stored reads as unknown).
    Done,
    /// Failed for good.
    Failed {
        /// The final error message.
        error: String,
    },
    /// Revoked: skipped, or to be skipped when it comes up.
    Revoked,
    /// Expired before it ran.
    Expired,
    /// Moved to the dead-letter place.
    DeadLettered {
        /// Why it was moved there.
        error: String,
    },
    /// Not found: never enqueued, its result read (results are taken by default) or expired,
    /// or finished without a stored result.
    Unknown,
}

impl TaskState {
    /// A short lowercase name (`queued`, `running`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            TaskState::Queued { .. } => "queued",
            TaskState::Scheduled { .. } => "scheduled",
            TaskState::Running { .. } => "running",
            TaskState::Done => "done",
            TaskState::Failed { .. } => "failed",
            TaskState::Revoked => "revoked",
            TaskState::Expired => "expired",
            TaskState::DeadLettered { .. } => "dead_lettered",
            TaskState::Unknown => "unknown",
        }
    }
}

/// Outcomes counted in one minute, by every consumer of the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinuteStats {
    /// The minute's start (ms since the epoch).
    pub minute_ms: u64,
    /// Returned a value.
    pub complete: u64,
    /// Failed for good with an error or panic.
    pub error: u64,
    /// Failed and scheduled to run again.
    pub retry: u64,
    /// Timed out for good (a timeout with retries left counts as a retry).
    pub timeout: u64,
    /// Skipped as revoked.
    pub revoked: u64,
    /// Skipped as expired.
    pub expired: u64,
    /// Failed for good because its worker died.
    pub worker_lost: u64,
    /// Moved to the dead-letter place.
    pub dead: u64,
    /// Canceled by their own code.
    pub canceled: u64,
    /// Failed because a lock was held.
    pub locked: u64,
    /// Put back by a rate limit.
    pub rate_limited: u64,
}

impl MinuteStats {
    /// The counter names, in field order, as stored.
    pub const NAMES: [&'static str; 11] = [
        "complete",
        "error",
        "retry",
        "timeout",
        "revoked",
        "expired",
        "worker_lost",
        "dead",
        "canceled",
        "locked",
        "rate_limited",
    ];

    /// The counter called `name` (one of [`MinuteStats::NAMES`]).
    pub fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "complete" => &mut self.complete,
            "error" => &mut self.error,
            "retry" => &mut self.retry,
            "timeout" => &mut self.timeout,
            "revoked" => &mut self.revoked,
            "expired" => &mut self.expired,
            "worker_lost" => &mut self.worker_lost,
            "dead" => &mut self.dead,
            "canceled" => &mut self.canceled,
            "locked" => &mut self.locked,
            "rate_limited" => &mut self.rate_limited,
            _ => return None,
        })
    }

    /// Every outcome counted.
    pub fn total(&self) -> u64 {
        self.complete
            + self.error
            + self.retry
            + self.timeout
            + self.revoked
            + self.expired
            + self.worker_lost
            + self.canceled
            + self.locked
            + self.rate_limited
    }
}
