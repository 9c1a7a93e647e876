//! The storage trait: the ready queue with leases, the schedule, results, key-value entries
//! (locks, revocations, claims), counters, the dead-letter place, and inspection.
//!
//! Every backend gives the same guarantees:
//! - **At-least-once.** [`Storage::dequeue`] leases messages instead of deleting them; only an
//!   ack (in a [`Batch`]) deletes. A lease that expires makes the message available to any
//!   consumer again. A message delivered more than `max_deliveries` times is moved to the
//!   dead-letter place instead of being delivered again.
//! - **Batches are atomic.** One [`Batch`] is one transaction (SQLite), one `MULTI`/script
//!   (Redis) or one critical section (memory): an outcome is never half written.
//! - **Times are milliseconds since the Unix epoch** (see [`crate::clock`]).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod lazy;
pub mod memory;
pub mod redis;
pub mod sqlite;

pub use self::redis::RedisStorage;
pub use lazy::LazyStorage;
pub use memory::MemoryStorage;
pub use sqlite::{SqliteOptions, SqliteStorage, Synchronous};

/// A message ready to run (or to be made ready at its eta).
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    /// The task id (several entries may share one, e.g. a retry scheduled while acking).
    pub id: String,
    /// The named queue.
    pub queue: String,
    /// Higher first; FIFO within one priority.
    pub priority: i32,
    /// The encoded [`crate::message::Message`].
    pub payload: Vec<u8>,
}

/// An entry for the schedule: made ready at `eta_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub eta_ms: u64,
    pub ready: Ready,
}

/// An opaque handle on one delivery of a leased message, used to ack or extend it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease(pub String);

/// One leased message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub lease: Lease,
    /// The queue it was taken from.
    pub queue: String,
    pub payload: Vec<u8>,
    /// How many times it has been delivered, this delivery included (1 the first time).
    pub deliveries: u32,
}

/// What to dequeue and how.
#[derive(Debug, Clone)]
pub struct DequeueRequest {
    /// Who holds the lease (for inspection and per-consumer recovery).
    pub consumer: String,
    /// Queues served, in the order given; within a queue by priority then FIFO.
    pub queues: Vec<String>,
    /// At most this many messages.
    pub max: usize,
    /// How long the lease lasts unless extended.
    pub lease: Duration,
    /// Block up to this long for a message when none is ready (zero: don't block).
    pub wait: Duration,
    /// A message that would be delivered for more than this many times is dead-lettered.
    pub max_deliveries: u32,
}

/// A result (or stored error) to write.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultPut {
    pub id: String,
    pub value: Vec<u8>,
    /// Expire the result after this long (`None`: keep until read).
    pub ttl: Option<Duration>,
}

/// A message moved to the dead-letter place, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadPut {
    /// The task id if the payload decoded, otherwise empty.
    pub id: String,
    pub queue: String,
    pub payload: Vec<u8>,
    pub error: String,
}

/// A dead-letter entry as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's key in the dead-letter place (for `dead retry`).
    pub key: String,
    /// The task id, if known.
    pub id: String,
    pub queue: String,
    pub payload: Vec<u8>,
    pub error: String,
    pub at_ms: u64,
}

/// One chord member's final outcome, counted in the same atomic write as the rest of its
/// batch. Applying it:
/// 1. if member `index` of `chord` was counted before (it ran twice), does nothing;
/// 2. otherwise marks it counted, keeps `outcome` as the member's item, and adds one to the
///    chord's count;
/// 3. when the count reaches `size`, enqueues the callback (once: the count only reaches
///    `size` once) with its arguments made of the items in member order (an item that is gone,
///    e.g. expired, is replaced by `callback.missing`), and deletes the items and the count.
///
/// Marks, items and counts expire after `ttl` (a chord that never completes leaves nothing
/// behind for good).
#[derive(Debug, Clone, PartialEq)]
pub struct ChordCount {
    /// The chord's id.
    pub chord: String,
    /// This member's position, from 0.
    pub index: u32,
    /// How many members the chord has.
    pub size: u32,
    /// The member's outcome as one encoded item of the callback's argument list.
    pub outcome: Vec<u8>,
    /// How long the chord's bookkeeping is kept at most.
    pub ttl: Duration,
    /// The callback to enqueue when this member is the last one counted.
    pub callback: ChordCallback,
}

/// The callback of a chord, ready to be put together by the storage: its payload is
/// `payload_head ++ varint(len(args)) ++ args ++ payload_tail` (the varint as postcard writes
/// lengths: 7 bits a byte, low first, high bit set on all but the last), where
/// `args = args_head ++ item 0 ++ … ++ item size-1 ++ args_tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordCallback {
    pub id: String,
    pub queue: String,
    pub priority: i32,
    pub payload_head: Vec<u8>,
    pub payload_tail: Vec<u8>,
    pub args_head: Vec<u8>,
    pub args_tail: Vec<u8>,
    /// The item used for a member whose outcome is gone.
    pub missing: Vec<u8>,
}

/// One atomic write. Empty vectors cost nothing.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Acknowledge these deliveries (deletes them; unknown or re-leased ones are ignored).
    pub ack: Vec<Lease>,
    pub enqueue: Vec<Ready>,
    pub schedule: Vec<Scheduled>,
    pub results: Vec<ResultPut>,
    pub dead: Vec<DeadPut>,
    /// Chord members to count (see [`ChordCount`]).
    pub chords: Vec<ChordCount>,
}

