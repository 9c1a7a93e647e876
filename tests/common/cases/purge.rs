//! Cases of the purge: expired entries (results, key-value entries, expiring counters, chord
//! bookkeeping) are deleted, in bounded steps, and live ones stay; answers do not change.

use super::*;

const SHORT: Duration = Duration::from_millis(150);
const LONG: Duration = Duration::from_secs(600);

#[test]
fn purge_deletes_expired_entries_and_keeps_live_ones() {
    let s = crate::factory();
    let s = s();
    put_result(&*s, "gone-1", b"x", Some(SHORT));
    put_result(&*s, "gone-2", b"x", Some(SHORT));
    put_result(&*s, "kept-ttl", b"k", Some(LONG));
    put_result(&*s, "kept", b"k", None);
    for k in ["c1", "c2", "c3"] {
        s.put(Ns::Claims, k, b"1", Some(SHORT)).unwrap();
    }
    s.put(Ns::Claims, "claim-kept", b"1", Some(LONG)).unwrap();
    s.put(Ns::Revoked, "revoked-kept", b"1", None).unwrap();
    assert_eq!(s.incr_expiring("window", 5, SHORT).unwrap(), 5);
    let (_, cb) = super::chords::callback();
    s.apply(&Batch {
        chords: vec![ChordCount {
            ttl: SHORT,
            ..super::chords::member(&cb, "short-chord", 0, 2, b"a")
        }],
        ..Batch::default()
    })
    .unwrap();
    let before = s.counts().unwrap();
    assert_eq!(before.results, 4);
    sleep_past(SHORT);
    assert_eq!(
        s.counts().unwrap().results,
        2,
        "expired results are not counted"
    );

    // Bounded: one entry per call when asked for one.
    assert_eq!(s.purge_expired(now_ms(), 1).unwrap(), 1);
    let rest = s.purge_expired(now_ms(), 10_000).unwrap();
    assert!(rest >= 1, "more expired entries than one");
    assert_eq!(
        s.purge_expired(now_ms(), 10_000).unwrap(),
        0,
        "nothing left"
    );

    // Live entries are untouched, expired ones read as absent, and the counts are the same.
    assert_eq!(s.counts().unwrap().results, 2);
    assert_eq!(s.result("kept", false).unwrap(), Some(b"k".to_vec()));
    assert_eq!(s.result("kept-ttl", false).unwrap(), Some(b"k".to_vec()));
    assert_eq!(s.result("gone-1", false).unwrap(), None);
    assert_eq!(
        s.get(Ns::Claims, "claim-kept").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(s.get(Ns::Claims, "c1").unwrap(), None);
    let claims: Vec<String> = s
        .list(Ns::Claims)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(claims, ["claim-kept"]);
    assert_eq!(s.list(Ns::Revoked).unwrap().len(), 1);

    // What expired can be written afresh.
    assert!(s.put_if_empty(Ns::Claims, "c1", b"2", Some(LONG)).unwrap());
    assert_eq!(
        s.incr_expiring("window", 1, LONG).unwrap(),
        1,
        "a new window"
    );
    s.apply(&Batch {
        chords: vec![super::chords::member(&cb, "short-chord", 0, 2, b"a")],
        ..Batch::default()
    })
    .unwrap();
    s.apply(&Batch {
        chords: vec![super::chords::member(&cb, "short-chord", 1, 2, b"b")],
        ..Batch::default()
    })
    .unwrap();
    let fired = s
        .dequeue(&request("c", &[super::chords::CALLBACKS], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(
        fired.len(),
        1,
        "the chord counted from zero again and fired once"
    );
}

#[test]
fn purge_with_nothing_expired_deletes_nothing() {
    let s = crate::factory();
    let s = s();
    assert_eq!(s.purge_expired(now_ms(), 100).unwrap(), 0);
    put_result(&*s, "r", b"v", Some(LONG));
    s.put(Ns::Locks, "l", b"v", Some(LONG)).unwrap();
    assert_eq!(s.purge_expired(now_ms(), 100).unwrap(), 0);
    assert_eq!(s.purge_expired(now_ms(), 0).unwrap(), 0);
    assert_eq!(s.result("r", false).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.get(Ns::Locks, "l").unwrap(), Some(b"v".to_vec()));
}
