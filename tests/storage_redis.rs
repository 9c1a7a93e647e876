//! Behaviour of the Redis storage against real `redis-server` processes started per test.

#[macro_use]
mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use huey::message::{Message, MessageOptions};
use huey::storage::{
    self, Batch, DeadPut, DequeueRequest, Flush, Lease, Ns, Ready, ResultPut, Scheduled, Storage,
};
use huey::Error;

/// A factory opening new connections to one private server (started per test).
fn redis_factory() -> impl Fn() -> Arc<dyn Storage> {
    let server = RedisServer::start();
    move || open(&server)
}

/// The storage behaviours every backend shares.
mod suite {
    use super::*;
    storage_suite!(redis_factory());
}

fn open(server: &RedisServer) -> Arc<dyn Storage> {
    storage::open(&server.url(), "test").expect("open the test redis")
}

fn ready(id: &str, queue: &str, priority: i32) -> Ready {
    Ready {
        id: id.to_string(),
        queue: queue.to_string(),
        priority,
        payload: id.as_bytes().to_vec(),
    }
}

fn enqueue(s: &dyn Storage, items: Vec<Ready>) {
    s.apply(&Batch {
        enqueue: items,
        ..Batch::default()
    })
    .unwrap();
}

fn req(consumer: &str, queues: &[&str], max: usize) -> DequeueRequest {
    DequeueRequest {
        consumer: consumer.to_string(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max,
        lease: Duration::from_secs(30),
        wait: Duration::ZERO,
        max_deliveries: 5,
    }
}

fn payloads(ds: &[storage::Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8(d.payload.clone()).unwrap())
        .collect()
}

fn ack(s: &dyn Storage, ds: &[storage::Delivery]) {
    s.apply(&Batch {
        ack: ds.iter().map(|d| d.lease.clone()).collect(),
        ..Batch::default()
    })
    .unwrap();
}

#[test]
fn higher_priority_first_and_fifo_within_a_priority() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(
        &*s,
        vec![
            ready("low1", "default", -5),
            ready("mid1", "default", 0),
            ready("high1", "default", i32::MAX),
            ready("mid2", "default", 0),
            ready("low2", "default", -5),
            ready("min", "default", i32::MIN),
            ready("high2", "default", i32::MAX),
            ready("mid3", "default", 0),
        ],
    );
    assert_eq!(
        s.pending(100).unwrap(),
        ["high1", "high2", "mid1", "mid2", "mid3", "low1", "low2", "min"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    let first = s.dequeue(&req("c", &["default"], 3)).unwrap();
    assert_eq!(payloads(&first), ["high1", "high2", "mid1"]);
    assert!(first
        .iter()
        .all(|d| d.deliveries == 1 && d.queue == "default"));
    let rest = s.dequeue(&req("c", &["default"], 10)).unwrap();
    assert_eq!(payloads(&rest), ["mid2", "mid3", "low1", "low2", "min"]);
}

#[test]
fn named_queues_are_served_in_the_order_given() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(
        &*s,
        vec![
            ready("a1", "a", 0),
            ready("b1", "b", 100),
            ready("a2", "a", 0),
            ready("c1", "c", 0),
        ],
    );
    let got = s.dequeue(&req("c", &["a", "b"], 10)).unwrap();
    assert_eq!(payloads(&got), ["a1", "a2", "b1"]);
    assert_eq!(
        got.iter().map(|d| d.queue.as_str()).collect::<Vec<_>>(),
        ["a", "a", "b"]
    );
    assert!(s.dequeue(&req("c", &["a", "b"], 10)).unwrap().is_empty());
    assert_eq!(payloads(&s.dequeue(&req("c", &["c"], 10)).unwrap()), ["c1"]);
}

#[test]
fn expired_lease_is_redelivered_to_another_consumer_and_stale_ack_is_ignored() {
    let server = RedisServer::start();
    let a = open(&server);
    let b = open(&server);
    enqueue(&*a, vec![ready("m", "default", 0)]);
    let mut short = req("a", &["default"], 1);
    short.lease = Duration::from_millis(100);
    let first = a.dequeue(&short).unwrap();
    assert_eq!(first.len(), 1);
    assert!(b.dequeue(&req("b", &["default"], 1)).unwrap().is_empty());
    thread::sleep(Duration::from_millis(150));
    assert_eq!(
        a.counts().unwrap().ready,
        1,
        "an expired lease counts as ready"
    );
    let second = b.dequeue(&req("b", &["default"], 1)).unwrap();
    assert_eq!(payloads(&second), ["m"]);
    assert_eq!(second[0].deliveries, 2);
    assert_ne!(first[0].lease, second[0].lease);
    // The first consumer's late ack must not delete the message now leased to b.
    ack(&*a, &first);
    assert_eq!(a.counts().unwrap().in_flight, 1);
    ack(&*b, &second);
    let c = a.counts().unwrap();
    assert_eq!((c.ready, c.in_flight), (0, 0));
    // Acking twice is harmless.
    ack(&*b, &second);
}

#[test]
fn message_delivered_too_often_goes_to_the_dead_letters() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(&*s, vec![ready("doomed", "default", 0)]);
    let mut r = req("c", &["default"], 1);
    r.max_deliveries = 2;
    for n in 1..=2 {
        let got = s.dequeue(&r).unwrap();
        assert_eq!(got[0].deliveries, n);
        s.release(&[got[0].lease.clone()]).unwrap();
    }
    assert!(s.dequeue(&r).unwrap().is_empty());
    let dead = s.dead(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "doomed");
    assert_eq!(dead[0].queue, "default");
    assert_eq!(dead[0].payload, b"doomed");
    assert!(
        dead[0].error.contains("delivered 2 times"),
        "{}",
        dead[0].error
    );
    assert!(dead[0].at_ms > 0);
    let c = s.counts().unwrap();
    assert_eq!((c.ready, c.in_flight, c.dead), (0, 0, 1));
}

