//! A task's fate, decided by plain functions: given a fetched message or an attempt's outcome,
//! what is written (acks, results, retries, the next pipeline stage, error handlers, chord
//! counts, dead letters) and which events are told.
//!
//! Nothing here does I/O: every function appends to an [`Effects`] (one per delivery) that the
//! caller writes as one atomic [`Batch`], fenced by the delivery's lease, and then emits. The supervisor, immediate mode and [`crate::Huey::execute`]
//! all decide through these functions, so a task's path is the same whichever runs it.
//!
//! ```text
//! fetched bytes ─ decode ─┬─ undecodable ──────────────────────────── dead letter
//!                         └─ admit ─┬─ unknown task ──────────────── dead letter + failure
//!                                   ├─ eta in the future ─────────── back to the schedule
//!                                   ├─ revoked / expired ─────────── failure stored
//!                                   └─ run ─ outcome ─ complete ─┬── result (+ next stage)
//!                                                                ├── retry (schedule)
//!                                                                └── failure (+ error handler,
//!                                                                    dead letter if lost)
//! every final outcome of a chord member ─────────────────────────── chord count
//! every final outcome of a unique task ──────────────────────────── its claim released
//! ```

use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::failure::{Failure, FailureKind, TaskError};
use crate::message::{unique_claim, Message, Output, StoredResult};
use crate::storage::{Batch, DeadPut, Lease, Ready, ResultPut, Scheduled};

mod chord;
#[cfg(test)]
mod tests;

use chord::count_chord_member;

/// What the decisions about one delivery write (one atomic batch, fenced by the delivery's
/// lease) and tell (events, emitted once it is written).
#[derive(Debug, Default)]
pub struct Effects {
    pub batch: Batch,
    pub events: Vec<Event>,
}

/// Make `fx` the outcome of the delivery `lease`: its batch acknowledges the delivery and is
/// written only while the lease is held (see [`Batch`]). One `Effects` is about one delivery.
fn fence(fx: &mut Effects, lease: Option<&Lease>) {
    debug_assert!(
        fx.batch.lease.is_none() || fx.batch.lease.as_ref() == lease,
        "one Effects per delivery"
    );
    if lease.is_some() {
        fx.batch.lease = lease.cloned();
    }
}

/// Retry backoff grows a task's retry delay up to this: one hour. A `retry_delay` configured
/// above it is kept as it is, never grown.
pub const MAX_RETRY_BACKOFF_MS: u64 = 3_600_000;

/// The retry delay after one more retry: `delay` grown by `backoff`, capped at
/// [`MAX_RETRY_BACKOFF_MS`] (or at `delay` itself when that is larger).
fn backed_off(delay: u64, backoff: f32) -> u64 {
    let grown = (delay as f64 * f64::from(backoff.max(0.0))) as u64;
    grown.min(MAX_RETRY_BACKOFF_MS.max(delay))
}

/// Randomness added to retry delays, so that tasks that failed together (a dependency went
/// down) do not all come back at the same moment ("Exponential Backoff And Jitter", AWS
/// Architecture Blog). The delay before a retry is first grown by the task's backoff and capped
/// (see [`MAX_RETRY_BACKOFF_MS`]); jitter then only ever shortens it, never past the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryJitter {
    /// The delay as it is (huey's behaviour).
    #[default]
    None,
    /// A uniformly random delay between zero and the delay.
    Full,
    /// Half the delay, plus a uniformly random part of the other half.
    Equal,
}

impl RetryJitter {
    /// The delay before a retry, `delay` ms without jitter, given `random`, a uniform value in
    /// `[0, 1)` (anything outside is clamped).
    pub fn apply(self, delay: u64, random: f64) -> u64 {
        let r = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let part = |span: u64| ((span as f64 * r) as u64).min(span);
        match self {
            RetryJitter::None => delay,
            RetryJitter::Full => part(delay),
            RetryJitter::Equal => delay - delay / 2 + part(delay / 2),
        }
    }
}

