//! A task's fate, decided by plain functions: given a fetched message or an attempt's outcome,
//! what is written (acks, results, retries, the next pipeline stage, error handlers, chord
//! counts, dead letters) and which events are told.
//!
//! Nothing here does I/O: every function appends to an [`Effects`] that the caller writes in one
//! atomic [`Batch`] and then emits. The supervisor, immediate mode and [`crate::Huey::execute`]
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
//! ```

use std::time::Duration;

use crate::events::{Event, EventKind};
use crate::failure::{Failure, FailureKind, TaskError};
use crate::message::{ChordMember, Message, Output, StoredResult};
use crate::storage::{
    Batch, ChordCallback, ChordCount, DeadPut, Lease, Ready, ResultPut, Scheduled,
};

/// How long chord bookkeeping (counts, member outcomes, marks) is kept at most.
pub(crate) const CHORD_TTL: Duration = Duration::from_secs(7 * 86_400);

/// What decisions write (one atomic batch) and tell (events, emitted once it is written).
#[derive(Debug, Default)]
pub struct Effects {
    pub batch: Batch,
    pub events: Vec<Event>,
}

impl Effects {
    /// Whether there is nothing to write or tell.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.events.is_empty()
    }
}

/// The app-wide settings decisions depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Keep stored results (and stored errors) this long (`None`: until read).
    pub result_ttl: Option<Duration>,
}

