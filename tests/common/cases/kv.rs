//! Cases of the key-value role: entries, expiry, namespaces, counters.

use super::*;

#[test]
fn kv_put_get_and_take() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    assert_eq!(a.get(Ns::Data, "k").unwrap(), None);
    a.put(Ns::Data, "k", b"1", None).unwrap();
    assert_eq!(b.get(Ns::Data, "k").unwrap(), Some(b"1".to_vec()));
    a.put(Ns::Data, "k", b"2", None).unwrap();
    assert_eq!(b.take(Ns::Data, "k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(a.take(Ns::Data, "k").unwrap(), None);
    assert_eq!(a.get(Ns::Data, "k").unwrap(), None);
}

#[test]
fn kv_entries_with_ttl_expire() {
    let s = crate::factory();
    let s = s();
    s.put(Ns::Claims, "short", b"v", Some(Duration::from_millis(150)))
        .unwrap();
    s.put(Ns::Claims, "short2", b"v", Some(Duration::from_millis(150)))
        .unwrap();
    s.put(Ns::Claims, "long", b"v", Some(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(s.get(Ns::Claims, "short").unwrap(), Some(b"v".to_vec()));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s.get(Ns::Claims, "short").unwrap(), None);
    assert_eq!(s.take(Ns::Claims, "short2").unwrap(), None);
    assert_eq!(s.get(Ns::Claims, "long").unwrap(), Some(b"v".to_vec()));
    // A plain put replaces the TTL too.
    s.put(Ns::Claims, "short", b"w", None).unwrap();
    assert_eq!(s.get(Ns::Claims, "short").unwrap(), Some(b"w".to_vec()));
}

#[test]
fn put_if_empty_is_exclusive_until_ttl_expires() {
    let s = crate::factory();
    let s = s();
    let ttl = Some(Duration::from_millis(200));
    assert!(s.put_if_empty(Ns::Locks, "lock", b"a", ttl).unwrap());
    assert!(!s.put_if_empty(Ns::Locks, "lock", b"b", ttl).unwrap());
    assert_eq!(s.get(Ns::Locks, "lock").unwrap(), Some(b"a".to_vec()));
    sleep_past(Duration::from_millis(200));
    assert!(s.put_if_empty(Ns::Locks, "lock", b"c", None).unwrap());
    assert_eq!(s.get(Ns::Locks, "lock").unwrap(), Some(b"c".to_vec()));
    // Without a TTL it holds until taken.
    assert!(!s.put_if_empty(Ns::Locks, "lock", b"d", None).unwrap());
    assert_eq!(s.take(Ns::Locks, "lock").unwrap(), Some(b"c".to_vec()));
    assert!(s.put_if_empty(Ns::Locks, "lock", b"e", None).unwrap());
}

#[test]
fn put_if_empty_is_exclusive_across_handles() {
    let s = crate::factory();
    let handles: Vec<_> = (0..4).map(|_| s()).collect();
    let threads: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            thread::spawn(move || {
                (0..20)
                    .filter(|k| {
                        h.put_if_empty(Ns::Claims, &format!("k{k}"), &[i as u8], None)
                            .unwrap()
                    })
                    .count()
            })
        })
        .collect();
    let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(won, 20);
}

#[test]
fn namespaces_are_separate() {
    let s = crate::factory();
    let s = s();
    for (i, ns) in [Ns::Locks, Ns::Revoked, Ns::Claims, Ns::Data]
        .into_iter()
        .enumerate()
    {
        s.put(ns, "same", &[i as u8], None).unwrap();
    }
    for (i, ns) in [Ns::Locks, Ns::Revoked, Ns::Claims, Ns::Data]
        .into_iter()
        .enumerate()
    {
        assert_eq!(s.get(ns, "same").unwrap(), Some(vec![i as u8]));
        assert_eq!(s.list(ns).unwrap(), [("same".to_string(), vec![i as u8])]);
    }
    s.take(Ns::Revoked, "same").unwrap();
    assert_eq!(s.get(Ns::Revoked, "same").unwrap(), None);
    assert_eq!(s.get(Ns::Data, "same").unwrap(), Some(vec![3]));
}

#[test]
fn list_returns_sorted_live_keys() {
    let s = crate::factory();
    let s = s();
    assert!(s.list(Ns::Revoked).unwrap().is_empty());
    s.put(Ns::Revoked, "zeta", b"z", None).unwrap();
    s.put(Ns::Revoked, "alpha", b"a", None).unwrap();
    s.put(Ns::Revoked, "gone", b"g", Some(Duration::from_millis(100)))
        .unwrap();
    s.put(Ns::Revoked, "mid", b"m", Some(Duration::from_secs(600)))
        .unwrap();
    s.put(Ns::Data, "other", b"o", None).unwrap();
    thread::sleep(Duration::from_millis(250));
    assert_eq!(
        s.list(Ns::Revoked).unwrap(),
        [
            ("alpha".to_string(), b"a".to_vec()),
            ("mid".to_string(), b"m".to_vec()),
            ("zeta".to_string(), b"z".to_vec()),
        ]
    );
}

