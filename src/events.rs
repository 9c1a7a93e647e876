//! Events: what happened to a task (huey calls these signals). The supervisor logs them.

use std::fmt;
use std::time::Duration;

use crate::failure::{Failure, FailureKind};
use crate::message::Message;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Enqueued,
    Scheduled,
    Executing,
    Complete,
    /// Failed for good with an error or panic.
    Error,
    Retrying,
    Revoked,
    Expired,
    Locked,
    Timeout,
    RateLimited,
    Canceled,
    /// Stopped by a shutdown; left for redelivery.
    Interrupted,
    WorkerLost,
    DeadLettered,
}

impl EventKind {
    /// Lowercase name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Scheduled => "scheduled",
            EventKind::Executing => "executing",
            EventKind::Complete => "complete",
            EventKind::Error => "error",
            EventKind::Retrying => "retrying",
            EventKind::Revoked => "revoked",
            EventKind::Expired => "expired",
            EventKind::Locked => "locked",
            EventKind::Timeout => "timeout",
            EventKind::RateLimited => "rate-limited",
            EventKind::Canceled => "canceled",
            EventKind::Interrupted => "interrupted",
            EventKind::WorkerLost => "worker-lost",
            EventKind::DeadLettered => "dead-lettered",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FailureKind> for EventKind {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Error | FailureKind::Panic => EventKind::Error,
            FailureKind::Timeout => EventKind::Timeout,
            FailureKind::WorkerLost => EventKind::WorkerLost,
            FailureKind::Revoked => EventKind::Revoked,
            FailureKind::Expired => EventKind::Expired,
            FailureKind::Canceled => EventKind::Canceled,
            FailureKind::Locked => EventKind::Locked,
            FailureKind::RateLimited => EventKind::RateLimited,
            FailureKind::Undecodable | FailureKind::UnknownTask => EventKind::DeadLettered,
        }
    }
}

/// One event about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    pub id: String,
    pub task: String,
    /// The queue of the message, when known (empty otherwise).
    pub queue: String,
    pub attempt: u32,
    /// The error message, for failures.
    pub error: Option<String>,
    /// How long the attempt ran, when known.
    pub duration: Option<Duration>,
    /// The worker's pid (process workers) or number (thread workers).
    pub worker: Option<u32>,
}

impl Event {
    /// An event with no details.
    pub fn new(kind: EventKind, id: &str, task: &str, attempt: u32) -> Event {
        Event {
            kind,
            id: id.to_string(),
            task: task.to_string(),
            queue: String::new(),
            attempt,
            error: None,
            duration: None,
            worker: None,
        }
    }

    /// An event about a message.
    pub fn for_message(kind: EventKind, m: &Message) -> Event {
        let mut e = Event::new(kind, &m.id, &m.task, m.attempt);
        e.queue = m.queue().to_string();
        e
    }

    /// With an error message.
    pub fn with_error(mut self, e: impl Into<String>) -> Event {
        self.error = Some(e.into());
        self
    }

    /// With a failure's kind and message.
    pub fn with_failure(self, f: &Failure) -> Event {
        self.with_error(format!("{}: {}", f.kind, f.message))
    }
}
