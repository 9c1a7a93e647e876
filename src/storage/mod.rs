//! Storage: the roles a backend plays, the backends, and opening one from a URL.
//!
//! A backend implements five role traits, each in its own module next to its types:
//! - [`Queue`]: the ready queue with leases, and the atomic [`Batch`] every outcome is written
//!   in (acks, enqueues, schedule entries, results, dead letters, chord counts);
//! - [`Schedule`]: moving due schedule entries to the ready queue;
//! - [`Results`]: reading (and waiting for) results;
//! - [`Kv`]: key-value entries with expiry (locks, revocations, claims) and counters;
//! - [`Inspect`]: sizes, listings, the dead-letter place and flushing, for admin commands.
//!
//! [`Storage`] is all five together; every type that implements them is a `Storage` (a blanket
//! impl), so callers hold an `Arc<dyn Storage>` and never name the roles. Some methods have
//! defaults built on the others (e.g. a polling [`Results::wait_result`]); a backend overrides
//! them only when it can do better.
//!
//! Every backend gives the same guarantees:
//! - **At-least-once.** [`Queue::dequeue`] leases messages instead of deleting them; only an
//!   ack (in a [`Batch`]) deletes. A lease that expires makes the message available to any
//!   consumer again. A message delivered more than `max_deliveries` times is moved to the
//!   dead-letter place instead of being delivered again (a chord member is counted as failed).
//! - **Batches are atomic and fenced.** [`Queue::apply_all`] is one transaction (SQLite, Postgres), one
//!   script (Redis) or one critical section (memory); each [`Batch`] in it is written whole,
//!   and one that carries a lease only while that lease is held: an outcome is never half
//!   written, and never written by a consumer that lost its lease or twice by a resend.
//! - **Times are milliseconds since the Unix epoch** (see [`crate::clock`]).

use std::time::{Duration, Instant};

mod applied;
pub mod chord;
pub mod inspect;
pub mod kv;
pub mod lazy;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod results;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod url;

#[cfg(feature = "postgres")]
pub use self::postgres::{PgTarget, PostgresStorage};
#[cfg(feature = "redis")]
pub use self::redis::RedisStorage;
pub use chord::{ChordCallback, ChordCount};
pub use inspect::{Counts, DeadLetter, Flush, Inspect, Location, QueueSize};
pub use kv::{Kv, Ns};
pub use lazy::LazyStorage;
pub use memory::MemoryStorage;
pub use queue::{
    Batch, Claim, DeadPut, Delivery, DequeueRequest, Lease, Queue, Ready, ResultPut, Schedule,
    Scheduled,
};
pub use results::{Pending, Results};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};
pub use url::{open, IntoStorageUrl, StorageUrl, DEFAULT_URL};

/// A storage backend: every role at once. All methods are blocking and safe to call from many
/// threads.
pub trait Storage: Queue + Schedule + Results + Kv + Inspect + Send + Sync + 'static {}

impl<T: Queue + Schedule + Results + Kv + Inspect + Send + Sync + 'static> Storage for T {}

/// When a wait of `wait` from now ends (a wait too long to represent ends in a century).
pub(crate) fn deadline(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// The priority inside an encoded message (0 when it does not decode): dead letters keep only
/// the payload, and a retried one goes back to the queue at its own priority.
pub(crate) fn priority_of(payload: &[u8]) -> i32 {
    crate::message::Message::decode(payload)
        .map(|m| m.priority())
        .unwrap_or(0)
}