#[test]
fn dead_letters_retried_come_back_with_a_fresh_delivery_count() {
    let server = RedisServer::start();
    let s = open(&server);
    let msg = Message::new(
        "t",
        vec![],
        MessageOptions {
            priority: 7,
            ..MessageOptions::default()
        },
    );
    let dead = |id: &str, payload: Vec<u8>| DeadPut {
        id: id.into(),
        queue: "q".into(),
        payload,
        error: "boom".into(),
    };
    s.apply(&Batch {
        dead: vec![
            dead(&msg.id, msg.encode().unwrap()),
            dead("x", b"x".to_vec()),
            dead("y", b"y".to_vec()),
        ],
        ..Batch::default()
    })
    .unwrap();
    let listed = s.dead(10).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, msg.id, "oldest first");
    assert_eq!(listed[0].error, "boom");
    assert_eq!(s.retry_dead(Some(&[listed[2].key.clone()])).unwrap(), 1);
    assert_eq!(s.retry_dead(Some(&[listed[2].key.clone()])).unwrap(), 0);
    assert_eq!(s.retry_dead(None).unwrap(), 2);
    assert_eq!(s.counts().unwrap().dead, 0);
    let got = s.dequeue(&req("c", &["q"], 10)).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].payload, msg.encode().unwrap(), "priority 7 first");
    assert!(got.iter().all(|d| d.deliveries == 1));
    assert_eq!(payloads(&got[1..]), ["y", "x"]);
}

#[test]
fn batch_writes_acks_results_enqueues_schedule_and_dead_letters_together() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(&*s, vec![ready("job", "default", 0)]);
    let got = s.dequeue(&req("c", &["default"], 1)).unwrap();
    s.apply(&Batch {
        ack: vec![
            got[0].lease.clone(),
            Lease("garbage".into()),
            Lease("1:2".into()),
        ],
        enqueue: vec![ready("next", "default", 0)],
        schedule: vec![Scheduled {
            eta_ms: huey::clock::now_ms() + 60_000,
            ready: ready("later", "default", 0),
        }],
        results: vec![ResultPut {
            id: "job".into(),
            value: b"42".to_vec(),
            ttl: None,
        }],
        dead: vec![DeadPut {
            id: "bad".into(),
            queue: "default".into(),
            payload: b"bad".to_vec(),
            error: "undecodable".into(),
        }],
    })
    .unwrap();
    let c = s.counts().unwrap();
    assert_eq!(
        (c.ready, c.scheduled, c.in_flight, c.results, c.dead),
        (1, 1, 0, 1, 1)
    );
    assert_eq!(s.result("job", false).unwrap().as_deref(), Some(&b"42"[..]));
    assert_eq!(
        s.scheduled(10).unwrap(),
        vec![(c_eta(&*s), b"later".to_vec())]
    );
    s.apply(&Batch::default()).unwrap();
}