#[test]
fn counters_add_atomically() {
    let s = crate::factory();
    let first = s();
    assert_eq!(first.incr("n", 5).unwrap(), 5);
    assert_eq!(first.incr("n", -2).unwrap(), 3);
    assert_eq!(first.incr("other", 0).unwrap(), 0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = s();
            thread::spawn(move || {
                for _ in 0..50 {
                    h.incr("n", 1).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(first.incr("n", 0).unwrap(), 203);
}

#[test]
fn delete_if_deletes_only_the_matching_value() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    assert!(a.put_if_empty(Ns::Locks, "l", b"holder-1", None).unwrap());
    assert!(!b.delete_if(Ns::Locks, "l", b"holder-2").unwrap());
    assert_eq!(a.get(Ns::Locks, "l").unwrap(), Some(b"holder-1".to_vec()));
    assert!(b.delete_if(Ns::Locks, "l", b"holder-1").unwrap());
    assert_eq!(a.get(Ns::Locks, "l").unwrap(), None);
    assert!(!a.delete_if(Ns::Locks, "l", b"holder-1").unwrap());
    assert!(!a.delete_if(Ns::Data, "missing", b"x").unwrap());
}

#[test]
fn expiring_counters_add_atomically_and_start_over_after_their_ttl() {
    let s = crate::factory();
    let first = s();
    let ttl = Duration::from_millis(1500);
    assert_eq!(first.incr_expiring("w", 2, ttl).unwrap(), 2);
    assert_eq!(first.incr_expiring("w", 1, ttl).unwrap(), 3);
    assert_eq!(
        first.incr("w", 0).unwrap(),
        0,
        "separate from plain counters"
    );
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = s();
            thread::spawn(move || {
                for _ in 0..25 {
                    h.incr_expiring("w", 1, ttl).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(first.incr_expiring("w", 0, ttl).unwrap(), 103);
    sleep_past(ttl);
    assert_eq!(first.incr_expiring("w", 1, ttl).unwrap(), 1);
}

#[test]
fn get_many_reads_many_keys_in_order_leaving_out_expired_and_missing_ones() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    assert_eq!(
        a.get_many(Ns::Revoked, &[]).unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    // More keys than one statement or command takes (500 on SQLite, 1000 on Redis).
    const N: usize = 1_300;
    for i in (0..N).step_by(2) {
        a.put(
            Ns::Revoked,
            &format!("id:{i}"),
            format!("v{i}").as_bytes(),
            None,
        )
        .unwrap();
    }
    a.put(Ns::Revoked, "short", b"s", Some(Duration::from_millis(150)))
        .unwrap();
    a.put(Ns::Data, "id:1", b"other namespace", None).unwrap();
    let keys: Vec<String> = (0..N).map(|i| format!("id:{i}")).collect();
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.extend(["short", "id:0", "never"]);
    let got = b.get_many(Ns::Revoked, &asked).unwrap();
    assert_eq!(got.len(), asked.len());
    for (i, v) in got[..N].iter().enumerate() {
        let want = (i % 2 == 0).then(|| format!("v{i}").into_bytes());
        assert_eq!(v, &want, "key id:{i}");
    }
    assert_eq!(got[N], Some(b"s".to_vec()));
    assert_eq!(got[N + 1], Some(b"v0".to_vec()), "a key asked twice");
    assert_eq!(got[N + 2], None, "a missing key");
    sleep_past(Duration::from_millis(150));
    assert_eq!(
        b.get_many(Ns::Revoked, &["short", "id:2"]).unwrap(),
        [None, Some(b"v2".to_vec())],
        "an expired entry reads as absent"
    );
}

#[test]
fn may_hold_any_is_never_false_while_an_entry_lives() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    // Nothing stored: a backend may say so (the consumer then skips its lookups).
    let empty = !a.may_hold_any(Ns::Revoked).unwrap();
    a.put(Ns::Data, "other", b"namespace", None).unwrap();
    assert_eq!(!a.may_hold_any(Ns::Revoked).unwrap(), empty);
    a.put(Ns::Revoked, "id:x", b"r", None).unwrap();
    assert!(b.may_hold_any(Ns::Revoked).unwrap());
    a.put(Ns::Revoked, "short", b"r", Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(b.take(Ns::Revoked, "id:x").unwrap(), Some(b"r".to_vec()));
    assert!(b.may_hold_any(Ns::Revoked).unwrap(), "one entry left");
}

#[test]
fn renew_if_extends_only_the_holders_entry() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    // Long enough that a loaded machine's pauses between renewals stay well inside it.
    let ttl = Duration::from_secs(2);
    assert!(a
        .put_if_empty(Ns::Locks, "permit", b"mine", Some(ttl))
        .unwrap());
    assert!(!b
        .renew_if(Ns::Locks, "permit", b"theirs", Duration::from_secs(60))
        .unwrap());
    // Renewed past its first TTL, it lives on.
    let first_ttl_over = std::time::Instant::now() + ttl + Duration::from_millis(500);
    while std::time::Instant::now() < first_ttl_over {
        thread::sleep(Duration::from_millis(200));
        assert!(a.renew_if(Ns::Locks, "permit", b"mine", ttl).unwrap());
    }
    assert_eq!(b.get(Ns::Locks, "permit").unwrap(), Some(b"mine".to_vec()));
    assert!(!b
        .put_if_empty(Ns::Locks, "permit", b"theirs", Some(ttl))
        .unwrap());
    // Left alone, it expires, and an expired or absent entry is not renewed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.get(Ns::Locks, "permit").unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the entry never expired"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!a
        .renew_if(Ns::Locks, "permit", b"mine", Duration::from_secs(60))
        .unwrap());
    assert_eq!(b.get(Ns::Locks, "permit").unwrap(), None);
    assert!(!a
        .renew_if(Ns::Locks, "nothing", b"mine", Duration::from_secs(60))
        .unwrap());
    // The renewed TTL also governs listings.
    let short = Duration::from_millis(500);
    assert!(a
        .put_if_empty(Ns::Locks, "listed", b"v", Some(short))
        .unwrap());
    assert!(a
        .renew_if(Ns::Locks, "listed", b"v", Duration::from_secs(60))
        .unwrap());
    // Past the first TTL: only the renewal keeps it listed.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(
        b.list(Ns::Locks).unwrap(),
        vec![("listed".to_string(), b"v".to_vec())]
    );
}