/// The app-wide settings decisions depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep stored results (and stored errors) this long (`None`: until read).
    pub result_ttl: Option<Duration>,
    /// Store no results and no errors at all (huey's `results=False`).
    pub no_results: bool,
    /// Jitter on the delays of retries after failures.
    pub retry_jitter: RetryJitter,
    /// A uniform random value in `[0, 1)` drawn by the caller for this decision (for the
    /// jitter): decisions stay plain functions of their inputs.
    pub random: f64,
}

/// What is known about a decoded message when it is fetched, looked up by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The app registers a task of the message's name.
    pub known: bool,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
}

/// Decode a delivered payload. Bytes that are not a message are acknowledged and moved to the
/// dead-letter place with the decode error.
pub fn decode(
    lease: Option<&Lease>,
    queue: &str,
    payload: &[u8],
    fx: &mut Effects,
) -> Option<Message> {
    match Message::decode(payload) {
        Ok(m) => Some(m),
        Err(e) => {
            fence(fx, lease);
            fx.batch.dead.push(DeadPut {
                id: String::new(),
                queue: queue.to_string(),
                payload: payload.to_vec(),
                error: e.to_string(),
            });
            fx.events
                .push(Event::new(EventKind::DeadLettered, "", "", 0).with_error(e.to_string()));
            None
        }
    }
}

/// Decide whether a fetched message runs now. `None`: it was dealt with (dead-lettered,
/// rescheduled, recorded as revoked or expired) and its delivery acknowledged.
///
/// `revoked` says whether a revocation applies to the message; it is asked only for a known,
/// due message (taking a revoke-once entry is its caller's one I/O, and an entry must not be
/// used up by a message that would not have run anyway). Its error leaves the delivery alone.
pub fn admit(
    lease: Option<&Lease>,
    msg: Message,
    at: Admission,
    revoked: impl FnOnce(&Message) -> crate::Result<bool>,
    policy: Policy,
    fx: &mut Effects,
) -> crate::Result<Option<Message>> {
    let skip = |fx: &mut Effects| fence(fx, lease);
    if !at.known {
        skip(fx);
        let err = format!("no task named {:?} is registered in this app", msg.task);
        match msg.dead_letter_payload() {
            Ok(payload) => fx.batch.dead.push(DeadPut {
                id: msg.id.clone(),
                queue: msg.queue().to_string(),
                payload,
                error: err.clone(),
            }),
            Err(e) => fx
                .events
                .push(Event::for_message(EventKind::Error, &msg).with_error(e.to_string())),
        }
        finish_failure(
            &msg,
            Failure::new(FailureKind::UnknownTask, &err),
            at.now_ms,
            policy,
            fx,
        );
        fx.events
            .push(Event::for_message(EventKind::DeadLettered, &msg).with_error(err));
        return Ok(None);
    }
    if msg.eta_ms.is_some_and(|eta| eta > at.now_ms) {
        // Made ready early (e.g. a message enqueued straight to the queue): back to the schedule.
        skip(fx);
        push_follow_up(&msg, at.now_ms, fx);
        fx.events
            .push(Event::for_message(EventKind::Scheduled, &msg));
        return Ok(None);
    }
    let ended = if revoked(&msg)? {
        Some((
            Failure::new(FailureKind::Revoked, "revoked"),
            EventKind::Revoked,
        ))
    } else if msg.options.expires_at_ms.is_some_and(|e| e <= at.now_ms) {
        let f = Failure::new(FailureKind::Expired, "expired before it ran");
        Some((f, EventKind::Expired))
    } else {
        None
    };
    match ended {
        Some((f, kind)) => {
            skip(fx);
            finish_failure(&msg, f, at.now_ms, policy, fx);
            fx.events.push(Event::for_message(kind, &msg));
            Ok(None)
        }
        None => Ok(Some(msg)),
    }
}

