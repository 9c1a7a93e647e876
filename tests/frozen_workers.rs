//! Frozen process workers: a worker that stops sending anything (SIGSTOP here; a hang outside
//! task code looks the same) is killed and replaced after `--worker-stall-timeout`, and its
//! tasks run again elsewhere. A worker busy with a long CPU-bound task keeps sending
//! heartbeats and is left alone, and so is one stopped and continued within the timeout.
//! Real consumers, real worker processes, real signals, on SQLite and Redis.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::hueyd::{wait_until, Backend, Kind};
use huey::{Huey, Task};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

/// Whether a process is gone, or a zombie nobody has reaped yet.
fn dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

fn runs(app: &Huey, id: &str) -> i64 {
    app.storage().incr(&format!("runs:{id}"), 0).unwrap()
}

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap();
}

/// SIGSTOP the only worker while it runs tasks that have no timeout: after the stall timeout
/// it is killed (its pid is gone), a new worker starts, and every task completes, the ones it
/// was running on a second run.
fn a_frozen_worker_is_replaced(b: Backend, kind: Kind) {
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1", "--worker-stall-timeout", "2"]);
    let frozen = h.wait_workers(1, LONG)[0];
    let record: Task<u64, u32> = Task::from_name(&app, kind.task("record")).unwrap();
    let tasks = record.enqueue_many([3_000, 3_000, 3_000]).unwrap();
    // The first is running (on a concurrent worker, all three are).
    let first = tasks[0].id().to_string();
    assert!(wait_until(LONG, || runs(&app, &first) == 1), "{}", h.log());
    if kind.concurrent() {
        let all = || tasks.iter().all(|t| runs(&app, t.id()) == 1);
        assert!(wait_until(LONG, all), "{}", h.log());
    }
    let running: Vec<bool> = tasks.iter().map(|t| runs(&app, t.id()) == 1).collect();
    let stopped = Instant::now();
    signal(frozen, Signal::SIGSTOP);
    assert!(
        wait_until(LONG, || dead(frozen)),
        "frozen worker {frozen} still there: {}",
        h.log()
    );
    println!("frozen worker killed after {:?}", stopped.elapsed());
    assert!(h.wait_log("frozen?", LONG), "{}", h.log());
    let log = h.log();
    assert!(log.contains(&format!("worker={frozen}")), "{log}");
    for (t, was_running) in tasks.iter().zip(running) {
        let ran = t.wait(LONG).unwrap_or_else(|e| panic!("{e}: {}", h.log()));
        // A task the frozen worker was running ran again; none was lost or run a third time.
        let expected = if was_running { 2 } else { 1 };
        assert_eq!(ran, expected, "{}", h.log());
    }
    let now = h.wait_workers(1, LONG);
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], frozen);
}

/// A worker busy in a CPU-bound task for several stall timeouts goes on sending heartbeats:
/// it is not killed and its task completes on the first run.
fn a_busy_worker_is_not_taken_for_frozen(b: Backend, kind: Kind) {
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1", "--worker-stall-timeout", "2"]);
    let worker = h.wait_workers(1, LONG)[0];
    let spin: Task<u64, u32> = Task::from_name(&app, "spin").unwrap();
    let pid = spin.enqueue(7_000).unwrap().wait(LONG).unwrap();
    assert_eq!(pid as i32, worker, "{}", h.log());
    assert!(!dead(worker));
    assert!(!h.log().contains("frozen?"), "{}", h.log());
}

/// A worker stopped for less than the stall timeout and continued is left alone: its task
/// completes on its first run, in the same process.
fn a_short_stop_is_not_a_freeze(b: Backend, kind: Kind) {
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1", "--worker-stall-timeout", "4"]);
    let worker = h.wait_workers(1, LONG)[0];
    let record: Task<u64, u32> = Task::from_name(&app, kind.task("record")).unwrap();
    let r = record.enqueue(2_000).unwrap();
    assert!(wait_until(LONG, || runs(&app, r.id()) == 1), "{}", h.log());
    signal(worker, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1_500));
    signal(worker, Signal::SIGCONT);
    assert_eq!(r.wait(LONG).unwrap(), 1, "{}", h.log());
    assert!(!dead(worker));
    assert!(!h.log().contains("frozen?"), "{}", h.log());
    assert_eq!(h.workers(), vec![worker]);
}

macro_rules! on_each {
    ($($name:ident => $f:ident($backend:ident, $kind:ident);)*) => {
        $(
            #[test]
            fn $name() {
                $f(Backend::$backend(), Kind::$kind);
            }
        )*
    };
}

on_each! {
    sqlite_process_frozen_worker_is_replaced => a_frozen_worker_is_replaced(sqlite, Process);
    sqlite_concurrent_frozen_worker_is_replaced => a_frozen_worker_is_replaced(sqlite, ProcessConcurrent);
    redis_process_frozen_worker_is_replaced => a_frozen_worker_is_replaced(redis, Process);
    redis_concurrent_frozen_worker_is_replaced => a_frozen_worker_is_replaced(redis, ProcessConcurrent);
    sqlite_process_busy_worker_is_not_frozen => a_busy_worker_is_not_taken_for_frozen(sqlite, Process);
    sqlite_concurrent_busy_worker_is_not_frozen => a_busy_worker_is_not_taken_for_frozen(sqlite, ProcessConcurrent);
    redis_process_busy_worker_is_not_frozen => a_busy_worker_is_not_taken_for_frozen(redis, Process);
    sqlite_process_short_stop_is_not_a_freeze => a_short_stop_is_not_a_freeze(sqlite, Process);
    sqlite_concurrent_short_stop_is_not_a_freeze => a_short_stop_is_not_a_freeze(sqlite, ProcessConcurrent);
    redis_process_short_stop_is_not_a_freeze => a_short_stop_is_not_a_freeze(redis, Process);
}
