//! Events: what happened to a task (huey calls these signals). The supervisor logs them.

use std::fmt;
use std::time::Duration;

use crate::failure::{Failure, FailureKind};
use crate::message::Message;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Put on its queue, to run as soon as a worker is free.
    Enqueued,
    /// Stored to run later (a delay, an ETA, or a retry delay).
    Scheduled,
    /// An attempt started on a worker.
    Executing,
    /// Returned a value.
    Complete,
    /// Failed for good with an error or panic.
    Error,
    /// Failed, and will run again (retries left, or the task asked for it).
    Retrying,
    /// Skipped: revoked before it ran.
    Revoked,
    /// Skipped: its expiry passed before it ran.
    Expired,
    /// Failed: a lock it takes was held.
    Locked,
    /// Stopped: the attempt ran past its timeout.
    Timeout,
    /// Put back: a rate limit it uses was reached.
    RateLimited,
    /// Stopped by its own code, with no retry.
    Canceled,
    /// Stopped by a shutdown; left for redelivery.
    Interrupted,
    /// The worker running it died (killed, crashed, out of memory).
    WorkerLost,
    /// Delivered too many times: moved to the dead-letter place.
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
    /// What happened.
    pub kind: EventKind,
    /// The task id.
    pub id: String,
    /// The task's name.
    pub task: String,
    /// The queue of the message, when known (empty otherwise).
    pub queue: String,
    /// Which attempt (1 for the first run).
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
