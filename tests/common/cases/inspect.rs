//! Cases of the inspection role: counts, listings, dead letters, flushing.

use super::*;

#[test]
fn counts_reflect_each_part() {
    let s = crate::factory();
    let s = s();
    assert_eq!(s.counts().unwrap(), Default::default());
    enqueue(
        &*s,
        vec![
            ready("a", "default", 0),
            ready("b", "default", 0),
            ready("c", "other", 0),
        ],
    );
    one(&*s, "c", LONG_LEASE);
    schedule(&*s, "s1", now_ms() + 600_000);
    schedule(&*s, "s2", now_ms() + 600_000);
    put_result(&*s, "r", b"v", None);
    bury(&*s, "d1", "e");
    bury(&*s, "d2", "e");
    bury(&*s, "d3", "e");
    let c = s.counts().unwrap();
    assert_eq!(c.ready, 2);
    assert_eq!(c.in_flight, 1);
    assert_eq!(c.scheduled, 2);
    assert_eq!(c.results, 1);
    assert_eq!(c.dead, 3);
}

#[test]
fn expired_lease_counts_as_ready() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    one(&*s, "c", SHORT_LEASE);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (0, 1));
    sleep_past(SHORT_LEASE);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (1, 0));
}

#[test]
fn pending_lists_ready_payloads_in_run_order() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("m1", "default", 0),
            ready("h1", "default", 3),
            ready("m2", "default", 0),
            ready("taken", "default", 9),
        ],
    );
    one(&*s, "c", LONG_LEASE);
    let p = s.pending(10).unwrap();
    assert_eq!(p, [b"h1".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
    assert_eq!(s.pending(2).unwrap().len(), 2);
    assert!(s.pending(0).unwrap().is_empty());
}

#[test]
fn pending_orders_across_queues_by_priority_then_age() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("z-low", "zeta", 0),
            ready("a-low", "alpha", 0),
            ready("z-high", "zeta", 2),
            ready("a-high", "alpha", 2),
        ],
    );
    assert_eq!(
        s.pending(10).unwrap(),
        [
            b"z-high".to_vec(),
            b"a-high".to_vec(),
            b"z-low".to_vec(),
            b"a-low".to_vec()
        ]
    );
}

#[test]
fn scheduled_lists_payloads_by_eta() {
    let s = crate::factory();
    let s = s();
    schedule(&*s, "b", 2_000);
    schedule(&*s, "c", 3_000);
    schedule(&*s, "a", 1_000);
    schedule(&*s, "b2", 2_000);
    assert_eq!(
        s.scheduled(10).unwrap(),
        [
            (1_000, b"a".to_vec()),
            (2_000, b"b".to_vec()),
            (2_000, b"b2".to_vec()),
            (3_000, b"c".to_vec()),
        ]
    );
    assert_eq!(s.scheduled(1).unwrap().len(), 1);
}

#[test]
fn listings_without_a_practical_limit_list_everything() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    schedule(&*s, "s", now_ms() + 600_000);
    bury(&*s, "d", "e");
    assert_eq!(s.pending(usize::MAX).unwrap().len(), 1);
    assert_eq!(s.scheduled(usize::MAX).unwrap().len(), 1);
    assert_eq!(s.dead(usize::MAX).unwrap().len(), 1);
}

#[test]
fn dead_letters_are_listed_oldest_first() {
    let s = crate::factory();
    let s = s();
    let before = now_ms();
    for i in 0..4 {
        bury(&*s, &format!("d{i}"), &format!("error {i}"));
    }
    let dead = s.dead(3).unwrap();
    assert_eq!(dead.len(), 3);
    let ids: Vec<_> = dead.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["d0", "d1", "d2"]);
    assert_eq!(dead[1].error, "error 1");
    assert!(dead.iter().all(|d| d.at_ms >= before));
    let keys: HashSet<_> = s.dead(10).unwrap().into_iter().map(|d| d.key).collect();
    assert_eq!(keys.len(), 4);
}

#[test]
fn dead_letters_can_be_retried() {
    let s = crate::factory();
    let s = s();
    let urgent = Message::new(
        "urgent",
        vec![],
        MessageOptions {
            priority: 7,
            ..MessageOptions::default()
        },
    );
    // A message that died of too many deliveries comes back with a fresh count.
    enqueue(&*s, vec![ready("worn", "default", 0)]);
    let mut req = request("c", &["default"], 1, SHORT_LEASE);
    req.max_deliveries = 1;
    assert_eq!(s.dequeue(&req).unwrap().len(), 1);
    sleep_past(SHORT_LEASE);
    assert!(s.dequeue(&req).unwrap().is_empty());
    s.apply(&Batch {
        dead: vec![
            DeadPut {
                id: urgent.id.clone(),
                queue: "default".into(),
                payload: urgent.encode().unwrap(),
                error: "e".into(),
            },
            DeadPut {
                id: "junk".into(),
                queue: "default".into(),
                payload: b"junk".to_vec(),
                error: "e".into(),
            },
        ],
        ..Batch::default()
    })
    .unwrap();
    let dead = s.dead(10).unwrap();
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0].id, "worn");
    // Retry one by key; unknown keys are skipped.
    let keys = vec![dead[0].key.clone(), "no-such-key".to_string()];
    assert_eq!(s.retry_dead(Some(&keys)).unwrap(), 1);
    assert_eq!(s.retry_dead(Some(&keys)).unwrap(), 0);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.dead), (1, 2));
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["worn"]);
    assert_eq!(ds[0].deliveries, 1);
    // Retry the rest: the urgent one keeps its priority.
    assert_eq!(s.retry_dead(None).unwrap(), 2);
    assert_eq!(s.counts().unwrap().dead, 0);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0].payload, urgent.encode().unwrap());
    assert_eq!(ds[1].payload, b"junk");
}

