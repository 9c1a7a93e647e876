//! Cases of the queue role: delivery order, leases, acks, dead-lettering, batches, blocking.

use super::*;

#[test]
fn enqueued_message_is_delivered_once_with_its_payload() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    let ds = s
        .dequeue(&request("c1", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["a"]);
    assert_eq!(ds[0].queue, "default");
    assert_eq!(ds[0].deliveries, 1);
    assert!(s
        .dequeue(&request("c1", &["default"], 10, LONG_LEASE))
        .unwrap()
        .is_empty());
}

/// A dequeue that says whether any revocation is stored never says "none" while one is (the
/// consumer then skips reading revocations); Redis and Postgres read it with the lease.
#[test]
fn a_dequeue_never_hides_a_stored_revocation() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![ready("a", "default", 0), ready("b", "default", 0)],
    );
    let one = request("c1", &["default"], 1, LONG_LEASE);
    let (ds, revoked) = s.dequeue_seeing_revocations(&one).unwrap();
    assert_eq!(names(&ds), ["a"]);
    assert_ne!(revoked, Some(true), "none is stored");
    s.put(Ns::Revoked, "id:x", b"r", None).unwrap();
    let (ds, revoked) = s.dequeue_seeing_revocations(&one).unwrap();
    assert_eq!(names(&ds), ["b"]);
    assert_ne!(revoked, Some(false), "one is stored");
    if matches!(s.backend(), "redis" | "postgres") {
        assert_eq!(revoked, Some(true), "read with the lease");
    }
}

#[test]
fn priority_orders_dequeue_and_fifo_within_priority() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("low1", "default", -1),
            ready("mid1", "default", 0),
            ready("high1", "default", 5),
            ready("mid2", "default", 0),
            ready("high2", "default", 5),
            ready("low2", "default", -1),
        ],
    );
    enqueue(&*s, vec![ready("mid3", "default", 0)]);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(
        names(&ds),
        ["high1", "high2", "mid1", "mid2", "mid3", "low1", "low2"]
    );
}

#[test]
fn named_queues_are_served_in_order_given() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![
            ready("b1", "b", 9),
            ready("a1", "a", 0),
            ready("c1", "c", 0),
            ready("a2", "a", 0),
            ready("b2", "b", 0),
        ],
    );
    let ds = s
        .dequeue(&request("c", &["a", "b"], 3, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["a1", "a2", "b1"]);
    assert_eq!(ds[2].queue, "b");
    let ds = s
        .dequeue(&request("c", &["b", "a"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["b2"]);
    // Queue "c" was never asked for.
    assert_eq!(s.counts().unwrap().ready, 1);
}

#[test]
fn dequeue_takes_at_most_max() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        (0..5)
            .map(|i| ready(&format!("m{i}"), "default", 0))
            .collect(),
    );
    let ds = s
        .dequeue(&request("c", &["default"], 2, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["m0", "m1"]);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["m2", "m3", "m4"]);
}

#[test]
fn leased_message_is_not_delivered_again_while_its_lease_holds() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(&*a, vec![ready("x", "default", 0)]);
    one(&*a, "c1", LONG_LEASE);
    let ds = b
        .dequeue(&waiting(
            request("c2", &["default"], 10, LONG_LEASE),
            Duration::from_millis(150),
        ))
        .unwrap();
    assert!(ds.is_empty());
    let c = a.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (0, 1));
}

#[test]
fn ack_deletes_and_stale_ack_is_ignored() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(
        &*a,
        vec![ready("x", "default", 0), ready("y", "default", 0)],
    );
    let first = one(&*a, "c1", SHORT_LEASE);
    sleep_past(SHORT_LEASE);
    // Redelivered to another consumer after the lease expired.
    let second = one(&*b, "c2", LONG_LEASE);
    assert_eq!(second.payload, b"x");
    assert_eq!(second.deliveries, 2);
    assert_ne!(first.lease, second.lease);
    // The first consumer's late ack must not delete the redelivered message.
    ack(&*a, vec![first.lease.clone()]);
    let c = a.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (1, 1));
    ack(&*a, vec![second.lease.clone()]);
    let c = a.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (1, 0));
    // Acking twice is harmless.
    ack(&*b, vec![second.lease]);
    let y = one(&*b, "c2", LONG_LEASE);
    assert_eq!(y.payload, b"y");
    ack(&*b, vec![y.lease]);
    assert_eq!(a.counts().unwrap(), Default::default());
}

