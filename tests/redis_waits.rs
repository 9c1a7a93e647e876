//! Result waits on Redis: a waiter never misses a result written between its read and its
//! block, also when its connection breaks or the server restarts while it waits (which loses
//! its registration as a waiter, `wt:<id>`).

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use huey::storage::{self, Batch, ResultPut, Storage};

fn open(server: &RedisServer) -> Arc<dyn Storage> {
    storage::open(&server.url(), "test").expect("open the test redis")
}

fn put(s: &dyn Storage, id: &str) {
    s.apply(&Batch {
        results: vec![ResultPut {
            id: id.into(),
            value: b"v".to_vec(),
            ttl: None,
        }],
        ..Batch::default()
    })
    .unwrap();
}

/// Wait until `id` has a registered waiter, then break every client connection and drop the
/// registration, as a server restart does.
fn break_waiters(server: &RedisServer, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = format!("huey:{{test}}:wt:{id}");
    while server.command(&format!("EXISTS {key}")) != ":1" {
        assert!(Instant::now() < deadline, "the waiter never registered");
        thread::sleep(Duration::from_millis(5));
    }
    // Let the waiter enter its BLPOP.
    let blocked = Instant::now() + Duration::from_secs(10);
    while !client_list(server).contains("cmd=blpop") {
        assert!(Instant::now() < blocked, "the waiter never blocked");
        thread::sleep(Duration::from_millis(5));
    }
    server.command(&format!("DEL {key}"));
    server.command("CLIENT KILL TYPE normal");
}

/// `CLIENT LIST`, whole (a bulk reply).
fn client_list(server: &RedisServer) -> String {
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap()
}

/// Before: the broken `BLPOP` was repeated on a fresh connection without registering again,
/// so the write woke nobody and the result came only when the wait ran out.
#[test]
fn a_waiter_whose_connection_broke_registers_again() {
    let server = RedisServer::start();
    let s = open(&server);
    let waiter = thread::spawn(move || {
        let v = s.wait_result("job", false, Duration::from_secs(30));
        (v, Instant::now())
    });
    break_waiters(&server, "job");
    // The waiter registers again on a fresh connection; then the result is written.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.command("EXISTS huey:{test}:wt:job") != ":1" {
        assert!(
            Instant::now() < deadline,
            "the waiter never registered again"
        );
        thread::sleep(Duration::from_millis(5));
    }
    put(&*open(&server), "job");
    let written = Instant::now();
    let (v, at) = waiter.join().unwrap();
    assert_eq!(v.unwrap().as_deref(), Some(&b"v"[..]));
    let lag = at.saturating_duration_since(written);
    assert!(lag < Duration::from_secs(5), "woke {lag:?} after the write");
}

/// The async waiters' watcher (`watch_results`): before, it kept believing itself registered
/// for a minute after its connection broke, and missed the results written meanwhile.
#[test]
fn the_watcher_registers_again_after_its_connection_broke() {
    let server = RedisServer::start();
    let s = open(&server);
    let watcher = thread::spawn(move || {
        let pending = || vec!["job".to_string()];
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            // As the async waiters' watcher thread does: short watches, errors pass.
            if let Ok(ids) = s.watch_results("w1", &pending, Duration::from_secs(1)) {
                if !ids.is_empty() {
                    return Some(Instant::now());
                }
            }
        }
        None
    });
    break_waiters(&server, "job");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.command("EXISTS huey:{test}:wt:job") != ":1" {
        assert!(
            Instant::now() < deadline,
            "the watcher never registered again"
        );
        thread::sleep(Duration::from_millis(5));
    }
    put(&*open(&server), "job");
    let written = Instant::now();
    let at = watcher
        .join()
        .unwrap()
        .expect("the watcher never saw the result");
    let lag = at.saturating_duration_since(written);
    assert!(
        lag < Duration::from_secs(5),
        "saw it {lag:?} after the write"
    );
}

/// The race, hard: 3,600 waits, each on a result written 0–400 µs after the wait began (so
/// many land between the waiter's read and its block), by six pairs at once, a third of them
/// taking the result. Every waiter wakes on the write, none at the end of its wait.
#[test]
fn thousands_of_waits_racing_their_writes_all_wake() {
    let server = RedisServer::start();
    let pairs: Vec<_> = (0..6)
        .map(|p| {
            let writer = open(&server);
            let s = open(&server);
            thread::spawn(move || {
                let mut late = Vec::new();
                for i in 0..600u64 {
                    let id = format!("{p}-{i}");
                    let (s2, id2) = (s.clone(), id.clone());
                    let waiter = thread::spawn(move || {
                        let v = s2.wait_result(&id2, i % 3 == 0, Duration::from_secs(4));
                        (v, Instant::now())
                    });
                    let spin = Duration::from_micros((i * 7919) % 400);
                    let start = Instant::now();
                    while start.elapsed() < spin {}
                    put(&*writer, &id);
                    let written = Instant::now();
                    let (v, at) = waiter.join().unwrap();
                    assert_eq!(v.unwrap().as_deref(), Some(&b"v"[..]));
                    let lag = at.saturating_duration_since(written);
                    if lag > Duration::from_millis(900) {
                        late.push((id, lag));
                    }
                }
                late
            })
        })
        .collect();
    let late: Vec<_> = pairs.into_iter().flat_map(|p| p.join().unwrap()).collect();
    assert!(late.is_empty(), "{} woke late: {late:?}", late.len());
}