/// What is known about a decoded message when it is fetched, looked up by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The app registers a task of the message's name.
    pub known: bool,
    /// A revocation applies to it (a revoke-once entry only for the consumer that took it).
    pub revoked: bool,
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
            fx.batch.ack.extend(lease.cloned());
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
pub fn admit(
    lease: Option<&Lease>,
    msg: Message,
    at: Admission,
    policy: Policy,
    fx: &mut Effects,
) -> Option<Message> {
    let skip = |fx: &mut Effects| fx.batch.ack.extend(lease.cloned());
    if !at.known {
        skip(fx);
        let err = format!("no task named {:?} is registered in this app", msg.task);
        match msg.encode() {
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
        return None;
    }
    if msg.eta_ms.is_some_and(|eta| eta > at.now_ms) {
        // Made ready early (e.g. a message enqueued straight to the queue): back to the schedule.
        skip(fx);
        push_follow_up(&msg, at.now_ms, fx);
        fx.events
            .push(Event::for_message(EventKind::Scheduled, &msg));
        return None;
    }
    let ended = if at.revoked {
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
            None
        }
        None => Some(msg),
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
    fx.batch.ack.extend(lease.cloned());
    match outcome {
        Ok(out) => succeed(msg, out, now_ms, policy, fx),
        Err(f) if f.retry_delay_ms.is_some() && f.kind != FailureKind::Canceled => {
            // Rate limited, or asked for by the task: again later, no retry used up.
            let mut next = msg.clone();
            next.attempt += 1;
            let delay = f.retry_delay_ms.unwrap_or(0);
            next.eta_ms = (delay > 0).then(|| now_ms + delay);
            let kind = if f.kind == FailureKind::RateLimited {
                EventKind::RateLimited
            } else {
                EventKind::Retrying
            };
            retry(msg, next, f, kind, now_ms, policy, fx);
        }
        Err(f) if f.kind.is_retryable() && msg.options.retries > 0 => {
            if f.kind == FailureKind::Locked {
                fx.events
                    .push(Event::for_message(EventKind::Locked, msg).with_failure(&f));
            }
            let mut next = msg.clone();
            next.attempt += 1;
            next.options.retries -= 1;
            let delay = msg.options.retry_delay_ms;
            next.options.retry_delay_ms =
                (delay as f64 * f64::from(msg.options.retry_backoff.max(0.0))) as u64;
            next.eta_ms = (delay > 0).then(|| now_ms + delay);
            retry(msg, next, f, EventKind::Retrying, now_ms, policy, fx);
        }
        Err(f) => fail(msg, f, now_ms, policy, fx),
    }
}

fn succeed(msg: &Message, out: Output, now_ms: u64, policy: Policy, fx: &mut Effects) {
    if let Some(next) = &msg.on_complete {
        let mut next = (**next).clone();
        next.args = [out.value.as_slice(), &next.args].concat();
        next.enqueued_ms = now_ms;
        push_follow_up(&next, now_ms, fx);
    }
    let store = msg.options.store_result.unwrap_or(!out.is_empty);
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
    count_chord_member(msg, &stored, now_ms, fx);
    fx.events.push(Event::for_message(EventKind::Complete, msg));
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
        if let Ok(payload) = msg.encode() {
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
    fx.batch.results.push(ResultPut {
        id: msg.id.clone(),
        value: stored.encode(),
        ttl: policy.result_ttl,
    });
    stored
}

/// A task's final failure: stored as its result, and counted in its chord.
fn finish_failure(msg: &Message, f: Failure, now_ms: u64, policy: Policy, fx: &mut Effects) {
    let stored = store_failure(msg, f, policy, fx);
    count_chord_member(msg, &stored, now_ms, fx);
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

// ----- chords ------------------------------------------------------------------------------

/// Count a chord member's final outcome in the same batch as the outcome itself: the storage
/// enqueues the callback when the last member is counted (see [`ChordCount`]).
fn count_chord_member(msg: &Message, outcome: &StoredResult, now_ms: u64, fx: &mut Effects) {
    let Some(c) = &msg.chord else { return };
    match chord_count(c, outcome, now_ms) {
        Ok(count) => fx.batch.chords.push(count),
        Err(e) => fx.events.push(
            Event::for_message(EventKind::Error, msg).with_error(format!("chord {}: {e}", c.chord)),
        ),
    }
}

/// The callback receives `Vec<Result<R, TaskError>>` in postcard: the length, then per member
/// its variant (0 `Ok`, 1 `Err`) and value. `R` is already encoded, so the storage splices the
/// members' items together.
fn chord_count(c: &ChordMember, outcome: &StoredResult, now_ms: u64) -> crate::Result<ChordCount> {
    let item = match outcome {
        StoredResult::Ok { value, .. } => [&[0u8][..], value].concat(),
        StoredResult::Err(e) => [&[1u8][..], &encode("task error", e)?].concat(),
    };
    let missing = TaskError {
        id: String::new(),
        task: String::new(),
        attempt: 0,
        kind: FailureKind::Expired,
        message: "this chord member left no outcome".into(),
    };
    let mut cb = c.callback.clone();
    cb.enqueued_ms = now_ms;
    let args_tail = std::mem::take(&mut cb.args);
    let (payload_head, payload_tail) = split_around_args(&cb)?;
    Ok(ChordCount {
        chord: c.chord.clone(),
        index: c.index,
        size: c.size,
        outcome: item,
        ttl: CHORD_TTL,
        callback: ChordCallback {
            id: cb.id.clone(),
            queue: cb.queue().to_string(),
            priority: cb.priority(),
            payload_head,
            payload_tail,
            args_head: encode("chord size", &(c.size as usize))?,
            args_tail,
            missing: [&[1u8][..], &encode("task error", &missing)?].concat(),
        },
    })
}

/// The encoding of a message with empty arguments, split around its arguments' length byte:
/// the fields before `args` are the version byte, the id and the task name.
fn split_around_args(m: &Message) -> crate::Result<(Vec<u8>, Vec<u8>)> {
    debug_assert!(m.args.is_empty());
    let bytes = m.encode()?;
    let at = 1 + encode("task id", &m.id)?.len() + encode("task name", &m.task)?.len();
    match bytes.get(at) {
        Some(0) => Ok((bytes[..at].to_vec(), bytes[at + 1..].to_vec())),
        _ => Err(crate::Error::Encode {
            what: "chord callback",
            message: "its arguments are not where the message layout puts them".into(),
        }),
    }
}

fn encode<T: serde::Serialize + ?Sized>(what: &'static str, v: &T) -> crate::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| crate::Error::Encode {
        what,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageOptions;

    const NOW: u64 = 1_700_000_000_000;

    fn msg(task: &str) -> Message {
        let mut m = Message::new(
            task,
            postcard::to_allocvec(&7u32).unwrap(),
            MessageOptions::default(),
        );
        m.enqueued_ms = NOW;
        m
    }

    fn lease() -> Lease {
        Lease("l1".into())
    }

    fn run_now() -> Admission {
        Admission {
            known: true,
            revoked: false,
            now_ms: NOW,
        }
    }

    fn kinds(fx: &Effects) -> Vec<EventKind> {
        fx.events.iter().map(|e| e.kind).collect()
    }

    fn stored(fx: &Effects, i: usize) -> StoredResult {
        StoredResult::decode(&fx.batch.results[i].value).unwrap()
    }

    fn failed_with(fx: &Effects, kind: FailureKind) {
        match stored(fx, 0) {
            StoredResult::Err(e) => assert_eq!(e.kind, kind),
            other => panic!("expected a {kind} failure, got {other:?}"),
        }
    }

    fn output(v: u32) -> Output {
        Output {
            value: postcard::to_allocvec(&v).unwrap(),
            is_empty: false,
        }
    }

    #[test]
    fn undecodable_bytes_are_acked_and_dead_lettered() {
        let mut fx = Effects::default();
        assert!(decode(Some(&lease()), "q", b"\x01garbage", &mut fx).is_none());
        assert_eq!(fx.batch.ack, vec![lease()]);
        assert_eq!(fx.batch.dead.len(), 1);
        assert_eq!(fx.batch.dead[0].payload, b"\x01garbage");
        assert_eq!(fx.batch.dead[0].queue, "q");
        assert_eq!(kinds(&fx), vec![EventKind::DeadLettered]);
    }

    #[test]
    fn a_known_due_message_is_admitted_and_nothing_is_written() {
        let mut fx = Effects::default();
        let m = msg("t");
        assert_eq!(
            admit(
                Some(&lease()),
                m.clone(),
                run_now(),
                Policy::default(),
                &mut fx
            ),
            Some(m)
        );
        assert!(fx.is_empty());
    }

    #[test]
    fn an_unknown_task_is_dead_lettered_and_its_failure_stored() {
        let mut fx = Effects::default();
        let at = Admission {
            known: false,
            ..run_now()
        };
        assert!(admit(Some(&lease()), msg("nope"), at, Policy::default(), &mut fx).is_none());
        assert_eq!(fx.batch.ack, vec![lease()]);
        assert_eq!(fx.batch.dead.len(), 1);
        assert!(fx.batch.dead[0].error.contains("nope"));
        failed_with(&fx, FailureKind::UnknownTask);
        assert_eq!(kinds(&fx), vec![EventKind::DeadLettered]);
    }

    #[test]
    fn a_message_made_ready_early_goes_back_to_the_schedule() {
        let mut fx = Effects::default();
        let mut m = msg("t");
        m.eta_ms = Some(NOW + 5_000);
        assert!(admit(Some(&lease()), m, run_now(), Policy::default(), &mut fx).is_none());
        assert_eq!(fx.batch.ack, vec![lease()]);
        assert_eq!(fx.batch.schedule.len(), 1);
        assert_eq!(fx.batch.schedule[0].eta_ms, NOW + 5_000);
        assert!(fx.batch.results.is_empty());
    }

    #[test]
    fn revoked_and_expired_messages_are_skipped_with_their_failure_stored() {
        let policy = Policy {
            result_ttl: Some(Duration::from_secs(9)),
        };
        let mut fx = Effects::default();
        let at = Admission {
            revoked: true,
            ..run_now()
        };
        assert!(admit(Some(&lease()), msg("t"), at, policy, &mut fx).is_none());
        failed_with(&fx, FailureKind::Revoked);
        assert_eq!(fx.batch.results[0].ttl, Some(Duration::from_secs(9)));
        assert_eq!(kinds(&fx), vec![EventKind::Revoked]);

        let mut fx = Effects::default();
        let mut m = msg("t");
        m.options.expires_at_ms = Some(NOW);
        assert!(admit(Some(&lease()), m, run_now(), policy, &mut fx).is_none());
        failed_with(&fx, FailureKind::Expired);
        assert_eq!(kinds(&fx), vec![EventKind::Expired]);
    }

    #[test]
    fn success_stores_the_result_and_acks() {
        let mut fx = Effects::default();
        let m = msg("t");
        complete(
            Some(&lease()),
            &m,
            Ok(output(5)),
            NOW,
            Policy::default(),
            &mut fx,
        );
        assert_eq!(fx.batch.ack, vec![lease()]);
        assert!(
            matches!(stored(&fx, 0), StoredResult::Ok { value, .. } if value == output(5).value)
        );
        assert_eq!(kinds(&fx), vec![EventKind::Complete]);
    }

    #[test]
    fn an_empty_result_is_not_stored_unless_asked() {
        let empty = Output {
            value: Vec::new(),
            is_empty: true,
        };
        let mut fx = Effects::default();
        complete(
            None,
            &msg("t"),
            Ok(empty.clone()),
            NOW,
            Policy::default(),
            &mut fx,
        );
        assert!(fx.batch.results.is_empty());
        let mut m = msg("t");
        m.options.store_result = Some(true);
        let mut fx = Effects::default();
        complete(None, &m, Ok(empty), NOW, Policy::default(), &mut fx);
        assert_eq!(fx.batch.results.len(), 1);
    }

    #[test]
    fn the_next_pipeline_stage_gets_the_result_before_its_own_arguments() {
        let mut m = msg("first");
        let mut next = msg("second");
        next.args = b"xy".to_vec();
        m.on_complete = Some(Box::new(next.clone()));
        let mut fx = Effects::default();
        complete(
            None,
            &m,
            Ok(output(300)),
            NOW + 1,
            Policy::default(),
            &mut fx,
        );
        let queued = Message::decode(&fx.batch.enqueue[0].payload).unwrap();
        assert_eq!(queued.id, next.id);
        assert_eq!(queued.args, [output(300).value.as_slice(), b"xy"].concat());
        assert_eq!(queued.enqueued_ms, NOW + 1);
    }

    #[test]
    fn a_failure_with_retries_left_schedules_the_next_attempt_with_backoff() {
        let mut m = msg("t");
        m.options.retries = 2;
        m.options.retry_delay_ms = 1_000;
        m.options.retry_backoff = 2.0;
        let mut fx = Effects::default();
        let f = Failure::new(FailureKind::Error, "boom");
        complete(Some(&lease()), &m, Err(f), NOW, Policy::default(), &mut fx);
        assert_eq!(fx.batch.ack, vec![lease()]);
        assert!(
            fx.batch.results.is_empty(),
            "no error stored between retries by default"
        );
        let s = &fx.batch.schedule[0];
        assert_eq!(s.eta_ms, NOW + 1_000);
        let next = Message::decode(&s.ready.payload).unwrap();
        assert_eq!(
            (next.id.as_str(), next.attempt, next.options.retries),
            (m.id.as_str(), 2, 1)
        );
        assert_eq!(next.options.retry_delay_ms, 2_000);
        assert_eq!(kinds(&fx), vec![EventKind::Retrying]);
    }

    #[test]
    fn a_rate_limited_attempt_runs_again_without_using_a_retry() {
        let mut m = msg("t");
        m.options.store_errors_between_retries = true;
        let f = Failure::reschedule(
            FailureKind::RateLimited,
            "slow down",
            Duration::from_secs(3),
        );
        let mut fx = Effects::default();
        complete(None, &m, Err(f), NOW, Policy::default(), &mut fx);
        let next = Message::decode(&fx.batch.schedule[0].ready.payload).unwrap();
        assert_eq!((next.attempt, next.options.retries), (2, 0));
        assert_eq!(fx.batch.schedule[0].eta_ms, NOW + 3_000);
        failed_with(&fx, FailureKind::RateLimited);
        assert_eq!(kinds(&fx), vec![EventKind::RateLimited]);
    }

    #[test]
    fn a_cancel_is_final_even_with_retries_left() {
        let mut m = msg("t");
        m.options.retries = 3;
        let f = Failure::reschedule(FailureKind::Canceled, "no", Duration::from_secs(1));
        let mut fx = Effects::default();
        complete(None, &m, Err(f), NOW, Policy::default(), &mut fx);
        assert!(fx.batch.schedule.is_empty() && fx.batch.enqueue.is_empty());
        failed_with(&fx, FailureKind::Canceled);
    }

    #[test]
    fn a_lost_worker_with_no_retries_left_dead_letters_the_message() {
        let mut m = msg("t");
        m.on_error = Some(Box::new(msg("handler")));
        let mut fx = Effects::default();
        let f = Failure::new(FailureKind::WorkerLost, "killed by signal 9");
        complete(Some(&lease()), &m, Err(f), NOW, Policy::default(), &mut fx);
        assert_eq!(Message::decode(&fx.batch.dead[0].payload).unwrap(), m);
        failed_with(&fx, FailureKind::WorkerLost);
        let handler = Message::decode(&fx.batch.enqueue[0].payload).unwrap();
        let (err, rest): (TaskError, _) = postcard::take_from_bytes(&handler.args).unwrap();
        assert_eq!(
            (err.kind, err.attempt, rest),
            (
                FailureKind::WorkerLost,
                1,
                &postcard::to_allocvec(&7u32).unwrap()[..]
            )
        );
        assert_eq!(
            kinds(&fx),
            vec![
                EventKind::DeadLettered,
                EventKind::from(FailureKind::WorkerLost)
            ]
        );
    }

    /// What a storage does with a complete chord (the spec in [`ChordCallback`]).
    fn assemble(cb: &ChordCallback, items: &[Vec<u8>]) -> Vec<u8> {
        let args = [cb.args_head.clone(), items.concat(), cb.args_tail.clone()].concat();
        let mut len = Vec::new();
        let mut n = args.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                len.push(byte);
                break;
            }
            len.push(byte | 0x80);
        }
        [cb.payload_head.clone(), len, args, cb.payload_tail.clone()].concat()
    }

    fn chord_member(index: u32, size: u32, callback: &Message) -> Message {
        let mut m = msg("member");
        m.chord = Some(Box::new(ChordMember {
            chord: "c1".into(),
            index,
            size,
            callback: callback.clone(),
        }));
        m
    }

    #[test]
    fn chord_members_are_counted_with_their_outcome_and_the_callback_assembles() {
        let mut callback = msg("callback");
        callback.args = vec![0xAB; 200]; // extra arguments, long enough for a 2-byte length
        let mut items = Vec::new();
        for i in 0..3 {
            let mut fx = Effects::default();
            let outcome = if i == 1 {
                Err(Failure::new(FailureKind::Error, "member failed"))
            } else {
                Ok(output(i))
            };
            complete(
                None,
                &chord_member(i, 3, &callback),
                outcome,
                NOW,
                Policy::default(),
                &mut fx,
            );
            assert_eq!(
                fx.batch.chords.len(),
                1,
                "member {i} is counted in its own batch"
            );
            let count = &fx.batch.chords[0];
            assert_eq!(
                (count.chord.as_str(), count.index, count.size),
                ("c1", i, 3)
            );
            items.push(count.outcome.clone());
            if i == 2 {
                let payload = assemble(&count.callback, &items);
                let cb = Message::decode(&payload).unwrap();
                assert_eq!(
                    (cb.id.as_str(), cb.task.as_str()),
                    (callback.id.as_str(), "callback")
                );
                let (outcomes, rest): (Vec<Result<u32, TaskError>>, _) =
                    postcard::take_from_bytes(&cb.args).unwrap();
                assert_eq!(rest, &callback.args[..]);
                assert_eq!(outcomes[0], Ok(0));
                assert_eq!(outcomes[1].as_ref().unwrap_err().message, "member failed");
                assert_eq!(outcomes[2], Ok(2));
                let missing = assemble(
                    &count.callback,
                    &[
                        items[0].clone(),
                        count.callback.missing.clone(),
                        items[2].clone(),
                    ],
                );
                let cb = Message::decode(&missing).unwrap();
                let (outcomes, _): (Vec<Result<u32, TaskError>>, _) =
                    postcard::take_from_bytes(&cb.args).unwrap();
                assert_eq!(outcomes[1].as_ref().unwrap_err().kind, FailureKind::Expired);
            }
        }
    }

    #[test]
    fn a_retried_chord_member_is_counted_only_when_it_ends() {
        let callback = msg("callback");
        let mut m = chord_member(0, 2, &callback);
        m.options.retries = 1;
        let mut fx = Effects::default();
        complete(
            None,
            &m,
            Err(Failure::new(FailureKind::Error, "x")),
            NOW,
            Policy::default(),
            &mut fx,
        );
        assert!(fx.batch.chords.is_empty());
        let mut fx = Effects::default();
        let at = Admission {
            revoked: true,
            ..run_now()
        };
        admit(None, m, at, Policy::default(), &mut fx);
        assert_eq!(
            fx.batch.chords.len(),
            1,
            "a revoked member counts as a failed one"
        );
    }
}