#[test]
fn unknown_or_malformed_leases_are_ignored() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("x", "default", 0)]);
    let d = one(&*s, "c", LONG_LEASE);
    let junk = vec![
        Lease(String::new()),
        Lease("nonsense".into()),
        Lease("1:2:3".into()),
        Lease("999999:1".into()),
        Lease(format!("{}x", d.lease.0)),
    ];
    ack(&*s, junk.clone());
    s.extend(&junk, LONG_LEASE).unwrap();
    s.release(&junk, true).unwrap();
    s.release(&junk, false).unwrap();
    assert_eq!(s.counts().unwrap().in_flight, 1);
    ack(&*s, vec![d.lease]);
    assert_eq!(s.counts().unwrap().in_flight, 0);
}

#[test]
fn expired_lease_is_redelivered_to_another_consumer() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(&*a, vec![ready("x", "default", 0)]);
    let first = one(&*a, "c1", SHORT_LEASE);
    assert_eq!(first.deliveries, 1);
    // Blocking dequeue on another handle picks it up once the lease runs out.
    let start = Instant::now();
    let ds = b
        .dequeue(&waiting(
            request("c2", &["default"], 1, LONG_LEASE),
            Duration::from_secs(5),
        ))
        .unwrap();
    assert_eq!(names(&ds), ["x"]);
    assert_eq!(ds[0].deliveries, 2);
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn message_delivered_too_often_is_dead_lettered() {
    let s = crate::factory();
    let s = s();
    enqueue(
        &*s,
        vec![ready("x", "default", 0), ready("ok", "default", -1)],
    );
    let mut req = request("c", &["default"], 1, SHORT_LEASE);
    req.max_deliveries = 2;
    for n in 1..=2 {
        let ds = s.dequeue(&req).unwrap();
        assert_eq!(names(&ds), ["x"]);
        assert_eq!(ds[0].deliveries, n);
        sleep_past(SHORT_LEASE);
    }
    // The third delivery would exceed the limit: dead-lettered, and the next one is served.
    let ds = s.dequeue(&req).unwrap();
    assert_eq!(names(&ds), ["ok"]);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight, c.dead), (0, 1, 1));
    let dead = s.dead(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "x");
    assert_eq!(dead[0].queue, "default");
    assert_eq!(dead[0].payload, b"x");
    assert!(dead[0].error.contains('2'), "error: {}", dead[0].error);
    assert!(dead[0].at_ms > 0);
}

#[test]
fn extend_keeps_a_lease_alive() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(&*a, vec![ready("x", "default", 0)]);
    let d = one(&*a, "c1", Duration::from_millis(300));
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(150));
        a.extend(std::slice::from_ref(&d.lease), Duration::from_millis(300))
            .unwrap();
    }
    // 450 ms after the 300 ms lease was taken, it is still held.
    assert!(b
        .dequeue(&request("c2", &["default"], 1, LONG_LEASE))
        .unwrap()
        .is_empty());
    assert_eq!(a.counts().unwrap().in_flight, 1);
    ack(&*a, vec![d.lease]);
    assert_eq!(a.counts().unwrap(), Default::default());
}