fn populate(s: &dyn Storage) {
    s.flush(Flush::all()).unwrap();
    enqueue(
        s,
        vec![ready("q1", "default", 0), ready("q2", "default", 0)],
    );
    one(s, "c", LONG_LEASE);
    schedule(s, "s", now_ms() + 600_000);
    put_result(s, "r", b"v", None);
    bury(s, "d", "e");
    s.put(Ns::Locks, "lock", b"1", None).unwrap();
    for ns in [Ns::Revoked, Ns::Claims, Ns::Data] {
        s.put(ns, "k", b"1", None).unwrap();
    }
    s.incr("n", 1).unwrap();
}

/// What is left: (ready, in flight, scheduled, results, dead, locks, other kv, counter).
fn parts(s: &dyn Storage) -> [u64; 8] {
    let c = s.counts().unwrap();
    let kv = [Ns::Revoked, Ns::Claims, Ns::Data]
        .into_iter()
        .map(|ns| s.list(ns).unwrap().len() as u64)
        .sum();
    [
        c.ready,
        c.in_flight,
        c.scheduled,
        c.results,
        c.dead,
        s.list(Ns::Locks).unwrap().len() as u64,
        kv,
        s.incr("n", 0).unwrap() as u64,
    ]
}

#[test]
fn flush_empties_only_the_parts_chosen() {
    let s = crate::factory();
    let s = s();
    populate(&*s);
    assert_eq!(parts(&*s), [1, 1, 1, 1, 1, 1, 3, 1]);
    let cases: [(Flush, [u64; 8]); 6] = [
        (
            Flush {
                queue: true,
                ..Flush::default()
            },
            [0, 0, 1, 1, 1, 1, 3, 1],
        ),
        (
            Flush {
                schedule: true,
                ..Flush::default()
            },
            [1, 1, 0, 1, 1, 1, 3, 1],
        ),
        (
            Flush {
                results: true,
                ..Flush::default()
            },
            [1, 1, 1, 0, 1, 1, 3, 1],
        ),
        (
            Flush {
                dead: true,
                ..Flush::default()
            },
            [1, 1, 1, 1, 0, 1, 3, 1],
        ),
        (
            Flush {
                locks: true,
                ..Flush::default()
            },
            [1, 1, 1, 1, 1, 0, 3, 1],
        ),
        (
            Flush {
                kv: true,
                ..Flush::default()
            },
            [1, 1, 1, 1, 1, 1, 0, 0],
        ),
    ];
    for (what, left) in cases {
        populate(&*s);
        s.flush(what).unwrap();
        assert_eq!(parts(&*s), left, "after {what:?}");
    }
    populate(&*s);
    s.flush(Flush::default()).unwrap();
    assert_eq!(parts(&*s), [1, 1, 1, 1, 1, 1, 3, 1]);
}

#[test]
fn flush_all_empties_everything() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    populate(&*a);
    b.flush(Flush::all()).unwrap();
    assert_eq!(parts(&*a), [0; 8]);
    assert_eq!(next_eta(&*a), None);
    assert!(a
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap()
        .is_empty());
}

// ----- locating a task id --------------------------------------------------------------------

use huey::storage::Location;

#[test]
fn locate_finds_a_ready_message_with_its_position_in_its_queue() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("first", "default", 0),
            ready("other-queue", "other", 5),
            ready("target", "default", 0),
            ready("urgent", "default", 3),
        ],
    );
    match s.locate("target").unwrap() {
        Some(Location::Ready {
            queue,
            priority,
            position,
            payload,
        }) => {
            assert_eq!((queue.as_str(), priority), ("default", 0));
            // "urgent" (higher priority) and "first" (older) run before it.
            assert_eq!(position, Some(2));
            assert_eq!(payload, b"target");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.locate("urgent").unwrap(),
        Some(Location::Ready {
            position: Some(0),
            ..
        })
    ));
}

