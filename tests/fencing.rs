//! An outcome is fenced by its lease, end to end: a consumer frozen (SIGSTOP) past its lease
//! while a failing task with one retry runs; another consumer takes the task over and runs it
//! to its end; when the first wakes (SIGCONT), its outcome (a retry) is fenced off, so the
//! retry does not run a second time.

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::{wait_until, Backend, Hueyd};
use huey::{Error, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

fn runs(app: &huey::Huey, id: &str) -> i64 {
    app.storage().incr(&format!("runs:{id}"), 0).unwrap()
}

fn a_frozen_consumer_does_not_write_a_retry_it_no_longer_owns(b: Backend) {
    let app = b.app();
    let failing: Task<u64, u32> = Task::from_name(&app, "failing").unwrap();
    let args = ["-k", "process", "-w", "1", "--lease", "1"];
    let first = Hueyd::testbed(&b.url(), &args);
    // Attempt 1 sleeps for 2 s: long enough to freeze its consumer while it runs.
    let h = failing.enqueue(2000).unwrap();
    assert!(
        wait_until(LONG, || runs(&app, h.id()) == 1),
        "{}",
        first.log()
    );
    first.signal(Signal::SIGSTOP);

    // The lease (1 s) runs out; another consumer takes the task over: attempt 1 again, then
    // its retry, then the final failure.
    let second = Hueyd::testbed(&b.url(), &args);
    match h.wait(LONG) {
        Err(Error::Task(e)) => assert_eq!(e.attempt, 2, "the retry failed: {e:?}"),
        other => panic!(
            "expected the final failure, got {other:?}\n{}",
            second.log()
        ),
    }
    assert_eq!(
        runs(&app, h.id()),
        3,
        "attempt 1 twice (taken over), its retry once"
    );

    // The first consumer wakes up with the outcome of its attempt 1 (a retry): fenced off.
    first.signal(Signal::SIGCONT);
    let stale = "outcomes not written";
    assert!(
        wait_until(LONG, || first.log().contains(stale)
            || runs(&app, h.id()) > 3),
        "the stale outcome is reported\n{}",
        first.log()
    );
    let c = app.storage().counts().unwrap();
    assert_eq!(
        (c.ready, c.scheduled, c.in_flight),
        (0, 0, 0),
        "no retry was written by the stale outcome"
    );
    assert_eq!(runs(&app, h.id()), 3, "the retry ran once");
}

#[test]
fn a_frozen_consumer_does_not_write_a_retry_it_no_longer_owns_on_sqlite() {
    a_frozen_consumer_does_not_write_a_retry_it_no_longer_owns(Backend::sqlite());
}

#[test]
fn a_frozen_consumer_does_not_write_a_retry_it_no_longer_owns_on_redis() {
    a_frozen_consumer_does_not_write_a_retry_it_no_longer_owns(Backend::redis());
}

/// The most jobs a consumer hands its workers at once, per worker (the pipe depth: the running
/// one and those queued behind it when tasks are fast).
const HANDED_PER_WORKER: i64 = 8;

/// Freeze a consumer (SIGSTOP) at a moment it holds no SQLite write transaction: frozen inside
/// one, it would hold the database's write lock, and no other consumer could take over (a
/// real property of SQLite: a stalled writer stalls everyone until it goes on or dies).
fn freeze_outside_a_write(consumer: &Hueyd, b: &Backend) {
    loop {
        consumer.signal(Signal::SIGSTOP);
        let Backend::Sqlite(dir) = b else { return };
        let c = rusqlite::Connection::open(dir.path().join("huey.db")).unwrap();
        c.busy_timeout(Duration::from_millis(200)).unwrap();
        if c.execute_batch("BEGIN IMMEDIATE; COMMIT").is_ok() {
            return;
        }
        consumer.signal(Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs of every task (from the testbed's `record`).
fn total_runs(app: &huey::Huey, ids: &[String]) -> i64 {
    ids.iter().map(|id| runs(app, id)).sum()
}

/// A consumer with a backlog of fast tasks prefetched is frozen past its lease; another one
/// takes the backlog over and runs it all; when the first thaws, the prefetched tasks it lost
/// are dropped, not run: the only extra runs are of tasks its workers held at the freeze.
fn a_thawed_consumer_drops_the_prefetched_tasks_it_lost(b: Backend, kind: &str) {
    const N: usize = 800;
    const WORKERS: i64 = 2;
    let app = b.app();
    let record: Task<u64, u32> = Task::from_name(&app, "record").unwrap();
    let handles = record.enqueue_many((0..N).map(|_| 1)).unwrap();
    let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
    let args = ["-k", kind, "-w", "2", "--lease", "1"];
    let first = Hueyd::testbed(&b.url(), &args);
    // Once a hundred are done, tasks are known to be fast and a backlog is prefetched.
    assert!(
        wait_until(LONG, || app.storage().counts().unwrap().results >= 100),
        "{}",
        first.log()
    );
    freeze_outside_a_write(&first, &b);
    let second = Hueyd::testbed(&b.url(), &args);
    for h in &handles {
        h.wait(LONG)
            .unwrap_or_else(|e| panic!("{e}\n{}", second.log()));
    }
    let at_thaw = total_runs(&app, &ids) - N as i64;
    first.signal(Signal::SIGCONT);
    let dropped = wait_until(Duration::from_secs(20), || {
        first.log().contains("prefetched tasks dropped")
    });
    // Whatever the first consumer runs after thawing, it runs before a graceful stop ends.
    let mut first = first;
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(LONG).is_some(), "{}", first.log());
    let extra = total_runs(&app, &ids) - N as i64;
    eprintln!("{kind}: {extra} extra runs ({at_thaw} of them before the thaw)");
    assert!(
        extra <= WORKERS * HANDED_PER_WORKER,
        "{extra} extra runs: more than the workers held at the freeze\n{}",
        first.log()
    );
    assert!(dropped, "{}", first.log());
}

#[test]
fn a_thawed_consumer_drops_the_prefetched_tasks_it_lost_on_sqlite() {
    a_thawed_consumer_drops_the_prefetched_tasks_it_lost(Backend::sqlite(), "process");
}

#[test]
fn a_thawed_consumer_drops_the_prefetched_tasks_it_lost_on_redis() {
    a_thawed_consumer_drops_the_prefetched_tasks_it_lost(Backend::redis(), "thread");
}
