//! The lifecycle's decisions, checked as plain functions.

use super::*;
use crate::message::ChordMember;
use crate::message::MessageOptions;
use crate::storage::ChordCallback;

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
        now_ms: NOW,
    }
}

/// Admit with a fixed answer to "is it revoked?", counting how often it was asked.
fn admit_as(
    lease: Option<&Lease>,
    msg: Message,
    at: Admission,
    revoked: bool,
    policy: Policy,
    fx: &mut Effects,
) -> (Option<Message>, u32) {
    let mut asked = 0;
    let admitted = admit(
        lease,
        msg,
        at,
        |_| {
            asked += 1;
            Ok(revoked)
        },
        policy,
        fx,
    )
    .unwrap();
    (admitted, asked)
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
    assert_eq!(fx.batch.lease, Some(lease()));
    assert_eq!(fx.batch.dead.len(), 1);
    assert_eq!(fx.batch.dead[0].payload, b"\x01garbage");
    assert_eq!(fx.batch.dead[0].queue, "q");
    assert_eq!(kinds(&fx), vec![EventKind::DeadLettered]);
}

#[test]
fn a_known_due_message_is_admitted_and_nothing_is_written() {
    let mut fx = Effects::default();
    let m = msg("t");
    let (admitted, asked) = admit_as(
        Some(&lease()),
        m.clone(),
        run_now(),
        false,
        Policy::default(),
        &mut fx,
    );
    assert_eq!((admitted, asked), (Some(m), 1));
    assert!(fx.batch.is_empty() && fx.events.is_empty());
}

#[test]
fn an_unknown_task_is_dead_lettered_and_its_failure_stored() {
    let mut fx = Effects::default();
    let at = Admission {
        known: false,
        ..run_now()
    };
    let (admitted, asked) = admit_as(
        Some(&lease()),
        msg("nope"),
        at,
        true,
        Policy::default(),
        &mut fx,
    );
    skipped_without_asking(admitted, asked);
    assert_eq!(fx.batch.lease, Some(lease()));
    assert_eq!(fx.batch.dead.len(), 1);
    assert!(fx.batch.dead[0].error.contains("nope"));
    failed_with(&fx, FailureKind::UnknownTask);
    assert_eq!(kinds(&fx), vec![EventKind::DeadLettered]);
}

/// Dealt with before the revocation was asked for: a revoke-once entry is not used up by it.
fn skipped_without_asking(admitted: Option<Message>, asked: u32) {
    assert_eq!((admitted, asked), (None, 0));
}

#[test]
fn a_message_made_ready_early_goes_back_to_the_schedule() {
    let mut fx = Effects::default();
    let mut m = msg("t");
    m.eta_ms = Some(NOW + 5_000);
    let (admitted, asked) = admit_as(
        Some(&lease()),
        m,
        run_now(),
        true,
        Policy::default(),
        &mut fx,
    );
    skipped_without_asking(admitted, asked);
    assert_eq!(fx.batch.lease, Some(lease()));
    assert_eq!(fx.batch.schedule.len(), 1);
    assert_eq!(fx.batch.schedule[0].eta_ms, NOW + 5_000);
    assert!(fx.batch.results.is_empty());
}

