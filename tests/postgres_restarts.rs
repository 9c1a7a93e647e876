//! A Postgres server stopped and started again under calls that wait: a result wait (a
//! producer's `TaskResult::wait`, `hueyd result --wait`) and the watch of async result waiters
//! ride through the outage and return the result written after it, within their timeout.
//! Each test runs its own server (the others of this binary would see the restart).
#[macro_use]
mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::pg_server::PgServer;
use common::suite::put_result;
use huey::storage::{self, Storage};

fn open(url: &str) -> Arc<dyn Storage> {
    storage::open(url, "test").expect("open the test postgres")
}

/// Wait (up to 30 s) until `listening` connections of the storage's schema wait on the server:
/// the waiters' listener is up, so they block on it rather than on a poll.
fn wait_listening(own: &PgServer, schema: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'huey/{schema}' \
         AND query LIKE 'LISTEN%'"
    );
    while own.psql(&sql) == "0" {
        assert!(Instant::now() < deadline, "the waiters never listened");
        thread::sleep(Duration::from_millis(20));
    }
}

/// While the server is down, take its port and hang up on `attempts` connections (the
/// waiters' and their listener's): the waiters have met the outage, more than once.
fn stand_in_while_down(port: u16, attempts: usize) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < attempts {
        assert!(
            Instant::now() < deadline,
            "only {seen} connection attempts while down"
        );
        match listener.accept() {
            Ok((conn, _)) => {
                drop(conn);
                seen += 1;
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Waiters blocked on results while the server restarts get their results, written after the
/// restart: the outage is no answer while their timeout lasts (before, a wait returned the
/// first connection error it met, a second into a 60-second wait).
#[test]
fn result_waits_ride_through_a_server_restart() {
    let mut own = PgServer::start();
    let url = format!("{}?schema=waits", own.url());
    let s = open(&url);
    let waiter = |id: &'static str, take: bool| {
        let s = s.clone();
        thread::spawn(move || s.wait_result(id, take, Duration::from_secs(60)))
    };
    let taker = waiter("r1", true);
    let reader = waiter("r2", false);
    let watcher = {
        let s = s.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let ids = vec!["r3".to_string()];
                let left = deadline.saturating_duration_since(Instant::now());
                match s.watch_results("w", &|| ids.clone(), left) {
                    Ok(ready) if !ready.is_empty() => return Ok(ready),
                    Ok(_) if Instant::now() < deadline => continue,
                    other => return other,
                }
            }
        })
    };
    wait_listening(&own, "waits");
    own.kill();
    stand_in_while_down(own.port(), 6);
    own.restart();
    let writer = open(&url);
    for id in ["r1", "r2", "r3"] {
        put_result(&*writer, id, id.as_bytes(), None);
    }
    let took = taker.join().unwrap();
    let read = reader.join().unwrap();
    let watched = watcher.join().unwrap();
    assert_eq!(took.unwrap(), Some(b"r1".to_vec()), "the take's wait");
    assert_eq!(read.unwrap(), Some(b"r2".to_vec()), "the read's wait");
    assert_eq!(watched.unwrap(), vec!["r3".to_string()], "the watch");
    assert_eq!(writer.result("r1", false).unwrap(), None, "taken");
    assert_eq!(writer.result("r2", false).unwrap(), Some(b"r2".to_vec()));
}

/// A wait whose server stays down past its timeout returns the connection error, not `None`
/// (nothing says there is no result) and not later than its timeout by much.
#[test]
fn a_result_wait_on_a_server_that_stays_down_ends_with_the_error_at_its_timeout() {
    let mut own = PgServer::start();
    let url = format!("{}?schema=down", own.url());
    let s = open(&url);
    assert_eq!(s.result("x", false).unwrap(), None);
    own.kill();
    let started = Instant::now();
    let out = s.wait_result("x", true, Duration::from_secs(2));
    let took = started.elapsed();
    let err = out.expect_err("no server: an error").to_string();
    assert!(err.contains("postgres"), "{err}");
    assert!(took < Duration::from_secs(20), "returned after {took:?}");
}