#[test]
fn locate_finds_a_leased_message_with_its_lease() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    let before = now_ms();
    one(&*s, "host:42", LONG_LEASE);
    match s.locate("a").unwrap() {
        Some(Location::Leased {
            queue,
            consumer,
            until_ms,
            deliveries,
            ..
        }) => {
            assert_eq!(queue, "default");
            assert!(
                consumer.as_deref().is_none_or(|c| c == "host:42"),
                "{consumer:?}"
            );
            assert!(until_ms >= before + LONG_LEASE.as_millis() as u64 - 1000);
            assert_eq!(deliveries, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn locate_sees_an_expired_lease_as_ready() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    one(&*s, "c", SHORT_LEASE);
    sleep_past(SHORT_LEASE);
    assert!(
        matches!(s.locate("a").unwrap(), Some(Location::Ready { .. })),
        "{:?}",
        s.locate("a")
    );
}

#[test]
fn locate_finds_scheduled_and_dead_messages_and_nothing_else() {
    let s = crate::factory();
    let s = s();
    let eta = now_ms() + 600_000;
    schedule(&*s, "later", eta);
    bury(&*s, "gone", "worker-lost: killed");
    assert_eq!(
        s.locate("later").unwrap(),
        Some(Location::Scheduled {
            eta_ms: eta,
            payload: b"later".to_vec()
        })
    );
    match s.locate("gone").unwrap() {
        Some(Location::Dead { queue, error, .. }) => {
            assert_eq!(
                (queue.as_str(), error.as_str()),
                ("default", "worker-lost: killed")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.locate("never-enqueued").unwrap(), None);
    // Acked: gone from every place.
    enqueue(&*s, vec![ready("done", "default", 0)]);
    let d = one(&*s, "c", LONG_LEASE);
    assert_eq!(ack(&*s, vec![d.lease]), 1);
    assert_eq!(s.locate("done").unwrap(), None);
}

#[test]
fn locate_scans_past_many_messages() {
    let s = crate::factory();
    let s = s();
    let many: Vec<_> = (0..2500)
        .map(|i| ready(&format!("m{i}"), "default", 0))
        .collect();
    enqueue(&*s, many);
    assert!(matches!(
        s.locate("m2400").unwrap(),
        Some(Location::Ready {
            position: Some(2400),
            ..
        })
    ));
}

/// Retrying every dead letter of a long list (more than one script call's worth on Redis)
/// puts each back exactly once.
#[test]
fn many_dead_letters_are_retried_all_at_once() {
    let s = crate::factory();
    let s = s();
    let letters: Vec<_> = (0..1234)
        .map(|i| DeadPut {
            id: format!("d{i}"),
            queue: "default".into(),
            payload: ready(&format!("d{i}"), "default", 0).payload,
            error: "e".into(),
        })
        .collect();
    s.apply(&Batch {
        dead: letters,
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.retry_dead(None).unwrap(), 1234);
    assert_eq!(s.retry_dead(None).unwrap(), 0);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.dead), (1234, 0));
}

#[test]
fn expiring_counters_read_back_without_being_created() {
    let s = crate::factory();
    let s = s();
    let ttl = Duration::from_secs(60);
    s.incr_expiring("stats:a", 3, ttl).unwrap();
    s.incr_expiring("stats:a", 2, ttl).unwrap();
    let keys = ["stats:a".to_string(), "stats:missing".to_string()];
    assert_eq!(s.read_expiring(&keys, ttl).unwrap(), [5, 0]);
    assert_eq!(s.read_expiring(&[], ttl).unwrap(), Vec::<i64>::new());
}

#[test]
fn consumer_records_expire_and_flush_with_the_kv_entries() {
    let s = crate::factory();
    let s = s();
    s.put(Ns::Consumers, "h:1", b"{}", Some(SHORT_LEASE))
        .unwrap();
    s.put(Ns::Consumers, "h:2", b"{}", Some(LONG_LEASE))
        .unwrap();
    assert_eq!(s.list(Ns::Consumers).unwrap().len(), 2);
    sleep_past(SHORT_LEASE);
    let left: Vec<String> = s
        .list(Ns::Consumers)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, ["h:2"]);
    s.flush(Flush {
        kv: true,
        ..Flush::default()
    })
    .unwrap();
    assert!(s.list(Ns::Consumers).unwrap().is_empty());
}

#[test]
fn queue_sizes_count_ready_and_leased_messages_per_queue() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("a1", "alpha", 0),
            ready("a2", "alpha", 0),
            ready("a3", "alpha", 0),
            ready("b1", "beta", 0),
        ],
    );
    s.dequeue(&request("c", &["alpha"], 2, LONG_LEASE)).unwrap();
    s.dequeue(&request("c", &["beta"], 1, SHORT_LEASE)).unwrap();
    sleep_past(SHORT_LEASE);
    let sizes: Vec<(String, u64, u64)> = s
        .queue_sizes()
        .unwrap()
        .into_iter()
        .filter(|q| q.ready + q.in_flight > 0)
        .map(|q| (q.queue, q.ready, q.in_flight))
        .collect();
    // beta's lease expired: ready again.
    assert_eq!(sizes, [("alpha".into(), 1, 2), ("beta".into(), 1, 0)]);
}
