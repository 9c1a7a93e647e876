//! Cases of fencing: an outcome (a batch with a lease) is written only while its lease is held,
//! all of it or nothing, so a consumer that lost its lease writes nothing and a batch sent
//! again after a lost reply duplicates nothing.

use super::chords::{callback, member, CALLBACKS};
use super::*;

/// Everything an outcome can write, fenced by `lease`: a retry, a scheduled stage, a result, a
/// dead letter and the count of a one-member chord (whose callback it would make ready).
fn outcome(lease: &Lease, tag: &str) -> Batch {
    let (_, cb) = callback();
    Batch {
        lease: Some(lease.clone()),
        claim: None,
        release: Vec::new(),
        enqueue: vec![ready(&format!("{tag}-retry"), "default", 0)],
        schedule: vec![Scheduled {
            eta_ms: now_ms() + 600_000,
            ready: ready(&format!("{tag}-later"), "default", 0),
        }],
        results: vec![ResultPut {
            id: format!("{tag}-result"),
            value: b"r".to_vec(),
            ttl: None,
        }],
        dead: vec![DeadPut {
            id: format!("{tag}-dead"),
            queue: "default".into(),
            payload: b"d".to_vec(),
            error: "e".into(),
        }],
        chords: vec![member(&cb, &format!("{tag}-chord"), 0, 1, b"item")],
    }
}

/// Ready messages by name, leased ones included, across the default and callbacks queues
/// (taken off them).
fn drain_names(s: &dyn Storage) -> Vec<String> {
    let ds = s
        .dequeue(&request("drain", &["default", CALLBACKS], 100, LONG_LEASE))
        .unwrap();
    ack(s, ds.iter().map(|d| d.lease.clone()).collect());
    let mut out: Vec<String> = ds
        .iter()
        .map(|d| match d.queue.as_str() {
            CALLBACKS => "callback".to_string(),
            _ => String::from_utf8(d.payload.clone()).unwrap(),
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_stale_lease_writes_nothing_of_its_outcome() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(&*a, vec![ready("t", "default", 0)]);
    let first = one(&*a, "a", SHORT_LEASE);
    sleep_past(SHORT_LEASE);
    let second = one(&*b, "b", LONG_LEASE);
    assert_eq!(second.deliveries, 2, "taken over");

    // The first consumer wakes up and writes its outcome: fenced off, nothing written.
    assert!(!a.apply(&outcome(&first.lease, "stale")).unwrap());
    let c = a.counts().unwrap();
    assert_eq!(
        (c.ready, c.in_flight, c.scheduled, c.results, c.dead),
        (0, 1, 0, 0, 0),
        "no retry, no next stage, no result, no dead letter, no chord callback"
    );
    assert!(a.result("stale-result", false).unwrap().is_none());

    // The one who holds the lease writes the outcome, once.
    assert!(b.apply(&outcome(&second.lease, "live")).unwrap());
    let c = b.counts().unwrap();
    assert_eq!(
        (c.ready, c.in_flight, c.scheduled, c.results, c.dead),
        (2, 0, 1, 1, 1),
        "the retry and the chord callback are ready"
    );
    assert_eq!(drain_names(&*b), ["callback", "live-retry"]);
}

#[test]
fn a_batch_sent_again_duplicates_nothing() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![ready("t", "default", 0), ready("u", "default", 0)],
    );
    let ds = s
        .dequeue(&request("c", &["default"], 2, LONG_LEASE))
        .unwrap();
    let batch = outcome(&ds[0].lease, "once");
    assert!(s.apply(&batch).unwrap());
    // Sent again (as after a lost reply), alone and with others: reported written, so its
    // events are told once, and nothing is written again.
    assert!(s.apply(&batch).unwrap(), "already written: applied");
    let other = outcome(&ds[1].lease, "other");
    assert_eq!(
        s.apply_all(&[batch.clone(), other.clone(), other]).unwrap(),
        [true, true, true],
        "twice in one call: written once, reported as written for both"
    );
    let c = s.counts().unwrap();
    assert_eq!(
        (c.in_flight, c.scheduled, c.results, c.dead),
        (0, 2, 2, 2),
        "each outcome written once"
    );
    assert_eq!(
        drain_names(&*s),
        ["callback", "callback", "once-retry", "other-retry"]
    );
}

#[test]
fn one_call_writes_live_outcomes_and_producer_writes_and_skips_stale_ones() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("t", "default", 0)]);
    let live = one(&*s, "c", LONG_LEASE);
    let gone = Lease(format!("{}x", live.lease.0));
    let produced = Batch {
        enqueue: vec![ready("produced", "default", 0)],
        ..Batch::default()
    };
    let written = s
        .apply_all(&[
            outcome(&gone, "gone"),
            produced.clone(),
            outcome(&live.lease, "live"),
            Batch::ack(Lease("not a lease".into())),
        ])
        .unwrap();
    assert_eq!(written, [false, true, true, false]);
    assert!(s.result("live-result", false).unwrap().is_some());
    assert!(s.result("gone-result", false).unwrap().is_none());
    // A producer's write has no lease: sent again, it is written again.
    assert!(s.apply(&produced).unwrap());
    assert_eq!(
        drain_names(&*s),
        ["callback", "live-retry", "produced", "produced"]
    );
}

/// A batch that takes a claim (a periodic run).
fn claimed(key: &str, id: &str, ttl: Duration) -> Batch {
    Batch {
        claim: Some(Claim {
            key: key.into(),
            ttl,
        }),
        enqueue: vec![ready(id, "default", 0)],
        ..Batch::default()
    }
}

#[test]
fn a_claimed_batch_is_written_once_with_its_claim_and_never_without_it() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    let short = Duration::from_millis(200);
    // Two consumers, and two runs in one call: each claim is written once, with its enqueue.
    let w = a
        .apply_all(&[
            claimed("run:1", "first", short),
            claimed("run:2", "other", LONG_LEASE),
        ])
        .unwrap();
    assert_eq!(w, [true, true]);
    let w = b
        .apply_all(&[
            claimed("run:1", "again", short),
            claimed("run:3", "third", LONG_LEASE),
        ])
        .unwrap();
    assert_eq!(
        w,
        [false, true],
        "a taken claim fences its batch, not the others"
    );
    assert_eq!(a.get(Ns::Claims, "run:1").unwrap(), Some(b"1".to_vec()));
    let got = names(
        &a.dequeue(&request("c", &["default"], 10, LONG_LEASE))
            .unwrap(),
    );
    assert_eq!(got, ["first", "other", "third"]);

    // A claim held blocks even a batch with a lease, which stays unacknowledged.
    enqueue(&*a, vec![ready("leased", "default", 0)]);
    let d = one(&*a, "c", LONG_LEASE);
    let fenced = Batch {
        lease: Some(d.lease.clone()),
        ..claimed("run:2", "x", LONG_LEASE)
    };
    assert!(!a.apply(&fenced).unwrap());
    assert_eq!(a.counts().unwrap().in_flight, 4, "nothing acknowledged");

    // An expired claim is free again (it lived only its TTL).
    sleep_past(short);
    assert!(b.apply(&claimed("run:1", "later", short)).unwrap());
}