/// Record an attempt's outcome: the result or error, a retry, the next pipeline stage, the
/// error handler, the chord count, and the ack of `lease`.
pub fn complete(
    lease: Option<&Lease>,
    msg: &Message,
    outcome: Result<Output, Failure>,
    now_ms: u64,
    policy: Policy,
    fx: &mut Effects,
) {
    fence(fx, lease);
    match outcome {
        Ok(out) => succeed(msg, out, now_ms, policy, fx),
        Err(f) if f.retry_delay_ms.is_some() && f.kind != FailureKind::Canceled => {
            // Rate limited, or asked for by the task: again later, no retry used up.
            let mut next = msg.clone();
            next.attempt += 1;
            let delay = f.retry_delay_ms.unwrap_or(0);
            next.eta_ms = (delay > 0).then(|| now_ms.saturating_add(delay));
            let kind = if f.kind == FailureKind::RateLimited {
                EventKind::RateLimited
            } else {
                EventKind::Retrying
            };
            retry(msg, next, f, kind, now_ms, policy, fx);
        }
        Err(f) if (retries_after(&f) && msg.options.retries > 0) || f.retry_canceled => {
            if f.kind == FailureKind::Locked || f.kind == FailureKind::Canceled {
                fx.events
                    .push(Event::for_message(f.kind.into(), msg).with_failure(&f));
            }
            let mut next = msg.clone();
            next.attempt += 1;
            next.options.retries = msg.options.retries.saturating_sub(1);
            let delay = msg.options.retry_delay_ms;
            next.options.retry_delay_ms = backed_off(delay, msg.options.retry_backoff);
            let wait = policy.retry_jitter.apply(delay, policy.random);
            next.eta_ms = (wait > 0).then(|| now_ms.saturating_add(wait));
            retry(msg, next, f, EventKind::Retrying, now_ms, policy, fx);
        }
        Err(f) => fail(msg, f, now_ms, policy, fx),
    }
}

/// Whether a failure without a delay of its own uses up a retry: a retryable kind, or a rate
/// limit that asked not to be rescheduled (huey's `retry=False`: a failure like any other).
fn retries_after(f: &Failure) -> bool {
    f.kind.is_retryable() || f.kind == FailureKind::RateLimited
}

fn succeed(msg: &Message, out: Output, now_ms: u64, policy: Policy, fx: &mut Effects) {
    // A pipeline stage that is (part of) a chord member hands its place on to the next stage:
    // the member's outcome is its last stage's (see `crate::flow`).
    let mut handed_on = false;
    if let Some(next) = &msg.on_complete {
        let mut next = (**next).clone();
        next.args = [out.value.as_slice(), &next.args].concat();
        next.enqueued_ms = now_ms;
        // A stage's own delay counts from now (see `Pipeline::delay`).
        next.eta_ms = next.eta_ms.map(|delay| now_ms.saturating_add(delay));
        if msg.chord.is_some() {
            next.chord = msg.chord.clone();
        }
        match push_message(&mut fx.batch, &next, now_ms) {
            Ok(()) => handed_on = msg.chord.is_some(),
            Err(e) => {
                fx.events
                    .push(Event::for_message(EventKind::Error, &next).with_error(e.to_string()));
                // The chord cannot wait for a stage that was not enqueued: the member failed.
                let f = Failure::new(
                    FailureKind::Error,
                    format!("the next pipeline stage could not be enqueued: {e}"),
                );
                count_chord_member(msg, &StoredResult::Err(task_error(msg, &f)), now_ms, fx);
                handed_on = true;
            }
        }
    }
    let store = msg.options.store_result.unwrap_or(!out.is_empty) && !policy.no_results;
    let stored = StoredResult::Ok {
        task: msg.task.clone(),
        value: out.value,
    };
    if store {
        fx.batch.results.push(ResultPut {
            id: msg.id.clone(),
            value: stored.encode(),
            ttl: policy.result_ttl,
        });
    }
    if !handed_on {
        count_chord_member(msg, &stored, now_ms, fx);
    }
    release_unique(msg, fx);
    fx.events.push(Event::for_message(EventKind::Complete, msg));
}

