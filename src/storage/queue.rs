//! The queue role: ready messages leased to consumers, the atomic [`Batch`] every outcome is
//! written in, and the schedule role that feeds the queue.

use std::time::Duration;

use super::chord::ChordCount;
use crate::error::Result;

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
    /// When it becomes ready (ms since the epoch).
    pub eta_ms: u64,
    /// What is enqueued then.
    pub ready: Ready,
}

/// An opaque handle on one delivery of a leased message, used to ack or extend it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease(pub String);

/// One leased message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The handle to ack or extend this delivery with.
    pub lease: Lease,
    /// The queue it was taken from.
    pub queue: String,
    /// The encoded message.
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
    /// The task id it is stored under.
    pub id: String,
    /// The encoded result.
    pub value: Vec<u8>,
    /// Expire the result after this long (`None`: keep until read).
    pub ttl: Option<Duration>,
}

/// A message moved to the dead-letter place, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadPut {
    /// The task id if the payload decoded, otherwise empty.
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// Why it is moved there.
    pub error: String,
}

/// A once-only marker guarding a batch (see [`Batch::claim`]): a key in
/// [`super::Ns::Claims`], kept for `ttl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The claim's key.
    pub key: String,
    /// How long it is held.
    pub ttl: Duration,
}

/// One atomic write: one outcome of a delivery (fenced by its lease), or a producer's write.
/// Empty vectors cost nothing.
///
/// **Fencing.** A batch with a `lease` is the outcome of that delivery: it is written only
/// while the lease is still held, and then acknowledges it (deletes the message) together with
/// everything else it writes. When the lease is gone (it expired and the message went to
/// another consumer, or this very batch was written before and its reply was lost), the batch
/// writes nothing at all: no result, no retry, no next stage, no dead letter, no chord count.
/// So an outcome is written at most once, and re-sending a batch is safe: a batch written
/// before (through the same handle, or, on Redis, by a call whose reply was lost within the
/// last two minutes) is reported written again, so its events are told exactly once.
///
/// A batch without a lease (a producer's enqueue) is always written, unless it carries a
/// [`Claim`]: then it is written only if that claim is not held yet, and takes it in the same
/// step, so a write several consumers attempt (a periodic run) happens once between them and
/// is never claimed without being written.
///
/// Its parts are applied in field order; chord counts come last, so a callback made ready by
/// one is queued after the batch's own enqueues.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The delivery this batch is the outcome of: the fence, acknowledged by the write.
    pub lease: Option<Lease>,
    /// A claim the batch takes: written only if the claim is not held (an expired one is not).
    pub claim: Option<Claim>,
    /// Messages to make ready.
    pub enqueue: Vec<Ready>,
    /// Messages to schedule.
    pub schedule: Vec<Scheduled>,
    /// Results to store.
    pub results: Vec<ResultPut>,
    /// Messages to move to the dead-letter place.
    pub dead: Vec<DeadPut>,
    /// Chord members to count (see [`ChordCount`]).
    pub chords: Vec<ChordCount>,
    /// Claims to give up (keys in [`super::Ns::Claims`]): a unique task's marker, released by
    /// the write of its final outcome.
    pub release: Vec<String>,
}

impl Batch {
    /// A batch that only acknowledges `lease` (and writes nothing else).
    pub fn ack(lease: Lease) -> Batch {
        Batch {
            lease: Some(lease),
            ..Batch::default()
        }
    }

    /// True when the batch writes nothing (not even an ack).
    pub fn is_empty(&self) -> bool {
        self.lease.is_none()
            && self.claim.is_none()
            && self.enqueue.is_empty()
            && self.schedule.is_empty()
            && self.results.is_empty()
            && self.dead.is_empty()
            && self.chords.is_empty()
            && self.release.is_empty()
    }
}

/// The ready queue with leases, and the atomic batch write.
pub trait Queue {
    /// Write batches in one storage call (one transaction, one script): each one atomically,
    /// and a fenced one only while its lease is held (see [`Batch`]). Returns, per batch, whether
    /// it is written: by this call, or by an earlier send of the same outcome (then this one
    /// wrote nothing). `false`: its lease went to someone else, and it wrote nothing.
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>>;

    /// Write one batch atomically; `false` when it was fenced off (its lease was gone).
    fn apply(&self, batch: &Batch) -> Result<bool> {
        Ok(self
            .apply_all(std::slice::from_ref(batch))?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Lease up to `req.max` ready messages, blocking up to `req.wait` when there are none.
    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>>;

    /// [`Queue::dequeue`], and whether any revocation may be stored ([`super::Kv::may_hold_any`] of
    /// [`super::Ns::Revoked`]), read by the same storage call where the backend can (the consumer's
    /// fetch then needs no second round trip to learn that none applies). `None`: not read;
    /// ask `may_hold_any`.
    fn dequeue_seeing_revocations(
        &self,
        req: &DequeueRequest,
    ) -> Result<(Vec<Delivery>, Option<bool>)> {
        Ok((self.dequeue(req)?, None))
    }

    /// Push the expiry of these leases to now + `lease`, and say, per lease, whether it is still
    /// held. `false`: it is lost — its message was acknowledged, released, or (its lease having
    /// expired) delivered to another consumer — and is not renewed; the task must not start
    /// (its outcome would be fenced off anyway, but its body would run twice). A lease that
    /// expired may still be held, and is then renewed, as long as no other consumer's dequeue
    /// has put its message back since.
    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>>;

    /// Give these leases up: the messages are ready again at once (leases no longer held are
    /// ignored). `started` says whether their tasks began to run: a message handed back
    /// unstarted (from a prefetch buffer, at a graceful stop) takes back the delivery its
    /// dequeue counted, so deploys cannot dead-letter a task that never ran; one whose run was
    /// interrupted keeps it.
    fn release(&self, leases: &[Lease], started: bool) -> Result<()>;
}

/// Time-driven upkeep: schedule entries written by [`Batch::schedule`] made ready when due, and
/// expired entries deleted.
pub trait Schedule {
    /// Atomically move schedule entries due at `now_ms` to the ready queue, in eta order;
    /// returns how many.
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize>;

    /// Delete up to `max` entries that expired at `now_ms` — results with a TTL, key-value
    /// entries (claims, locks, revocations), expiring counters and chord bookkeeping — and
    /// return how many. Work per call is bounded by `max` and found through an index on
    /// expiry; a call that returns `max` may have left more. Expired entries already read as
    /// absent, so this changes no answer, only the size of the storage. The consumer calls it
    /// about once a minute (Redis expires keys itself and only trims its indexes here).
    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize>;
}