fn c_eta(s: &dyn Storage) -> u64 {
    s.next_eta().unwrap().expect("an eta")
}

#[test]
fn promote_due_moves_due_entries_in_eta_order() {
    let server = RedisServer::start();
    let s = open(&server);
    let at = |eta_ms, id: &str| Scheduled {
        eta_ms,
        ready: ready(id, "default", 0),
    };
    s.apply(&Batch {
        schedule: vec![
            at(3000, "third"),
            at(1000, "first"),
            at(9000, "future"),
            at(2000, "second"),
        ],
        ..Batch::default()
    })
    .unwrap();
    enqueue(&*s, vec![ready("already", "default", 0)]);
    assert_eq!(s.next_eta().unwrap(), Some(1000));
    assert_eq!(s.promote_due(3000, 2).unwrap(), 2);
    assert_eq!(s.promote_due(3000, 10).unwrap(), 1);
    assert_eq!(s.promote_due(3000, 10).unwrap(), 0);
    assert_eq!(s.next_eta().unwrap(), Some(9000));
    let got = s.dequeue(&req("c", &["default"], 10)).unwrap();
    assert_eq!(payloads(&got), ["already", "first", "second", "third"]);
    assert_eq!(s.counts().unwrap().scheduled, 1);
}

#[test]
fn put_if_empty_is_exclusive_until_the_ttl_expires() {
    let server = RedisServer::start();
    let a = open(&server);
    let b = open(&server);
    let ttl = Some(Duration::from_millis(200));
    assert!(a.put_if_empty(Ns::Locks, "lock", b"a", ttl).unwrap());
    assert!(!b.put_if_empty(Ns::Locks, "lock", b"b", ttl).unwrap());
    assert_eq!(
        b.get(Ns::Locks, "lock").unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        b.list(Ns::Locks).unwrap(),
        vec![("lock".into(), b"a".to_vec())]
    );
    thread::sleep(Duration::from_millis(250));
    assert_eq!(b.get(Ns::Locks, "lock").unwrap(), None);
    assert!(b.list(Ns::Locks).unwrap().is_empty());
    assert!(b.put_if_empty(Ns::Locks, "lock", b"b", None).unwrap());
    assert_eq!(
        a.take(Ns::Locks, "lock").unwrap().as_deref(),
        Some(&b"b"[..])
    );
    assert_eq!(a.take(Ns::Locks, "lock").unwrap(), None);
    assert!(a.put_if_empty(Ns::Locks, "lock", b"a", None).unwrap());
}

#[test]
fn kv_namespaces_are_separate_and_list_is_sorted() {
    let server = RedisServer::start();
    let s = open(&server);
    s.put(Ns::Revoked, "b", b"2", None).unwrap();
    s.put(Ns::Revoked, "a", b"1", None).unwrap();
    s.put(Ns::Revoked, "a", b"one", Some(Duration::from_secs(60)))
        .unwrap();
    s.put(Ns::Claims, "a", b"claim", None).unwrap();
    assert_eq!(
        s.list(Ns::Revoked).unwrap(),
        vec![("a".into(), b"one".to_vec()), ("b".into(), b"2".to_vec())]
    );
    assert_eq!(
        s.get(Ns::Claims, "a").unwrap().as_deref(),
        Some(&b"claim"[..])
    );
    assert_eq!(s.get(Ns::Data, "a").unwrap(), None);
}

#[test]
fn blocking_dequeue_wakes_on_an_enqueue_from_another_connection() {
    let server = RedisServer::start();
    let consumer = open(&server);
    let producer = open(&server);
    let waiter = thread::spawn(move || {
        let mut r = req("c", &["other", "default"], 10);
        r.wait = Duration::from_secs(5);
        let start = Instant::now();
        let got = consumer.dequeue(&r).unwrap();
        (got, start.elapsed())
    });
    thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    enqueue(&*producer, vec![ready("wake", "default", 0)]);
    let (got, waited) = waiter.join().unwrap();
    assert_eq!(payloads(&got), ["wake"]);
    assert!(
        waited < Duration::from_secs(1),
        "woke after {waited:?} (enqueue {:?} before the return)",
        sent.elapsed()
    );
}