#[test]
fn revoked_and_expired_messages_are_skipped_with_their_failure_stored() {
    let policy = Policy {
        result_ttl: Some(Duration::from_secs(9)),
        ..Policy::default()
    };
    let mut fx = Effects::default();
    let (admitted, _) = admit_as(Some(&lease()), msg("t"), run_now(), true, policy, &mut fx);
    assert!(admitted.is_none());
    failed_with(&fx, FailureKind::Revoked);
    assert_eq!(fx.batch.results[0].ttl, Some(Duration::from_secs(9)));
    assert_eq!(kinds(&fx), vec![EventKind::Revoked]);

    let mut fx = Effects::default();
    let mut m = msg("t");
    m.options.expires_at_ms = Some(NOW);
    let (admitted, _) = admit_as(Some(&lease()), m, run_now(), false, policy, &mut fx);
    assert!(admitted.is_none());
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
    assert_eq!(fx.batch.lease, Some(lease()));
    assert!(matches!(stored(&fx, 0), StoredResult::Ok { value, .. } if value == output(5).value));
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
    assert_eq!(fx.batch.lease, Some(lease()));
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

/// What a storage does with a complete chord (`None`: a member whose outcome is gone).
fn assemble(cb: &ChordCallback, items: &[Option<Vec<u8>>]) -> Vec<u8> {
    cb.ready(items.iter().map(|i| i.as_deref())).payload
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
        items.push(Some(count.outcome.clone()));
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
            let missing = assemble(&count.callback, &[items[0].clone(), None, items[2].clone()]);
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
    admit_as(None, m, run_now(), true, Policy::default(), &mut fx);
    assert_eq!(
        fx.batch.chords.len(),
        1,
        "a revoked member counts as a failed one"
    );
}

#[test]
fn a_huge_retry_delay_saturates_instead_of_overflowing() {
    let mut m = msg("t");
    m.options.retries = 2;
    m.options.retry_delay_ms = u64::MAX - 1;
    m.options.retry_backoff = 1e30;
    let mut fx = Effects::default();
    let f = Failure::new(FailureKind::Error, "boom");
    complete(Some(&lease()), &m, Err(f), NOW, Policy::default(), &mut fx);
    let later = &fx.batch.schedule[0];
    assert_eq!(later.eta_ms, u64::MAX);
    let next = Message::decode(&later.ready.payload).unwrap();
    assert_eq!(
        next.options.retry_delay_ms,
        u64::MAX - 1,
        "a delay above the cap is kept, not grown"
    );

    let mut fx = Effects::default();
    let mut f = Failure::new(FailureKind::Error, "later");
    f.retry_delay_ms = Some(u64::MAX);
    complete(None, &msg("t"), Err(f), NOW, Policy::default(), &mut fx);
    assert_eq!(fx.batch.schedule[0].eta_ms, u64::MAX);
}

#[test]
fn a_revocation_lookup_that_fails_leaves_the_delivery_alone() {
    let mut fx = Effects::default();
    let failed = admit(
        Some(&lease()),
        msg("t"),
        run_now(),
        |_| Err(crate::Error::Config("storage down".into())),
        Policy::default(),
        &mut fx,
    );
    assert!(failed.is_err());
    assert!(fx.batch.is_empty() && fx.events.is_empty());
}

#[test]
fn retry_backoff_stops_growing_at_one_hour() {
    let mut m = msg("t");
    m.options.retries = 10;
    m.options.retry_delay_ms = 1_000;
    m.options.retry_backoff = 10.0;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let mut fx = Effects::default();
        let f = Failure::new(FailureKind::Error, "boom");
        complete(Some(&lease()), &m, Err(f), NOW, Policy::default(), &mut fx);
        let s = &fx.batch.schedule[0];
        delays.push(s.eta_ms - NOW);
        m = Message::decode(&s.ready.payload).unwrap();
    }
    assert_eq!(
        delays,
        [1_000, 10_000, 100_000, 1_000_000, 3_600_000, 3_600_000]
    );
    assert_eq!(MAX_RETRY_BACKOFF_MS, 3_600_000);
}

