//! How tasks fail: the kinds of failure, one attempt's failure as a worker reports it, and a
//! task's final error as its result handle returns it.
//!
//! A leaf: it imports nothing of the crate, so every module (the error type and storage
//! included) can use these types without an import circle.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why an attempt or a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The task returned an error.
    Error,
    /// The task panicked.
    Panic,
    /// The attempt ran past its timeout; its worker was replaced.
    Timeout,
    /// The worker running it died (killed, aborted, out of memory).
    WorkerLost,
    /// Revoked before it ran.
    Revoked,
    /// Expired before it ran.
    Expired,
    /// Canceled by its own code or a hook; not retried.
    Canceled,
    /// A lock it needed was held.
    Locked,
    /// A rate limit was used up; rescheduled for the next window without using a retry.
    RateLimited,
    /// The message could not be decoded.
    Undecodable,
    /// No task of that name is registered.
    UnknownTask,
}

impl FailureKind {
    /// Whether the retry policy applies to this kind of failure.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            FailureKind::Error
                | FailureKind::Panic
                | FailureKind::Timeout
                | FailureKind::WorkerLost
                | FailureKind::Locked
        )
    }

    /// A short lowercase name ("error", "worker-lost", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Error => "error",
            FailureKind::Panic => "panic",
            FailureKind::Timeout => "timeout",
            FailureKind::WorkerLost => "worker-lost",
            FailureKind::Revoked => "revoked",
            FailureKind::Expired => "expired",
            FailureKind::Canceled => "canceled",
            FailureKind::Locked => "locked",
            FailureKind::RateLimited => "rate-limited",
            FailureKind::Undecodable => "undecodable",
            FailureKind::UnknownTask => "unknown-task",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt failed, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure: an error, a panic, a timeout, a cancel...
    pub kind: FailureKind,
    /// The error message, or the panic's.
    pub message: String,
    /// Run the task again after this many ms without using up a retry (rate limits,
    /// `Control::Retry`). `None`: the retry policy decides.
    pub retry_delay_ms: Option<u64>,
    /// A cancel that asked to be retried (`Control::CancelRetry`, huey's
    /// `CancelExecution(retry=True)`): run again under the retry policy, at least once even
    /// with no retries left.
    pub retry_canceled: bool,
}

impl Failure {
    /// A failure of the given kind.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            retry_delay_ms: None,
            retry_canceled: false,
        }
    }

    /// A failure after which the task runs again after `delay`, without using up a retry.
    pub fn reschedule(kind: FailureKind, message: impl Into<String>, delay: Duration) -> Failure {
        Failure {
            retry_delay_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            ..Failure::new(kind, message)
        }
    }
}

/// A task's final failure, as read from its result handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("task {task} ({id}) failed on attempt {attempt}: {kind}: {message}")]
pub struct TaskError {
    /// The task id.
    pub id: String,
    /// The task name.
    pub task: String,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// Why it failed.
    pub kind: FailureKind,
    /// The error message (the task's error rendered with `Display`, the panic message, ...).
    pub message: String,
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