#[test]
fn blocking_dequeue_returns_empty_after_its_wait() {
    let server = RedisServer::start();
    let s = open(&server);
    let mut r = req("c", &["default"], 1);
    r.wait = Duration::from_millis(300);
    let start = Instant::now();
    assert!(s.dequeue(&r).unwrap().is_empty());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(290), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

#[test]
fn blocking_dequeue_takes_back_a_lease_that_expires_while_it_waits() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(&*s, vec![ready("m", "default", 0)]);
    let mut short = req("a", &["default"], 1);
    short.lease = Duration::from_millis(200);
    assert_eq!(s.dequeue(&short).unwrap().len(), 1);
    let mut r = req("b", &["default"], 1);
    r.wait = Duration::from_secs(5);
    let start = Instant::now();
    let got = s.dequeue(&r).unwrap();
    assert_eq!(payloads(&got), ["m"]);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn wait_result_wakes_when_the_result_is_written_from_another_connection() {
    let server = RedisServer::start();
    let waiter = open(&server);
    let writer = open(&server);
    let handle = thread::spawn(move || {
        let start = Instant::now();
        let v = waiter
            .wait_result("job", true, Duration::from_secs(5))
            .unwrap();
        (v, start.elapsed(), waiter)
    });
    thread::sleep(Duration::from_millis(200));
    writer
        .apply(&Batch {
            results: vec![ResultPut {
                id: "job".into(),
                value: b"done".to_vec(),
                ttl: None,
            }],
            ..Batch::default()
        })
        .unwrap();
    let (v, waited, waiter) = handle.join().unwrap();
    assert_eq!(v.as_deref(), Some(&b"done"[..]));
    assert!(waited < Duration::from_secs(1), "woke after {waited:?}");
    assert_eq!(waiter.result("job", false).unwrap(), None, "taken");
    // Written before the wait started: returned at once.
    writer
        .apply(&Batch {
            results: vec![ResultPut {
                id: "early".into(),
                value: b"e".to_vec(),
                ttl: None,
            }],
            ..Batch::default()
        })
        .unwrap();
    let start = Instant::now();
    let v = waiter
        .wait_result("early", false, Duration::from_secs(5))
        .unwrap();
    assert_eq!(v.as_deref(), Some(&b"e"[..]));
    assert!(start.elapsed() < Duration::from_millis(500));
    // Nothing written: None after the timeout.
    let start = Instant::now();
    assert_eq!(
        waiter
            .wait_result("never", false, Duration::from_millis(200))
            .unwrap(),
        None
    );
    assert!(start.elapsed() >= Duration::from_millis(190));
}

#[test]
fn two_waiters_on_one_result_both_wake() {
    let server = RedisServer::start();
    let writer = open(&server);
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let s = open(&server);
            thread::spawn(move || {
                let start = Instant::now();
                let v = s.wait_result("job", false, Duration::from_secs(5)).unwrap();
                (v, start.elapsed())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    writer
        .apply(&Batch {
            results: vec![ResultPut {
                id: "job".into(),
                value: b"v".to_vec(),
                ttl: None,
            }],
            ..Batch::default()
        })
        .unwrap();
    for w in waiters {
        let (v, waited) = w.join().unwrap();
        assert_eq!(v.as_deref(), Some(&b"v"[..]));
        assert!(waited < Duration::from_secs(1), "woke after {waited:?}");
    }
}

#[test]
fn result_take_deletes_and_preserve_keeps_and_ttl_expires() {
    let server = RedisServer::start();
    let s = open(&server);
    let put = |id: &str, ttl| ResultPut {
        id: id.into(),
        value: id.as_bytes().to_vec(),
        ttl,
    };
    s.apply(&Batch {
        results: vec![
            put("keep", None),
            put("take", None),
            put("brief", Some(Duration::from_millis(150))),
        ],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.counts().unwrap().results, 3);
    assert_eq!(
        s.result("keep", false).unwrap().as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(
        s.result("keep", false).unwrap().as_deref(),
        Some(&b"keep"[..])
    );
    assert_eq!(
        s.result("take", true).unwrap().as_deref(),
        Some(&b"take"[..])
    );
    assert_eq!(s.result("take", true).unwrap(), None);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(s.result("brief", false).unwrap(), None);
    assert_eq!(s.counts().unwrap().results, 1);
    assert!(s.delete_result("keep").unwrap());
    assert!(!s.delete_result("keep").unwrap());
    assert_eq!(s.counts().unwrap().results, 0);
}

#[test]
fn counts_report_each_part() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(
        &*s,
        vec![ready("1", "a", 0), ready("2", "a", 0), ready("3", "b", 0)],
    );
    s.apply(&Batch {
        schedule: vec![Scheduled {
            eta_ms: u64::MAX / 4,
            ready: ready("s", "a", 0),
        }],
        ..Batch::default()
    })
    .unwrap();
    s.dequeue(&req("c", &["a"], 1)).unwrap();
    let c = s.counts().unwrap();
    assert_eq!(
        (c.ready, c.scheduled, c.in_flight, c.results, c.dead),
        (2, 1, 1, 0, 0)
    );
}

#[test]
fn flush_empties_only_the_parts_chosen() {
    let server = RedisServer::start();
    let s = open(&server);
    let fill = || {
        s.apply(&Batch {
            enqueue: vec![ready("r", "default", 0), ready("r2", "other", 0)],
            schedule: vec![Scheduled {
                eta_ms: 5,
                ready: ready("s", "default", 0),
            }],
            results: vec![ResultPut {
                id: "res".into(),
                value: b"v".to_vec(),
                ttl: None,
            }],
            dead: vec![DeadPut {
                id: "d".into(),
                queue: "default".into(),
                payload: b"d".to_vec(),
                error: "e".into(),
            }],
            ..Batch::default()
        })
        .unwrap();
        s.dequeue(&req("c", &["default"], 1)).unwrap();
        s.put(Ns::Locks, "l", b"1", None).unwrap();
        s.put(Ns::Revoked, "r", b"1", None).unwrap();
        s.incr("counter", 3).unwrap();
    };
    fill();
    s.flush(Flush {
        queue: true,
        ..Flush::default()
    })
    .unwrap();
    let c = s.counts().unwrap();
    assert_eq!(
        (c.ready, c.in_flight, c.scheduled, c.results, c.dead),
        (0, 0, 1, 1, 1)
    );
    s.flush(Flush {
        schedule: true,
        results: true,
        ..Flush::default()
    })
    .unwrap();
    let c = s.counts().unwrap();
    assert_eq!((c.scheduled, c.results, c.dead), (0, 0, 1));
    assert_eq!(s.result("res", false).unwrap(), None);
    s.flush(Flush {
        locks: true,
        ..Flush::default()
    })
    .unwrap();
    assert_eq!(s.get(Ns::Locks, "l").unwrap(), None);
    assert_eq!(s.get(Ns::Revoked, "r").unwrap().as_deref(), Some(&b"1"[..]));
    s.flush(Flush {
        kv: true,
        dead: true,
        ..Flush::default()
    })
    .unwrap();
    assert_eq!(s.get(Ns::Revoked, "r").unwrap(), None);
    assert_eq!(s.counts().unwrap().dead, 0);
    assert_eq!(s.incr("counter", 1).unwrap(), 1);
    fill();
    s.flush(Flush::all()).unwrap();
    assert_eq!(s.counts().unwrap(), storage::Counts::default());
    assert!(s.list(Ns::Locks).unwrap().is_empty());
    // Nothing of this app is left but the sequence counter and the (empty) counters.
    let keys = server.command("DBSIZE");
    assert!(keys == ":1" || keys == ":2", "{keys}");
}

#[test]
fn extend_keeps_a_lease_alive() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(&*s, vec![ready("m", "default", 0)]);
    let mut short = req("a", &["default"], 1);
    short.lease = Duration::from_millis(300);
    let got = s.dequeue(&short).unwrap();
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(150));
        s.extend(
            &[got[0].lease.clone(), Lease("9:9".into())],
            Duration::from_millis(300),
        )
        .unwrap();
    }
    assert!(s.dequeue(&req("b", &["default"], 1)).unwrap().is_empty());
    assert_eq!(s.counts().unwrap().in_flight, 1);
    ack(&*s, &got);
    assert_eq!(s.counts().unwrap(), storage::Counts::default());
}

#[test]
fn release_makes_the_message_ready_at_once_in_its_old_place() {
    let server = RedisServer::start();
    let s = open(&server);
    enqueue(
        &*s,
        vec![ready("first", "default", 0), ready("second", "default", 0)],
    );
    let got = s.dequeue(&req("a", &["default"], 1)).unwrap();
    assert_eq!(payloads(&got), ["first"]);
    s.release(&[got[0].lease.clone()]).unwrap();
    // A second release of the same lease does nothing.
    s.release(&[got[0].lease.clone()]).unwrap();
    let again = s.dequeue(&req("b", &["default"], 2)).unwrap();
    assert_eq!(payloads(&again), ["first", "second"]);
    assert_eq!(again[0].deliveries, 2);
    // The released lease can no longer ack.
    ack(&*s, &got);
    assert_eq!(s.counts().unwrap().in_flight, 2);
}

#[test]
fn counters_add_up_across_handles() {
    let server = RedisServer::start();
    let a = open(&server);
    let b = open(&server);
    assert_eq!(a.incr("n", 1).unwrap(), 1);
    assert_eq!(b.incr("n", 5).unwrap(), 6);
    assert_eq!(a.incr("n", -10).unwrap(), -4);
    assert_eq!(a.incr("other", 0).unwrap(), 0);
}

#[test]
fn two_apps_on_one_server_do_not_see_each_other() {
    let server = RedisServer::start();
    let one = storage::open(&server.url(), "one").unwrap();
    let two = storage::open(&server.url(), "two").unwrap();
    enqueue(&*one, vec![ready("m", "default", 0)]);
    one.put(Ns::Locks, "l", b"1", None).unwrap();
    one.apply(&Batch {
        results: vec![ResultPut {
            id: "r".into(),
            value: b"v".to_vec(),
            ttl: None,
        }],
        ..Batch::default()
    })
    .unwrap();
    one.incr("c", 1).unwrap();
    assert_eq!(two.counts().unwrap(), storage::Counts::default());
    assert!(two.dequeue(&req("c", &["default"], 1)).unwrap().is_empty());
    assert!(two.list(Ns::Locks).unwrap().is_empty());
    assert_eq!(two.result("r", false).unwrap(), None);
    assert_eq!(two.incr("c", 1).unwrap(), 1);
    two.flush(Flush::all()).unwrap();
    assert_eq!(one.counts().unwrap().ready, 1);
    assert_eq!(one.counts().unwrap().results, 1);
}

#[test]
fn unix_socket_urls_work() {
    let server = RedisServer::start();
    let s = storage::open(&server.unix_url(), "test").unwrap();
    enqueue(&*s, vec![ready("m", "default", 0)]);
    assert_eq!(s.backend(), "redis");
    assert_eq!(open(&server).counts().unwrap().ready, 1);
}

#[test]
fn unreachable_redis_gives_a_clear_error() {
    let port = common::redis_server::free_port();
    let err = match storage::open(&format!("redis://127.0.0.1:{port}/0"), "test") {
        Ok(_) => panic!("opened a Redis that does not run"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Storage {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    let tls = storage::open(&format!("rediss://127.0.0.1:{port}/0"), "test");
    assert!(matches!(tls, Err(Error::Storage { .. })), "{:?}", tls.err());
}

#[test]
fn bad_urls_are_rejected() {
    for url in [
        "redis://",
        "redis://host:notaport/0",
        "redis://127.0.0.1:1/db",
    ] {
        match storage::open(url, "test") {
            Err(Error::StorageUrl { .. }) => {}
            Err(e) => panic!("{url}: {e:?}"),
            Ok(_) => panic!("{url}: opened"),
        }
    }
}

#[test]
fn restarted_server_keeps_the_queue_and_the_handle_reconnects() {
    let mut server = RedisServer::start_persistent();
    let s = open(&server);
    enqueue(
        &*s,
        (0..10)
            .map(|i| ready(&format!("m{i}"), "default", 0))
            .collect(),
    );
    let got = s.dequeue(&req("c", &["default"], 3)).unwrap();
    ack(&*s, &got[..2]);
    server.restart();
    // The first call may fail on a connection the restart broke; it must say so, not panic.
    let mut errors = 0;
    let counts = loop {
        match s.counts() {
            Ok(c) => break c,
            Err(e) => {
                assert!(e.to_string().contains("Redis"), "{e}");
                errors += 1;
                assert!(errors < 5, "still failing: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!((counts.ready, counts.in_flight), (7, 1));
    // The lease survived: acking it still works, the rest drains in order.
    ack(&*s, &got[2..]);
    let rest = s.dequeue(&req("c", &["default"], 100)).unwrap();
    assert_eq!(
        payloads(&rest),
        (3..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    ack(&*s, &rest);
    assert_eq!(s.counts().unwrap(), storage::Counts::default());
}

#[test]
fn a_failed_batch_is_reported_and_can_be_retried_after_a_restart() {
    let mut server = RedisServer::start_persistent();
    let s = open(&server);
    enqueue(&*s, vec![ready("a", "default", 0)]);
    let got = s.dequeue(&req("c", &["default"], 1)).unwrap();
    server.kill();
    let batch = Batch {
        ack: vec![got[0].lease.clone()],
        results: vec![ResultPut {
            id: "a".into(),
            value: b"ok".to_vec(),
            ttl: None,
        }],
        ..Batch::default()
    };
    let err = s.apply(&batch.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Storage {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    server.restart();
    let mut tries = 0;
    while let Err(e) = s.apply(&batch.clone()) {
        tries += 1;
        assert!(tries < 5, "{e}");
    }
    assert_eq!(s.result("a", false).unwrap().as_deref(), Some(&b"ok"[..]));
    assert_eq!(s.counts().unwrap().in_flight, 0);
}

/// Rough numbers, printed: `cargo test --release --test storage_redis -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_drain_and_round_trip_latency() {
    let server = RedisServer::start();
    let s = open(&server);
    let n = 20_000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        enqueue(
            &*s,
            chunk
                .iter()
                .map(|i| Ready {
                    id: format!("id-{i}"),
                    queue: "default".into(),
                    priority: 0,
                    payload: vec![7u8; 120],
                })
                .collect(),
        );
    }
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let got = s.dequeue(&req("c", &["default"], 64)).unwrap();
        done += got.len();
        s.apply(&Batch {
            ack: got.iter().map(|d| d.lease.clone()).collect(),
            results: got
                .iter()
                .map(|d| ResultPut {
                    id: format!("r{}", d.lease.0),
                    value: b"ok".to_vec(),
                    ttl: Some(Duration::from_secs(60)),
                })
                .collect(),
            ..Batch::default()
        })
        .unwrap();
    }
    let took = start.elapsed();
    println!(
        "drain: {n} messages in {took:?} ({:.0}/s), batches of 64, 2 round trips per batch",
        n as f64 / took.as_secs_f64()
    );

    // enqueue -> dequeue -> ack + result -> wait_result, one message at a time.
    let worker = open(&server);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let w = thread::spawn(move || {
        let mut r = req("w", &["lat"], 1);
        r.wait = Duration::from_millis(200);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            for d in worker.dequeue(&r).unwrap() {
                worker
                    .apply(&Batch {
                        ack: vec![d.lease.clone()],
                        results: vec![ResultPut {
                            id: String::from_utf8(d.payload.clone()).unwrap(),
                            value: b"ok".to_vec(),
                            ttl: None,
                        }],
                        ..Batch::default()
                    })
                    .unwrap();
            }
        }
    });
    let mut lat = Vec::new();
    for i in 0..1000 {
        let id = format!("lat-{i}");
        let t = Instant::now();
        enqueue(&*s, vec![ready(&id, "lat", 0)]);
        s.wait_result(&id, true, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        lat.push(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.join().unwrap();
    lat.sort();
    println!(
        "enqueue->result: p50 {:?}, p99 {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100]
    );
}

#[test]
fn concurrent_consumers_get_each_message_once() {
    let server = RedisServer::start();
    let producer = open(&server);
    let n = 2000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        enqueue(
            &*producer,
            chunk
                .iter()
                .map(|i| ready(&format!("m{i}"), "default", i % 3))
                .collect(),
        );
    }
    let consumers: Vec<_> = (0..4)
        .map(|c| {
            let s = open(&server);
            thread::spawn(move || {
                let mut r = req(&format!("c{c}"), &["default"], 16);
                r.wait = Duration::from_millis(100);
                let mut seen = Vec::new();
                loop {
                    let got = s.dequeue(&r).unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    ack(&*s, &got);
                    seen.extend(payloads(&got));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(producer.counts().unwrap(), storage::Counts::default());
}