/// The delay before each retry of a task failing `n` times with `delay` ms grown by `backoff`,
/// under `jitter` with the random values `randoms` (one per retry).
fn retry_waits(delay: u64, backoff: f32, jitter: RetryJitter, randoms: &[f64]) -> Vec<u64> {
    let mut m = msg("t");
    m.options.retries = randoms.len() as u32;
    m.options.retry_delay_ms = delay;
    m.options.retry_backoff = backoff;
    let mut waits = Vec::new();
    for &random in randoms {
        let mut fx = Effects::default();
        let policy = Policy {
            retry_jitter: jitter,
            random,
            ..Policy::default()
        };
        let f = Failure::new(FailureKind::Error, "boom");
        complete(Some(&lease()), &m, Err(f), NOW, policy, &mut fx);
        let (wait, payload) = match (fx.batch.schedule.first(), fx.batch.enqueue.first()) {
            (Some(s), _) => (s.eta_ms - NOW, &s.ready.payload),
            (None, Some(r)) => (0, &r.payload),
            _ => panic!("no retry"),
        };
        waits.push(wait);
        m = Message::decode(payload).unwrap();
    }
    waits
}

#[test]
fn retry_jitter_is_deterministic_given_the_random_value() {
    let r = [0.0, 0.5, 0.999_999, 0.25];
    // No jitter: the grown delays, whatever the random value.
    assert_eq!(
        retry_waits(1_000, 2.0, RetryJitter::None, &r),
        [1_000, 2_000, 4_000, 8_000]
    );
    // Full: random × delay; the delay itself grows as without jitter.
    assert_eq!(
        retry_waits(1_000, 2.0, RetryJitter::Full, &r),
        [0, 1_000, 3_999, 2_000]
    );
    // Equal: half the delay plus random × the other half.
    assert_eq!(
        retry_waits(1_000, 2.0, RetryJitter::Equal, &r),
        [500, 1_500, 3_999, 5_000]
    );
    // The same random values give the same delays.
    assert_eq!(
        retry_waits(1_000, 2.0, RetryJitter::Full, &r),
        retry_waits(1_000, 2.0, RetryJitter::Full, &r)
    );
}

#[test]
fn retry_jitter_stays_within_its_bounds_and_never_above_the_cap() {
    for jitter in [RetryJitter::None, RetryJitter::Full, RetryJitter::Equal] {
        for random in [
            0.0,
            1e-9,
            0.3,
            0.5,
            0.7,
            0.999_999_999,
            1.0,
            7.0,
            -1.0,
            f64::NAN,
        ] {
            for delay in [0, 1, 2, 3, 999, 1_000, MAX_RETRY_BACKOFF_MS, u64::MAX] {
                let wait = jitter.apply(delay, random);
                let least = match jitter {
                    RetryJitter::None => delay,
                    RetryJitter::Full => 0,
                    RetryJitter::Equal => delay - delay / 2,
                };
                assert!(
                    (least..=delay).contains(&wait),
                    "{jitter:?} {delay} {random}: {wait}"
                );
            }
        }
    }
    // Grown up to the cap, a jittered wait never exceeds it.
    let waits = retry_waits(1_000, 10.0, RetryJitter::Equal, &[0.999_999; 8]);
    assert!(waits.iter().all(|w| *w < MAX_RETRY_BACKOFF_MS), "{waits:?}");
    assert!(
        waits[5..].iter().all(|w| *w >= MAX_RETRY_BACKOFF_MS / 2),
        "{waits:?}"
    );
    let waits = retry_waits(1_000, 10.0, RetryJitter::Full, &[0.5; 8]);
    assert_eq!(waits[4..], [MAX_RETRY_BACKOFF_MS / 2; 4]);
}

#[test]
fn no_results_stores_neither_values_nor_errors() {
    let policy = Policy {
        no_results: true,
        ..Policy::default()
    };
    let mut m = msg("t");
    m.options.store_result = Some(true);
    let mut fx = Effects::default();
    complete(Some(&lease()), &m, Ok(output(7)), NOW, policy, &mut fx);
    assert!(fx.batch.results.is_empty(), "no value stored");
    let mut fx = Effects::default();
    let f = Failure::new(FailureKind::Error, "boom");
    complete(Some(&lease()), &msg("t"), Err(f), NOW, policy, &mut fx);
    assert!(fx.batch.results.is_empty(), "no error stored");
    assert!(fx.batch.lease.is_some(), "still acknowledged");
}