impl Batch {
    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ack.is_empty()
            && self.enqueue.is_empty()
            && self.schedule.is_empty()
            && self.results.is_empty()
            && self.dead.is_empty()
            && self.chords.is_empty()
    }

    /// Add everything `other` writes to this batch.
    pub fn append(&mut self, other: Batch) {
        self.ack.extend(other.ack);
        self.enqueue.extend(other.enqueue);
        self.schedule.extend(other.schedule);
        self.results.extend(other.results);
        self.dead.extend(other.dead);
        self.chords.extend(other.chords);
    }
}

/// Key-value namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    /// Task locks (flushed by `--flush-locks`).
    Locks,
    /// Revocations by task id or task name.
    Revoked,
    /// Periodic-run claims and other once-only markers.
    Claims,
    /// Anything else an app stores (e.g. the demo's attempt counters).
    Data,
}

impl Ns {
    /// A short stable name, usable as a table or key prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Ns::Locks => "locks",
            Ns::Revoked => "revoked",
            Ns::Claims => "claims",
            Ns::Data => "data",
        }
    }
}

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

/// What [`Storage::flush`] empties.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flush {
    /// The ready queue, in-flight messages included.
    pub queue: bool,
    pub schedule: bool,
    pub results: bool,
    pub locks: bool,
    pub dead: bool,
    /// Revocations, claims and app data too.
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

/// A storage backend. All methods are blocking and safe to call from many threads.
pub trait Storage: Send + Sync + 'static {
    /// The backend's name for messages ("sqlite", "redis", "memory").
    fn backend(&self) -> &'static str;

    /// Write one batch atomically.
    fn apply(&self, batch: &Batch) -> Result<()>;

    /// Lease up to `req.max` ready messages, blocking up to `req.wait` when there are none.
    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>>;

    /// Push the expiry of these leases to now + `lease` (leases no longer held are ignored).
    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<()>;

    /// Give these leases up: the messages are ready again at once.
    fn release(&self, leases: &[Lease]) -> Result<()>;

    /// Atomically move schedule entries due at `now_ms` to the ready queue; returns how many.
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize>;

    /// The earliest eta in the schedule.
    fn next_eta(&self) -> Result<Option<u64>>;

    /// Read a result; `take` deletes it in the same step.
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>>;

    /// Like [`Storage::result`], but wait up to `timeout` for it to be written.
    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>>;

    /// Delete a result; returns whether there was one.
    fn delete_result(&self, id: &str) -> Result<bool>;

    /// Read a key.
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>>;
    /// Write a key, replacing any value.
    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;
    /// Write a key only if it is absent (or expired); returns whether it was written.
    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool>;
    /// Delete a key and return its value.
    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>>;
    /// Delete a key only if it holds `value` (compare-and-delete, e.g. releasing a lock only
    /// while still its holder); returns whether it was deleted.
    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool>;
    /// Every live key of a namespace (meant for small ones: revocations, locks).
    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>>;

    /// Add `by` to a counter (missing counts as 0) and return the new value.
    fn incr(&self, key: &str, by: i64) -> Result<i64>;

    /// Add `by` to a counter that disappears `ttl` after it was created (a later call starts
    /// again from 0) and return the new value. Meant for windows: rate limits, chord counts.
    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64>;

    /// Sizes of each part.
    fn counts(&self) -> Result<Counts>;
    /// Up to `limit` ready payloads in the order they would run.
    fn pending(&self, limit: usize) -> Result<Vec<Vec<u8>>>;
    /// Up to `limit` scheduled payloads by eta.
    fn scheduled(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Up to `limit` dead-letter entries, oldest first.
    fn dead(&self, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Put dead-letter entries (all when `keys` is `None`) back on the ready queue with a fresh
    /// delivery count; returns how many.
    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize>;
    /// Empty the parts chosen.
    fn flush(&self, what: Flush) -> Result<()>;
}

/// Open a storage from a URL: `sqlite:PATH`, `memory:`, `redis://…`.
///
/// `app` names the app: backends that several apps may share (Redis) prefix their keys with it.
pub fn open(url: &str, app: &str) -> Result<Arc<dyn Storage>> {
    let bad = |reason: &str| Error::StorageUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if url == "memory:" || url == "memory://" {
        return Ok(Arc::new(MemoryStorage::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        if path.is_empty() {
            return Err(bad("expected sqlite:PATH, e.g. sqlite:huey.db"));
        }
        let opts = sqlite_options(query).map_err(|e| bad(&e))?;
        return Ok(Arc::new(SqliteStorage::open(path, opts)?) as Arc<dyn Storage>);
    }
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        return open_redis(url, app);
    }
    Err(bad(
        "unknown scheme; expected sqlite:PATH, memory: or redis://host:port/db",
    ))
}

fn open_redis(url: &str, app: &str) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(RedisStorage::open(url, app)?))
}

/// SQLite options from a URL's query: `synchronous=off|normal|full`, `busy_timeout=SECS`.
fn sqlite_options(query: &str) -> std::result::Result<SqliteOptions, String> {
    let mut opts = SqliteOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "synchronous" => {
                opts.synchronous = match v.to_ascii_lowercase().as_str() {
                    "off" => Synchronous::Off,
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => return Err(format!("synchronous={v}: expected off, normal or full")),
                }
            }
            "busy_timeout" => {
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("busy_timeout={v}: expected a number of seconds"))?;
                opts.busy_timeout = Duration::from_secs_f64(secs);
            }
            _ => {
                return Err(format!(
                    "unknown option {k:?}; SQLite URLs take synchronous and busy_timeout"
                ))
            }
        }
    }
    Ok(opts)
}

/// The storage URL from `HUEY_STORAGE`, or the embedded default `sqlite:huey.db`.
pub fn default_url() -> String {
    std::env::var("HUEY_STORAGE").unwrap_or_else(|_| "sqlite:huey.db".to_string())
}