#[test]
fn extend_reports_the_leases_lost_to_another_consumer() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(
        &*a,
        vec![
            ready("taken", "default", 0),
            ready("kept", "default", 0),
            ready("acked", "default", 0),
            ready("idle", "default", 0),
        ],
    );
    let short = Duration::from_millis(200);
    let ds = a
        .dequeue(&request("frozen", &["default"], 4, short))
        .unwrap();
    assert_eq!(names(&ds), ["taken", "kept", "acked", "idle"]);
    let leases: Vec<Lease> = ds.iter().map(|d| d.lease.clone()).collect();
    // "kept" is renewed in time; the others run out; another consumer takes "taken" over.
    thread::sleep(short / 2);
    assert_eq!(
        a.extend(&leases[1..2], LONG_LEASE).unwrap(),
        [true],
        "a held lease"
    );
    ack(&*a, vec![leases[2].clone()]);
    sleep_past(short);
    let took = b
        .dequeue(&request("other", &["default"], 1, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&took), ["taken"]);
    let mut asked = leases.clone();
    asked.push(Lease("nonsense".into()));
    let held = a.extend(&asked, LONG_LEASE).unwrap();
    assert_eq!(
        (held[0], held[1], held[2], held[4]),
        (false, true, false, false),
        "taken over: lost; renewed: held; acknowledged: lost; not a lease: lost"
    );
    // Expired, and taken by no one: either still held (and renewed now), or lost, its message
    // put back by the other consumer's dequeue. Never both held here and delivered there.
    let again = b
        .dequeue(&request("other", &["default"], 1, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&again).is_empty(), held[3], "{held:?}");
    assert_eq!(a.extend(&[], LONG_LEASE).unwrap(), Vec::<bool>::new());
    // The lost lease cannot be revived by a renewal: the other consumer's holds.
    assert!(!a.apply(&Batch::ack(leases[0].clone())).unwrap());
    assert!(b.apply(&Batch::ack(took[0].lease.clone())).unwrap());
}

#[test]
fn release_makes_a_message_ready_at_once() {
    let s = crate::factory();
    let (a, b) = (s(), s());
    enqueue(
        &*a,
        vec![ready("x", "default", 0), ready("y", "default", 0)],
    );
    let d = one(&*a, "c1", LONG_LEASE);
    assert_eq!(d.payload, b"x");
    a.release(std::slice::from_ref(&d.lease), true).unwrap();
    // Ready again at once, keeping its place ahead of "y".
    let again = one(&*b, "c2", LONG_LEASE);
    assert_eq!(again.payload, b"x");
    assert_eq!(again.deliveries, 2, "a started delivery counts");
    // Releasing a stale lease does nothing.
    a.release(&[d.lease], false).unwrap();
    assert_eq!(a.counts().unwrap().in_flight, 1);
}

#[test]
fn releasing_unstarted_messages_does_not_count_a_delivery() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("x", "default", 0)]);
    let mut req = request("c", &["default"], 1, LONG_LEASE);
    req.max_deliveries = 3;
    // Handed back unstarted far more often than the limit allows deliveries (deploy after
    // deploy): never dead-lettered, and still the first delivery when it finally runs.
    for _ in 0..10 {
        let ds = s.dequeue(&req).unwrap();
        assert_eq!(ds.len(), 1, "not dead-lettered");
        assert_eq!(ds[0].deliveries, 1);
        s.release(&[ds[0].lease.clone()], false).unwrap();
    }
    assert_eq!(s.counts().unwrap().dead, 0);
    // Interrupted runs do count: the limit still stops a task that keeps being cut short.
    for n in 1..=3 {
        let ds = s.dequeue(&req).unwrap();
        assert_eq!(ds[0].deliveries, n);
        s.release(&[ds[0].lease.clone()], true).unwrap();
    }
    assert!(s.dequeue(&req).unwrap().is_empty());
    assert_eq!(s.counts().unwrap().dead, 1);
}

#[test]
fn batch_writes_every_part() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("done", "default", 0)]);
    let d = one(&*s, "c", LONG_LEASE);
    s.apply(&Batch {
        lease: Some(d.lease),
        claim: None,
        release: Vec::new(),
        enqueue: vec![ready("next", "default", 0)],
        schedule: vec![Scheduled {
            eta_ms: now_ms() + 60_000,
            ready: ready("later", "default", 0),
        }],
        results: vec![ResultPut {
            id: "done".into(),
            value: b"42".to_vec(),
            ttl: None,
        }],
        dead: vec![DeadPut {
            id: "bad".into(),
            queue: "default".into(),
            payload: b"bad".to_vec(),
            error: "boom".into(),
        }],
        chords: vec![],
    })
    .unwrap();
    let c = s.counts().unwrap();
    assert_eq!(
        (c.ready, c.in_flight, c.scheduled, c.results, c.dead),
        (1, 0, 1, 1, 1)
    );
    assert_eq!(s.result("done", false).unwrap().unwrap(), b"42");
    assert_eq!(s.dead(10).unwrap()[0].error, "boom");
    s.apply(&Batch::default()).unwrap();
    assert_eq!(s.counts().unwrap(), c);
}

