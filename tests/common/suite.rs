//! The behaviours every storage backend must show. Each function takes a factory whose calls
//! return handles on one and the same storage (a second handle stands for another consumer,
//! thread or process).

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use huey::clock::now_ms;
use huey::message::{Message, MessageOptions};
use huey::storage::{
    Batch, DeadPut, Delivery, DequeueRequest, Flush, Lease, Ns, Ready, ResultPut, Scheduled,
    Storage,
};

/// Returns handles on one storage.
pub type Factory<'a> = &'a dyn Fn() -> Arc<dyn Storage>;

const SHORT_LEASE: Duration = Duration::from_millis(200);
const LONG_LEASE: Duration = Duration::from_secs(60);
/// A generous bound for "woke up promptly" on a noisy machine.
const PROMPTLY: Duration = Duration::from_secs(3);

pub fn ready(id: &str, queue: &str, priority: i32) -> Ready {
    Ready {
        id: id.to_string(),
        queue: queue.to_string(),
        priority,
        payload: id.as_bytes().to_vec(),
    }
}

pub fn enqueue(s: &dyn Storage, items: Vec<Ready>) {
    s.apply(&Batch {
        enqueue: items,
        ..Batch::default()
    })
    .unwrap();
}

pub fn request(consumer: &str, queues: &[&str], max: usize, lease: Duration) -> DequeueRequest {
    DequeueRequest {
        consumer: consumer.to_string(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max,
        lease,
        wait: Duration::ZERO,
        max_deliveries: 10,
    }
}

pub fn waiting(mut req: DequeueRequest, wait: Duration) -> DequeueRequest {
    req.wait = wait;
    req
}

pub fn names(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8(d.payload.clone()).unwrap())
        .collect()
}

pub fn ack(s: &dyn Storage, leases: Vec<Lease>) {
    s.apply(&Batch {
        ack: leases,
        ..Batch::default()
    })
    .unwrap();
}

pub fn put_result(s: &dyn Storage, id: &str, value: &[u8], ttl: Option<Duration>) {
    s.apply(&Batch {
        results: vec![ResultPut {
            id: id.to_string(),
            value: value.to_vec(),
            ttl,
        }],
        ..Batch::default()
    })
    .unwrap();
}

pub fn schedule(s: &dyn Storage, id: &str, eta_ms: u64) {
    s.apply(&Batch {
        schedule: vec![Scheduled {
            eta_ms,
            ready: ready(id, "default", 0),
        }],
        ..Batch::default()
    })
    .unwrap();
}

pub fn bury(s: &dyn Storage, id: &str, error: &str) {
    s.apply(&Batch {
        dead: vec![DeadPut {
            id: id.to_string(),
            queue: "default".to_string(),
            payload: id.as_bytes().to_vec(),
            error: error.to_string(),
        }],
        ..Batch::default()
    })
    .unwrap();
}

fn one(s: &dyn Storage, consumer: &str, lease: Duration) -> Delivery {
    let mut ds = s
        .dequeue(&request(consumer, &["default"], 1, lease))
        .unwrap();
    assert_eq!(ds.len(), 1, "expected one delivery");
    ds.remove(0)
}

fn sleep_past(d: Duration) {
    thread::sleep(d + Duration::from_millis(100));
}