/// A unique task's final outcome gives up its claim in the same write, so the id can be
/// enqueued again as soon as the outcome is stored (and not before).
fn release_unique(msg: &Message, fx: &mut Effects) {
    if msg.options.unique {
        fx.batch.release.push(unique_claim(&msg.id));
    }
}

fn retry(
    msg: &Message,
    next: Message,
    f: Failure,
    kind: EventKind,
    now_ms: u64,
    policy: Policy,
    fx: &mut Effects,
) {
    let event = Event::for_message(kind, msg).with_failure(&f);
    if msg.options.store_errors_between_retries {
        store_failure(msg, f, policy, fx);
    }
    push_follow_up(&next, now_ms, fx);
    fx.events.push(event);
}

fn fail(msg: &Message, f: Failure, now_ms: u64, policy: Policy, fx: &mut Effects) {
    if f.kind == FailureKind::WorkerLost {
        if let Ok(payload) = msg.dead_letter_payload() {
            fx.batch.dead.push(DeadPut {
                id: msg.id.clone(),
                queue: msg.queue().to_string(),
                payload,
                error: format!("{}: {}", f.kind, f.message),
            });
            fx.events
                .push(Event::for_message(EventKind::DeadLettered, msg).with_failure(&f));
        }
    }
    if let Some(handler) = &msg.on_error {
        let mut next = (**handler).clone();
        if let Ok(err) = postcard::to_allocvec(&task_error(msg, &f)) {
            next.args = [err.as_slice(), &next.args].concat();
            next.enqueued_ms = now_ms;
            push_follow_up(&next, now_ms, fx);
        }
    }
    fx.events
        .push(Event::for_message(f.kind.into(), msg).with_failure(&f));
    finish_failure(msg, f, now_ms, policy, fx);
}

fn task_error(msg: &Message, f: &Failure) -> TaskError {
    TaskError {
        id: msg.id.clone(),
        task: msg.task.clone(),
        attempt: msg.attempt,
        kind: f.kind,
        message: f.message.clone(),
    }
}

fn store_failure(msg: &Message, f: Failure, policy: Policy, fx: &mut Effects) -> StoredResult {
    let stored = StoredResult::Err(task_error(msg, &f));
    if !policy.no_results {
        fx.batch.results.push(ResultPut {
            id: msg.id.clone(),
            value: stored.encode(),
            ttl: policy.result_ttl,
        });
    }
    stored
}

/// A task's final failure: stored as its result, and counted in its chord.
fn finish_failure(msg: &Message, f: Failure, now_ms: u64, policy: Policy, fx: &mut Effects) {
    let stored = store_failure(msg, f, policy, fx);
    count_chord_member(msg, &stored, now_ms, fx);
    release_unique(msg, fx);
}

/// Add a message to a batch: to the schedule if its eta is after `now_ms`, else the ready queue.
pub fn push_message(batch: &mut Batch, m: &Message, now_ms: u64) -> crate::Result<()> {
    let ready = Ready {
        id: m.id.clone(),
        queue: m.queue().to_string(),
        priority: m.priority(),
        payload: m.encode()?,
    };
    match m.eta_ms {
        Some(eta) if eta > now_ms => batch.schedule.push(Scheduled { eta_ms: eta, ready }),
        _ => batch.enqueue.push(ready),
    }
    Ok(())
}

/// A follow-up the outcome writes (retry, next stage, handler); one that cannot be encoded is
/// told as an error event instead.
fn push_follow_up(m: &Message, now_ms: u64, fx: &mut Effects) {
    if let Err(e) = push_message(&mut fx.batch, m, now_ms) {
        fx.events
            .push(Event::for_message(EventKind::Error, m).with_error(e.to_string()));
    }
}
