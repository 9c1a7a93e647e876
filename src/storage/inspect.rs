//! The inspection role: sizes and listings for admin commands, the dead-letter place, and
//! flushing.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Sizes of each part of the storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Ready to run, not leased (includes messages whose lease has expired).
    pub ready: u64,
    /// Waiting for their eta.
    pub scheduled: u64,
    /// Leased to a consumer right now.
    pub in_flight: u64,
    /// Stored results (and stored errors).
    pub results: u64,
    /// In the dead-letter place.
    pub dead: u64,
}

/// A dead-letter entry as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's key in the dead-letter place (for `dead retry`).
    pub key: String,
    /// The task id, if known.
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// Why it was moved there.
    pub error: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// The messages of one named queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSize {
    /// The queue's name.
    pub queue: String,
    /// Ready to run (an expired lease counts as ready).
    pub ready: u64,
    /// Leased to a consumer.
    pub in_flight: u64,
}

/// Where a task id's message is now (see [`Inspect::locate`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// Ready to run in `queue`; `position` is how many messages of that queue run before it
    /// (when the backend can tell cheaply).
    Ready {
        /// The queue.
        queue: String,
        /// Its priority there.
        priority: i32,
        /// How many messages run before it.
        position: Option<u64>,
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// Leased to a consumer (running, or waiting for a worker in that consumer) until
    /// `until_ms`. `consumer` is the lease holder's name when the backend records it.
    Leased {
        /// The queue it was taken from.
        queue: String,
        /// The lease holder.
        consumer: Option<String>,
        /// When the lease ends unless extended (ms since the epoch).
        until_ms: u64,
        /// How many times it has been delivered.
        deliveries: u32,
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// Waiting in the schedule for `eta_ms`.
    Scheduled {
        /// When it becomes ready (ms since the epoch).
        eta_ms: u64,
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// In the dead-letter place.
    Dead {
        /// The queue it came from.
        queue: String,
        /// Why it was moved there.
        error: String,
        /// When (ms since the epoch).
        at_ms: u64,
    },
}

impl Location {
    /// Which of two places of one id tells more about it: a lease over a ready entry over a
    /// schedule entry over a dead letter.
    pub fn rank(&self) -> u8 {
        match self {
            Location::Leased { .. } => 3,
            Location::Ready { .. } => 2,
            Location::Scheduled { .. } => 1,
            Location::Dead { .. } => 0,
        }
    }
}

/// What [`Inspect::flush`] empties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flush {
    /// The ready queue, in-flight messages included.
    pub queue: bool,
    /// Scheduled messages.
    pub schedule: bool,
    /// Stored results.
    pub results: bool,
    /// Task locks.
    pub locks: bool,
    /// The dead-letter place.
    pub dead: bool,
    /// Revocations, claims, app data, counters and chord bookkeeping too.
    pub kv: bool,
}

impl Flush {
    /// Everything.
    pub fn all() -> Flush {
        Flush {
            queue: true,
            schedule: true,
            results: true,
            locks: true,
            dead: true,
            kv: true,
        }
    }
}

/// What admin commands see and do: sizes, listings, dead letters, flushing.
pub trait Inspect {
    /// The backend's name for messages ("sqlite", "redis", "memory").
    fn backend(&self) -> &'static str;

    /// Sizes of each part.
    fn counts(&self) -> Result<Counts>;

    /// Up to `limit` ready payloads in the order they would run (across queues by priority,
    /// then age).
    fn pending(&self, limit: usize) -> Result<Vec<Vec<u8>>>;

    /// Up to `limit` scheduled entries `(eta, payload)`, earliest first.
    fn scheduled(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;

    /// Up to `limit` dead-letter entries, oldest first.
    fn dead(&self, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Put dead-letter entries (all when `keys` is `None`) back on the ready queue with a fresh
    /// delivery count; returns how many.
    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize>;

    /// Empty the parts chosen.
    fn flush(&self, what: Flush) -> Result<()>;

    /// Where the message of task `id` is: leased, ready, scheduled or dead-lettered (`None`
    /// when it is in none of them, e.g. finished). When the id is in several places (a retry
    /// scheduled while its delivery is still leased), the one with the highest
    /// [`Location::rank`] is returned. Meant for admin reads of one task: it may scan.
    fn locate(&self, id: &str) -> Result<Option<Location>>;

    /// Ready and in-flight messages per named queue, by queue name (queues with neither may
    /// be left out). The default tells nothing (an empty list); SQLite and Redis override it.
    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        Ok(Vec::new())
    }
}