pub fn enqueued_message_is_delivered_once_with_its_payload(s: Factory) {
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

pub fn priority_orders_dequeue_and_fifo_within_priority(s: Factory) {
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

pub fn named_queues_are_served_in_order_given(s: Factory) {
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

pub fn dequeue_takes_at_most_max(s: Factory) {
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

pub fn leased_message_is_not_delivered_again_while_its_lease_holds(s: Factory) {
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

pub fn ack_deletes_and_stale_ack_is_ignored(s: Factory) {
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

pub fn unknown_or_malformed_leases_are_ignored(s: Factory) {
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
    s.release(&junk).unwrap();
    assert_eq!(s.counts().unwrap().in_flight, 1);
    ack(&*s, vec![d.lease]);
    assert_eq!(s.counts().unwrap().in_flight, 0);
}

pub fn expired_lease_is_redelivered_to_another_consumer(s: Factory) {
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

pub fn message_delivered_too_often_is_dead_lettered(s: Factory) {
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

pub fn extend_keeps_a_lease_alive(s: Factory) {
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

pub fn release_makes_a_message_ready_at_once(s: Factory) {
    let (a, b) = (s(), s());
    enqueue(
        &*a,
        vec![ready("x", "default", 0), ready("y", "default", 0)],
    );
    let d = one(&*a, "c1", LONG_LEASE);
    assert_eq!(d.payload, b"x");
    a.release(std::slice::from_ref(&d.lease)).unwrap();
    // Ready again at once, keeping its place ahead of "y".
    let again = one(&*b, "c2", LONG_LEASE);
    assert_eq!(again.payload, b"x");
    assert_eq!(again.deliveries, 2);
    // Releasing a stale lease does nothing.
    a.release(&[d.lease]).unwrap();
    assert_eq!(a.counts().unwrap().in_flight, 1);
}

pub fn batch_writes_every_part(s: Factory) {
    let s = s();
    enqueue(&*s, vec![ready("done", "default", 0)]);
    let d = one(&*s, "c", LONG_LEASE);
    s.apply(&Batch {
        ack: vec![d.lease],
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

pub fn batch_is_atomic_to_concurrent_readers(s: Factory) {
    let (writer, reader) = (s(), s());
    let t = thread::spawn(move || {
        for i in 0..40 {
            let id = format!("t{i}");
            writer
                .apply(&Batch {
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
                    ack: vec![],
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

pub fn due_schedule_entries_are_promoted_in_eta_order(s: Factory) {
    let s = s();
    let now = now_ms();
    schedule(&*s, "third", now - 1_000);
    schedule(&*s, "first", now - 3_000);
    schedule(&*s, "future", now + 600_000);
    schedule(&*s, "second", now - 2_000);
    schedule(&*s, "fourth", now);
    enqueue(&*s, vec![ready("already", "default", 0)]);
    assert_eq!(s.promote_due(now, 100).unwrap(), 4);
    assert_eq!(s.counts().unwrap().scheduled, 1);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(
        names(&ds),
        ["already", "first", "second", "third", "fourth"]
    );
    assert_eq!(ds[1].deliveries, 1);
    assert_eq!(s.promote_due(now, 100).unwrap(), 0);
}

pub fn promote_due_moves_at_most_max(s: Factory) {
    let s = s();
    for i in 0..5 {
        schedule(&*s, &format!("s{i}"), 1_000 + i);
    }
    assert_eq!(s.promote_due(10_000, 2).unwrap(), 2);
    assert_eq!(s.scheduled(10).unwrap().len(), 3);
    assert_eq!(s.next_eta().unwrap(), Some(1_002));
    assert_eq!(s.promote_due(10_000, 0).unwrap(), 0);
    assert_eq!(s.promote_due(10_000, 10).unwrap(), 3);
    let ds = s
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["s0", "s1", "s2", "s3", "s4"]);
}

pub fn next_eta_is_the_earliest_scheduled(s: Factory) {
    let s = s();
    assert_eq!(s.next_eta().unwrap(), None);
    schedule(&*s, "b", 5_000);
    schedule(&*s, "a", 3_000);
    schedule(&*s, "c", 9_000);
    assert_eq!(s.next_eta().unwrap(), Some(3_000));
    s.promote_due(4_000, 10).unwrap();
    assert_eq!(s.next_eta().unwrap(), Some(5_000));
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

pub fn blocking_dequeue_wakes_on_enqueue_from_another_handle(s: Factory) {
    blocking_dequeue_wakes(s(), s());
}

pub fn blocking_dequeue_wakes_on_enqueue_from_the_same_handle(s: Factory) {
    let s = s();
    blocking_dequeue_wakes(s.clone(), s);
}

pub fn blocking_dequeue_gives_up_after_its_wait(s: Factory) {
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

pub fn wait_result_wakes_when_result_is_written(s: Factory) {
    for (waiter, writer) in [(s(), s()), {
        let one = s();
        (one.clone(), one)
    }] {
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            put_result(&*writer, "r1", b"value", None);
        });
        let start = Instant::now();
        let got = waiter
            .wait_result("r1", true, Duration::from_secs(10))
            .unwrap();
        let took = start.elapsed();
        t.join().unwrap();
        assert_eq!(got.as_deref(), Some(&b"value"[..]));
        assert!(took < PROMPTLY, "woke after {took:?}");
        // It was taken.
        assert_eq!(waiter.result("r1", false).unwrap(), None);
    }
}

pub fn wait_result_times_out_with_none(s: Factory) {
    let s = s();
    let start = Instant::now();
    assert_eq!(
        s.wait_result("missing", false, Duration::from_millis(150))
            .unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(140));
    put_result(&*s, "there", b"v", None);
    assert_eq!(
        s.wait_result("there", false, Duration::ZERO).unwrap(),
        Some(b"v".to_vec())
    );
}

pub fn take_result_is_destructive_and_preserve_is_not(s: Factory) {
    let (a, b) = (s(), s());
    put_result(&*a, "r", b"1", None);
    assert_eq!(b.result("r", false).unwrap(), Some(b"1".to_vec()));
    assert_eq!(b.result("r", false).unwrap(), Some(b"1".to_vec()));
    // Writing again replaces.
    put_result(&*a, "r", b"2", None);
    assert_eq!(b.result("r", true).unwrap(), Some(b"2".to_vec()));
    assert_eq!(a.result("r", true).unwrap(), None);
    assert_eq!(a.result("r", false).unwrap(), None);
}

pub fn result_with_ttl_expires(s: Factory) {
    let s = s();
    put_result(&*s, "short", b"v", Some(Duration::from_millis(150)));
    put_result(&*s, "long", b"v", Some(Duration::from_secs(600)));
    assert_eq!(s.result("short", false).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.counts().unwrap().results, 2);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(s.result("short", false).unwrap(), None);
    assert_eq!(s.result("short", true).unwrap(), None);
    assert_eq!(s.result("long", false).unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.counts().unwrap().results, 1);
}

pub fn delete_result_reports_whether_there_was_one(s: Factory) {
    let s = s();
    put_result(&*s, "r", b"v", None);
    assert!(s.delete_result("r").unwrap());
    assert!(!s.delete_result("r").unwrap());
    assert_eq!(s.result("r", false).unwrap(), None);
}

pub fn kv_put_get_and_take(s: Factory) {
    let (a, b) = (s(), s());
    assert_eq!(a.get(Ns::Data, "k").unwrap(), None);
    a.put(Ns::Data, "k", b"1", None).unwrap();
    assert_eq!(b.get(Ns::Data, "k").unwrap(), Some(b"1".to_vec()));
    a.put(Ns::Data, "k", b"2", None).unwrap();
    assert_eq!(b.take(Ns::Data, "k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(a.take(Ns::Data, "k").unwrap(), None);
    assert_eq!(a.get(Ns::Data, "k").unwrap(), None);
}

pub fn kv_entries_with_ttl_expire(s: Factory) {
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

pub fn put_if_empty_is_exclusive_until_ttl_expires(s: Factory) {
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

pub fn put_if_empty_is_exclusive_across_handles(s: Factory) {
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

pub fn namespaces_are_separate(s: Factory) {
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

pub fn list_returns_sorted_live_keys(s: Factory) {
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

pub fn counters_add_atomically(s: Factory) {
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

pub fn delete_if_deletes_only_the_matching_value(s: Factory) {
    let (a, b) = (s(), s());
    assert!(a.put_if_empty(Ns::Locks, "l", b"holder-1", None).unwrap());
    assert!(!b.delete_if(Ns::Locks, "l", b"holder-2").unwrap());
    assert_eq!(a.get(Ns::Locks, "l").unwrap(), Some(b"holder-1".to_vec()));
    assert!(b.delete_if(Ns::Locks, "l", b"holder-1").unwrap());
    assert_eq!(a.get(Ns::Locks, "l").unwrap(), None);
    assert!(!a.delete_if(Ns::Locks, "l", b"holder-1").unwrap());
    assert!(!a.delete_if(Ns::Data, "missing", b"x").unwrap());
}

pub fn expiring_counters_add_atomically_and_start_over_after_their_ttl(s: Factory) {
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

pub fn counts_reflect_each_part(s: Factory) {
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

pub fn expired_lease_counts_as_ready(s: Factory) {
    let s = s();
    enqueue(&*s, vec![ready("a", "default", 0)]);
    one(&*s, "c", SHORT_LEASE);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (0, 1));
    sleep_past(SHORT_LEASE);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (1, 0));
}

pub fn pending_lists_ready_payloads_in_run_order(s: Factory) {
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

pub fn scheduled_lists_payloads_by_eta(s: Factory) {
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

pub fn dead_letters_are_listed_oldest_first(s: Factory) {
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

pub fn dead_letters_can_be_retried(s: Factory) {
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

pub fn flush_empties_only_the_parts_chosen(s: Factory) {
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

pub fn flush_all_empties_everything(s: Factory) {
    let (a, b) = (s(), s());
    populate(&*a);
    b.flush(Flush::all()).unwrap();
    assert_eq!(parts(&*a), [0; 8]);
    assert_eq!(a.next_eta().unwrap(), None);
    assert!(a
        .dequeue(&request("c", &["default"], 10, LONG_LEASE))
        .unwrap()
        .is_empty());
}

pub fn huge_waits_leases_and_ttls_are_accepted(s: Factory) {
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

pub fn pending_orders_across_queues_by_priority_then_age(s: Factory) {
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
