//! The storage cases, and behaviour only Redis shows, against real `redis-server` processes
//! started per test.

#[macro_use]
mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use huey::storage::{self, Batch, Flush, Ns, Ready, ResultPut, Storage};
use huey::Error;

use common::suite::{enqueue, names as payloads, ready, LONG_LEASE};

fn req(consumer: &str, queues: &[&str], max: usize) -> storage::DequeueRequest {
    common::suite::request(consumer, queues, max, LONG_LEASE)
}

fn ack(s: &dyn Storage, ds: &[storage::Delivery]) {
    common::suite::ack(s, ds.iter().map(|d| d.lease.clone()).collect());
}

/// The storage cases, against Redis.
#[path = "common/cases/mod.rs"]
mod cases;

/// New connections to one private server (started per test).
fn factory() -> impl Fn() -> Arc<dyn Storage> {
    let server = RedisServer::start();
    move || open(&server)
}

fn open(server: &RedisServer) -> Arc<dyn Storage> {
    storage::open(&server.url(), "test").expect("open the test redis")
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

/// The shared result watcher (behind `wait_async`) learns of every result written while it
/// was not watching in one call, not one call per result: with thousands of ids watched each
/// call is costly, and a wake-up left waiting behind the others long enough expired (10,000
/// waiters took 62 s to be woken instead of 6 s).
#[test]
fn one_watch_returns_every_result_written_since_the_last() {
    let server = RedisServer::start();
    let s = open(&server);
    let ids: Vec<String> = (0..5).map(|i| format!("job{i}")).collect();
    let pending = || ids.clone();
    // Registers as the waiter of every id; nothing is there yet.
    let first = s
        .watch_results("w", &pending, Duration::from_millis(50))
        .unwrap();
    assert!(first.is_empty(), "{first:?}");
    let results = ids
        .iter()
        .map(|id| ResultPut {
            id: id.clone(),
            value: b"v".to_vec(),
            ttl: None,
        })
        .collect();
    s.apply(&Batch {
        results,
        ..Batch::default()
    })
    .unwrap();
    let mut woken = s
        .watch_results("w", &pending, Duration::from_secs(5))
        .unwrap();
    woken.sort();
    assert_eq!(woken, ids);
}

/// A result write wakes only registered waiters (one `EXISTS` when there are none): a waiter
/// registers in the same step as its read, and a shorter wait that registers later does not cut
/// a longer one's registration short, so the long waiter still wakes at once.
#[test]
fn a_long_waiter_wakes_after_a_short_one_gave_up() {
    let server = RedisServer::start();
    let writer = open(&server);
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let waiter_ttl = |con: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL")
            .arg("huey:{test}:wt:job")
            .query(con)
            .unwrap()
    };
    let s = open(&server);
    let long = thread::spawn(move || {
        let start = Instant::now();
        let v = s
            .wait_result("job", false, Duration::from_secs(20))
            .unwrap();
        (v, start.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiter_ttl(&mut con) < 0 {
        assert!(
            Instant::now() < deadline,
            "the long waiter never registered"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        writer
            .wait_result("job", false, Duration::from_millis(50))
            .unwrap(),
        None
    );
    assert!(waiter_ttl(&mut con) > 10_000, "not shortened");
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
    let (v, waited) = long.join().unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    assert!(waited < Duration::from_secs(5), "woke after {waited:?}");
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
        lease: Some(got[0].lease.clone()),
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
        let batches: Vec<Batch> = got
            .iter()
            .map(|d| Batch {
                lease: Some(d.lease.clone()),
                results: vec![ResultPut {
                    id: format!("r{}", d.lease.0),
                    value: b"ok".to_vec(),
                    ttl: Some(Duration::from_secs(60)),
                }],
                ..Batch::default()
            })
            .collect();
        s.apply_all(&batches).unwrap();
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
                        lease: Some(d.lease.clone()),
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

/// Promotion follows the server's clock: a consumer whose clock runs an hour ahead does not
/// promote a task due in ten minutes.
#[test]
fn a_consumer_clock_ahead_cannot_promote_early() {
    let server = factory();
    let s = server();
    let now = huey::clock::now_ms();
    common::suite::schedule(&*s, "later", now + 600_000);
    common::suite::schedule(&*s, "due", now.saturating_sub(1_000));
    assert_eq!(s.promote_due(now + 3_600_000, 100).unwrap(), 1);
    let got = payloads(&s.dequeue(&req("c", &["default"], 10)).unwrap());
    assert_eq!(got, ["due"]);
    assert_eq!(
        s.counts().unwrap().scheduled,
        1,
        "still waiting for its time"
    );
    // A clock behind the server's promotes by its own, later, time (never early).
    assert_eq!(
        s.promote_due(now.saturating_sub(3_600_000), 100).unwrap(),
        0
    );
}

/// A TCP proxy in front of a Redis server that, when told to, swallows the next reply and
/// drops the client's connection: the command ran on the server, its answer never came.
struct LossyProxy {
    port: u16,
    lose_next: Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    fn start(server_port: u16) -> LossyProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lose_next = Arc::new(AtomicBool::new(false));
        let lose = lose_next.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = c_in.read(&mut buf) {
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Both);
                });
                let (mut s_in, mut c_out, lose) = (server, client, lose.clone());
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n @ 1..) = s_in.read(&mut buf) {
                        if lose.swap(false, Ordering::SeqCst) {
                            break; // the reply is lost with the connection
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = s_in.shutdown(Shutdown::Both);
                });
            }
        });
        LossyProxy { port, lose_next }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// An outcome written by the server whose reply was lost (the connection dropped) is an error
