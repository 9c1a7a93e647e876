//! Task options: a task's defaults set at registration, overridable per call, and how they
//! become a message's wire options.

use std::time::{Duration, SystemTime};

use crate::clock;
pub use crate::lifecycle::{RetryJitter, MAX_RETRY_BACKOFF_MS};
use crate::message::{MessageOptions, DEFAULT_QUEUE};

/// When a task expires: a task not started by then is skipped (and recorded as expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    /// This long after it was enqueued.
    After(Duration),
    /// At this time.
    At(SystemTime),
}

impl From<Duration> for Expires {
    fn from(d: Duration) -> Self {
        Expires::After(d)
    }
}

impl From<SystemTime> for Expires {
    fn from(t: SystemTime) -> Self {
        Expires::At(t)
    }
}

/// When a scheduled task becomes ready: after a delay, or at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// After this long from now.
    Delay(Duration),
    /// At this time.
    Eta(SystemTime),
}

impl When {
    /// The absolute time, in ms since the epoch.
    pub fn eta_ms(self) -> u64 {
        match self {
            When::Delay(d) => clock::now_ms() + clock::ms(d),
            When::Eta(t) => clock::to_ms(t),
        }
    }
}

impl From<Duration> for When {
    fn from(d: Duration) -> Self {
        When::Delay(d)
    }
}

impl From<SystemTime> for When {
    fn from(t: SystemTime) -> Self {
        When::Eta(t)
    }
}

/// A task's defaults; every field can be overridden per call.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// How many times a failed task is tried again.
    pub retries: u32,
    /// Wait before each retry.
    pub retry_delay: Duration,
    /// Multiply the retry delay by this after each retry (1.0: fixed delay).
    pub retry_backoff: f32,
    /// Higher runs first; FIFO within a priority.
    pub priority: i32,
    /// Skip the task if it has not started by then.
    pub expires: Option<Expires>,
    /// Longest one attempt may run; past it the attempt fails with `Timeout`.
    pub timeout: Option<Duration>,
    /// Store the result. `None`: store it unless it is unit or `None` (as huey).
    pub store_result: Option<bool>,
    /// Also store the error of attempts that will be retried.
    pub store_errors_between_retries: bool,
    /// The named queue.
    pub queue: String,
    /// Hold this lock while running; when it is held the attempt fails with `Locked`.
    pub lock: Option<LockOption>,
    /// Hold a permit of this semaphore while running; when all are held the attempt fails with
    /// `Locked`.
    pub semaphore: Option<SemaphoreOption>,
    /// Run at most this often; over the limit the task is rescheduled for the next window.
    pub rate_limit: Option<RateLimit>,
    /// Enqueue only while no task with the same id is queued, scheduled or running (see
    /// `Call::unique`).
    pub unique: bool,
}

/// A lock a task holds while it runs (see `TaskBuilder::lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOption {
    /// The lock's name, shared by every task that takes it.
    pub name: String,
    /// Let the lock go after this long even if its holder never releases it (crashed).
    pub ttl: Option<Duration>,
}

/// A semaphore permit a task holds while it runs (see `TaskBuilder::semaphore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemaphoreOption {
    /// The semaphore's name (shared by every task and consumer that names it).
    pub name: String,
    /// How many holders the semaphore admits at once.
    pub permits: u32,
    /// Let a permit go this long after its holder stopped renewing it (crashed, killed): a
    /// permit is renewed while its task runs. `None`: the task's timeout, or
    /// [`SemaphoreOption::DEFAULT_TTL`] without one.
    pub ttl: Option<Duration>,
}

impl SemaphoreOption {
    /// A permit's TTL when neither it nor the task's timeout is set.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

    /// The TTL of a permit taken by a task with this `timeout`.
    pub fn ttl_for(&self, timeout: Option<Duration>) -> Duration {
        self.ttl.or(timeout).unwrap_or(Self::DEFAULT_TTL)
    }
}

/// A named limit of `limit` runs per `period` (see `TaskBuilder::rate_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The limit's name, shared by every task that uses it.
    pub name: String,
    /// Runs allowed per window.
    pub limit: u64,
    /// The window's length.
    pub period: Duration,
    /// Over the limit, reschedule for the next window without using up a retry (`true`, the
    /// default), or fail under the retry policy (`false`, huey's `retry=False`).
    pub retry: bool,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            retries: 0,
            retry_delay: Duration::ZERO,
            retry_backoff: 1.0,
            priority: 0,
            expires: None,
            timeout: None,
            store_result: None,
            store_errors_between_retries: false,
            queue: DEFAULT_QUEUE.to_string(),
            lock: None,
            semaphore: None,
            rate_limit: None,
            unique: false,
        }
    }
}

impl TaskOptions {
    /// The wire options for a message enqueued now.
    pub(crate) fn to_message_options(&self, now_ms: u64) -> MessageOptions {
        MessageOptions {
            retries: self.retries,
            retry_delay_ms: clock::ms(self.retry_delay),
            retry_backoff: self.retry_backoff,
            priority: self.priority,
            expires_at_ms: self.expires.map(|e| match e {
                Expires::After(d) => now_ms + clock::ms(d),
                Expires::At(t) => clock::to_ms(t),
            }),
            timeout_ms: self.timeout.map(clock::ms),
            store_result: self.store_result,
            store_errors_between_retries: self.store_errors_between_retries,
            queue: self.queue.clone(),
            unique: self.unique,
        }
    }
}

/// A uniform random value in `[0, 1)` (53 random bits), for retry jitter. Taken for every
/// outcome decided (most never use it), so it is a thread's xorshift generator seeded once
/// from the system's randomness, not a fresh random UUID each time.
pub(crate) fn uniform_random() -> f64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> =
            std::cell::Cell::new(uuid::Uuid::new_v4().as_u64_pair().0 | 1);
    }
    let x = STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    (x >> 11) as f64 / (1u64 << 53) as f64
}
