//! Async attempts that misbehave while they are cancelled, on real consumers: a future holding
//! a value whose `Drop` panics, cut short at its timeout or by a revoke. The attempt still
//! ends as `Timeout` or `Revoked` at once (not by the supervisor's backstop seconds later),
//! the worker and its other attempts go on, and a stop afterwards is not held up.

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::{Backend, Kind};
use huey::{Error, FailureKind, Huey, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

fn task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Task<A, R> {
    Task::from_name(app, name).unwrap()
}

fn runner_pid(app: &Huey) -> u32 {
    let pid: Task<(), u32> = task(app, "async_pid");
    pid.enqueue(()).unwrap().wait(LONG).unwrap()
}

fn failure<R: serde::de::DeserializeOwned + std::fmt::Debug>(
    r: &huey::TaskResult<R>,
    h: &common::hueyd::Hueyd,
) -> huey::TaskError {
    match r.wait(LONG) {
        Err(Error::Task(e)) => e,
        other => panic!("expected a task failure, got {other:?}: {}", h.log()),
    }
}

fn a_panic_in_drop_while_cancelled_ends_the_attempt_as_cancelled(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let mut h = kind.testbed(&b.url(), &["-w", "1", "-c", "0.2"]);
    let before = runner_pid(&app);
    let sleep: Task<u64, u64> = task(&app, "async_sleep");
    let bomb: Task<u64, u64> = task(&app, "async_drop_panic");
    // Runs beside the cancelled ones, in the same runtime (the same process), throughout.
    let other = sleep.enqueue(12_000).unwrap();
    assert!(
        h.wait_log(&format!("id={}", other.id()), LONG),
        "{}",
        h.log()
    );

    let timed_out = bomb
        .call(600_000)
        .timeout(Duration::from_millis(300))
        .enqueue()
        .unwrap();
    let e = failure(&timed_out, &h);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    // Ended by the worker's own timer, not given up on by the supervisor 5 s later.
    assert!(e.message.contains("future was dropped"), "{e}: {}", h.log());
    assert!(e.message.contains("panicked in drop"), "{e}");

    let revoked = bomb.enqueue(600_000).unwrap();
    assert!(
        h.wait_log(&format!("id={}", revoked.id()), LONG),
        "{}",
        h.log()
    );
    revoked.revoke().unwrap();
    let e = failure(&revoked, &h);
    assert_eq!(e.kind, FailureKind::Revoked, "{e}");
    assert!(e.message.contains("future was dropped"), "{e}: {}", h.log());

    assert_eq!(other.wait(LONG).unwrap(), 12_000, "{}", h.log());
    assert_eq!(runner_pid(&app), before, "no process was killed");
    assert!(!h.log().contains("did not stop"), "{}", h.log());

    // Nothing is left running: a stop ends at once, its shutdown hooks run.
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(LONG).expect("exits");
    assert!(status.success(), "{status:?}: {}", h.log());
    assert!(
        !h.log().contains("shutdown hooks still running"),
        "{}",
        h.log()
    );
}

#[test]
fn a_panic_in_drop_while_cancelled_on_an_async_worker() {
    a_panic_in_drop_while_cancelled_ends_the_attempt_as_cancelled(Kind::Async);
}

#[test]
fn a_panic_in_drop_while_cancelled_in_a_concurrent_process_worker() {
    a_panic_in_drop_while_cancelled_ends_the_attempt_as_cancelled(Kind::ProcessConcurrent);
}

/// On `-k async`, tasks that block every runtime thread hold up the other attempts past their
/// timeouts; the supervisor records those as timed out (and retries them) after its grace. The
/// attempts it gave up on must not run once a thread is free again: each retried task ran
/// once, by its retry.
#[test]
fn an_attempt_given_up_on_an_async_worker_never_runs_afterwards() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::Async.testbed(&b.url(), &["-w", "200"]);
    runner_pid(&app);
    // One per runtime thread (the runtime has one per CPU): every thread blocks.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let block: Task<u64, u64> = task(&app, "async_block");
    let blocks = block
        .enqueue_many(std::iter::repeat_n(15_000, cpus))
        .unwrap();
    assert!(
        common::hueyd::wait_until(LONG, || h.log().matches("without yielding").count() == cpus),
        "{}",
        h.log()
    );
    let record: Task<u64, u32> = task(&app, "async_record");
    let held: Vec<_> = (0..10)
        .map(|_| {
            let call = record.call(10).timeout(Duration::from_secs(1));
            call.enqueue().unwrap()
        })
        .collect();
    for r in &blocks {
        assert_eq!(r.wait(LONG).unwrap(), 15_000);
    }
    assert!(h.log().contains("given up on"), "{}", h.log());
    for r in &held {
        assert_eq!(r.wait(LONG).unwrap(), 1, "{}", h.log());
        let runs = app.storage().incr(&format!("runs:{}", r.id()), 0).unwrap();
        assert_eq!(runs, 1, "an attempt given up on ran anyway");
    }
}
