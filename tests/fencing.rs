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