/// to the caller, which sends the same batch again: the resend reports it written (so the
/// consumer tells its events, once), and writes nothing a second time.
#[test]
fn a_batch_whose_reply_was_lost_reports_written_when_sent_again() {
    use std::sync::atomic::Ordering;
    let server = RedisServer::start();
    let proxy = LossyProxy::start(server.port());
    let s = storage::open(&proxy.url(), "test").unwrap();
    let direct = open(&server);
    enqueue(
        &*s,
        vec![ready("lost", "default", 0), ready("fine", "default", 0)],
    );
    let ds = s.dequeue(&req("c", &["default"], 2)).unwrap();
    let outcome = |d: &storage::Delivery, tag: &str| Batch {
        lease: Some(d.lease.clone()),
        enqueue: vec![ready(&format!("{tag}-next"), "default", 0)],
        results: vec![ResultPut {
            id: format!("{tag}-result"),
            value: b"r".to_vec(),
            ttl: None,
        }],
        ..Batch::default()
    };
    let lost = outcome(&ds[0], "lost");
    proxy.lose_next.store(true, Ordering::SeqCst);
    assert!(s.apply(&lost).is_err(), "the reply was lost");
    assert!(
        direct.result("lost-result", false).unwrap().is_some(),
        "yet the server wrote it"
    );
    // Sent again, with another outcome: reported written, written once.
    let fine = outcome(&ds[1], "fine");
    assert_eq!(s.apply_all(&[lost.clone(), fine]).unwrap(), [true, true]);
    let c = direct.counts().unwrap();
    assert_eq!((c.ready, c.in_flight, c.results), (2, 0, 2), "no duplicate");
    assert_eq!(
        payloads(&direct.dequeue(&req("d", &["default"], 10)).unwrap()),
        ["lost-next", "fine-next"]
    );
    // A lease lost to another consumer is still fenced, record or not.
    enqueue(&*s, vec![ready("taken", "default", 0)]);
    let mut short = req("c", &["default"], 1);
    short.lease = Duration::from_millis(100);
    let first = s.dequeue(&short).unwrap();
    thread::sleep(Duration::from_millis(200));
    let second = direct.dequeue(&req("d", &["default"], 1)).unwrap();
    assert_eq!(payloads(&second), ["taken"]);
    proxy.lose_next.store(true, Ordering::SeqCst);
    assert!(s.apply(&Batch::ack(first[0].lease.clone())).is_err());
    assert!(
        !s.apply(&Batch::ack(first[0].lease.clone())).unwrap(),
        "fenced"
    );
}

/// Server time of the apply script per outcome, from `INFO commandstats`: 20,000 deliveries
/// acknowledged in calls of 100 outcomes, as bare acks and with a result each. Printed:
/// `cargo test --test storage_redis measure_apply -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_apply_server_time_per_outcome() {
    const N: usize = 20_000;
    let server = RedisServer::start();
    let s = open(&server);
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut script_usec = || -> f64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut con)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
            .map_or(0.0, |u| u.trim().parse().unwrap())
    };
    for with_result in [false, true] {
        for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
            enqueue(
                &*s,
                chunk
                    .iter()
                    .map(|i| ready(&format!("m{i}"), "default", 0))
                    .collect(),
            );
        }
        let mut leases = Vec::new();
        while leases.len() < N {
            let ds = s.dequeue(&req("c", &["default"], 500)).unwrap();
            leases.extend(ds.into_iter().map(|d| d.lease));
        }
        let batches: Vec<Batch> = leases
            .into_iter()
            .enumerate()
            .map(|(i, l)| Batch {
                results: if with_result {
                    vec![ResultPut {
                        id: format!("r{i}"),
                        value: b"42".to_vec(),
                        ttl: Some(Duration::from_secs(60)),
                    }]
                } else {
                    Vec::new()
                },
                ..Batch::ack(l)
            })
            .collect();
        let before = script_usec();
        let t = Instant::now();
        for chunk in batches.chunks(100) {
            assert!(s.apply_all(chunk).unwrap().iter().all(|w| *w));
        }
        let wall = t.elapsed();
        let server_us = script_usec() - before;
        println!(
            "apply, {}: {:.2} µs of server time per outcome ({:.1} ms in all; {:?} wall)",
            if with_result {
                "ack + result"
            } else {
                "ack only"
            },
            server_us / N as f64,
            server_us / 1000.0,
            wall
        );
    }
}

#[test]
fn results_stored_before_the_id_index_are_listed_and_gone_ones_leave_it() {
    let server = RedisServer::start();
    let s = open(&server);
    for id in ["c", "a", "b"] {
        common::suite::put_result(&*s, id, id.as_bytes(), None);
    }
    // As a storage written by a build without the index of ids leaves it.
    server.command("DEL huey:{test}:rids huey:{test}:rids:built");
    let page = s.list_results("", 10).unwrap();
    let ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(server.command("ZCARD huey:{test}:rids"), ":3");
    // Taken, deleted and expired results leave the index (the expired ones with the purge).
    assert!(s.result("a", true).unwrap().is_some());
    assert!(s.delete_result("b").unwrap());
    common::suite::put_result(&*s, "d", b"d", Some(Duration::from_millis(50)));
    thread::sleep(Duration::from_millis(150));
    s.purge_expired(huey::clock::now_ms(), 100).unwrap();
    assert_eq!(server.command("ZCARD huey:{test}:rids"), ":1");
    assert_eq!(
        s.list_results("", 10).unwrap(),
        vec![("c".to_string(), b"c".to_vec())]
    );
}