#[test]
fn batch_is_atomic_to_concurrent_readers() {
    let s = crate::factory();
    let (writer, reader) = (s(), s());
    let t = thread::spawn(move || {
        for i in 0..40 {
            let id = format!("t{i}");
            writer
                .apply(&Batch {
                    claim: None,
                    release: Vec::new(),
                    enqueue: vec![ready(&id, "default", 0)],
                    schedule: vec![Scheduled {
                        eta_ms: now_ms() + 600_000,
                        ready: ready(&id, "default", 0),
                    }],
                    results: vec![ResultPut {
                        id: id.clone(),
                        value: b"r".to_vec(),
                        ttl: None,
                    }],
                    dead: vec![DeadPut {
                        id: id.clone(),
                        queue: "default".into(),
                        payload: b"d".to_vec(),
                        error: "e".into(),
                    }],
                    lease: None,
                    chords: vec![],
                })
                .unwrap();
        }
    });
    let mut seen = 0;
    while seen < 40 {
        let c = reader.counts().unwrap();
        assert!(
            c.ready == c.scheduled && c.ready == c.results && c.ready == c.dead,
            "half-written batch seen: {c:?}"
        );
        seen = c.ready;
    }
    t.join().unwrap();
}

fn blocking_dequeue_wakes(consumer: Arc<dyn Storage>, producer: Arc<dyn Storage>) {
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        enqueue(&*producer, vec![ready("late", "default", 0)]);
    });
    let start = Instant::now();
    let ds = consumer
        .dequeue(&waiting(
            request("c", &["default"], 1, LONG_LEASE),
            Duration::from_secs(10),
        ))
        .unwrap();
    let took = start.elapsed();
    t.join().unwrap();
    assert_eq!(names(&ds), ["late"]);
    assert!(took < PROMPTLY, "woke after {took:?}");
}

#[test]
fn blocking_dequeue_wakes_on_enqueue_from_another_handle() {
    let s = crate::factory();
    blocking_dequeue_wakes(s(), s());
}

#[test]
fn blocking_dequeue_wakes_on_enqueue_from_the_same_handle() {
    let s = crate::factory();
    let s = s();
    blocking_dequeue_wakes(s.clone(), s);
}

#[test]
fn blocking_dequeue_gives_up_after_its_wait() {
    let s = crate::factory();
    let s = s();
    let start = Instant::now();
    let ds = s
        .dequeue(&waiting(
            request("c", &["default"], 1, LONG_LEASE),
            Duration::from_millis(200),
        ))
        .unwrap();
    let took = start.elapsed();
    assert!(ds.is_empty());
    assert!(
        took >= Duration::from_millis(190),
        "returned after {took:?}"
    );
    assert!(took < PROMPTLY, "returned after {took:?}");
}

#[test]
fn huge_waits_leases_and_ttls_are_accepted() {
    let s = crate::factory();
    let s = s();
    enqueue(&*s, vec![ready("x", "default", 0)]);
    let ds = s
        .dequeue(&waiting(
            request("c", &["default"], 1, Duration::MAX),
            Duration::MAX,
        ))
        .unwrap();
    assert_eq!(names(&ds), ["x"]);
    s.extend(std::slice::from_ref(&ds[0].lease), Duration::MAX)
        .unwrap();
    assert_eq!(s.counts().unwrap().in_flight, 1);
    put_result(&*s, "r", b"v", Some(Duration::MAX));
    assert_eq!(
        s.wait_result("r", false, Duration::MAX).unwrap(),
        Some(b"v".to_vec())
    );
    s.put(Ns::Data, "k", b"v", Some(Duration::MAX)).unwrap();
    assert!(!s
        .put_if_empty(Ns::Data, "k", b"w", Some(Duration::MAX))
        .unwrap());
    assert_eq!(s.get(Ns::Data, "k").unwrap(), Some(b"v".to_vec()));
}
