//! The consumer as a user runs it: the real `hueyd` binary, real worker processes and threads,
//! real signals, on SQLite, Redis and Postgres.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::hueyd::{wait_until, Backend, Hueyd, Kind};
use huey::{Error, FailureKind, Huey, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

/// A typed handle on one of the demo tasks the producer's app registered.
fn task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Task<A, R> {
    Task::from_name(app, name).unwrap()
}

/// A consumer of `kind` that runs exactly two attempts at once.
fn two_at_once(kind: Kind, url: &str) -> Hueyd {
    match kind {
        Kind::ProcessConcurrent => {
            Hueyd::testbed(url, &["-k", "process", "-w", "1", "--concurrency", "2"])
        }
        _ => kind.start(url, &["-w", "2"]),
    }
}

/// One behaviour on each storage and worker kind. On the kinds that run futures (`async`,
/// `process --concurrency 8`) the tests run the async twins of the testbed's tasks.
macro_rules! each {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite_thread() {
                $body(Backend::sqlite(), Kind::Thread)
            }
            #[test]
            fn sqlite_process() {
                $body(Backend::sqlite(), Kind::Process)
            }
            #[test]
            fn redis_process() {
                $body(Backend::redis(), Kind::Process)
            }
            #[test]
            fn sqlite_async() {
                $body(Backend::sqlite(), Kind::Async)
            }
            #[test]
            fn redis_async() {
                $body(Backend::redis(), Kind::Async)
            }
            #[test]
            fn sqlite_process_concurrent() {
                $body(Backend::sqlite(), Kind::ProcessConcurrent)
            }
            #[test]
            fn postgres_thread() {
                $body(Backend::postgres(), Kind::Thread)
            }
            #[test]
            fn postgres_process() {
                $body(Backend::postgres(), Kind::Process)
            }
        }
    };
}

each!(tasks_run_and_results_come_back, |b: Backend, kind: Kind| {
    let app = b.app();
    let _h = kind.start(&b.url(), &["-w", "2"]);
    let add: Task<(i64, i64), i64> = task(&app, "add");
    let handles = add.enqueue_many((0..50).map(|i| (i, 1))).unwrap();
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.wait(LONG).unwrap(), i as i64 + 1);
    }
});

each!(
    panicking_task_is_a_task_error_not_a_dead_worker,
    |b: Backend, kind: Kind| {
        let app = b.app();
        let h = kind.testbed(&b.url(), &["-w", "1"]);
        let fail: Task<String, ()> = task(&app, "fail");
        let r = fail.enqueue("bad input".into()).unwrap();
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("expected a task error")
        };
        assert_eq!(
            (e.kind, e.message.as_str()),
            (FailureKind::Error, "bad input")
        );
        let panics: Task<String, ()> = task(&app, kind.task("panic"));
        let pid: Task<(), u32> = task(&app, kind.task("pid"));
        let before = pid.enqueue(()).unwrap().wait(LONG).unwrap();
        let r = panics.enqueue("kaboom".into()).unwrap();
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("expected a panic error")
        };
        assert_eq!((e.kind, e.message.as_str()), (FailureKind::Panic, "kaboom"));
        if kind != Kind::Thread {
            let after = pid.enqueue(()).unwrap().wait(LONG).unwrap();
            assert_eq!(before, after, "the same worker keeps running");
        }
        if kind.is_process() {
            assert_eq!(h.workers(), vec![before as i32]);
        }
    }
);

each!(
    worker_killed_mid_task_is_retried_and_completes,
    |b: Backend, kind: Kind| {
        if !kind.is_process() {
            return;
        }
        let app = b.app();
        let h = kind.start(&b.url(), &["-w", "1"]);
        let w = h.wait_workers(1, LONG);
        assert_eq!(w.len(), 1);
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let r = sleep.call(1500).retries(1).enqueue().unwrap();
        assert!(h.wait_log("task started", LONG));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(w[0]), Signal::SIGKILL).unwrap();
        assert_eq!(r.wait(LONG).unwrap(), 1500, "retried on a new worker");
        let log = h.log();
        assert!(log.contains("killed by signal 9 (SIGKILL)"), "{log}");
        let w2 = h.wait_workers(1, LONG);
        assert_ne!(w2, w, "the dead worker was replaced");
    }
);

each!(
    worker_lost_without_retries_fails_and_is_dead_lettered,
    |b: Backend, kind: Kind| {
        if !kind.is_process() {
            return;
        }
        let app = b.app();
        let _h = kind.testbed(&b.url(), &["-w", "2"]);
        let crash: Task<(), ()> = task(&app, "crash");
        let add: Task<(i64, i64), i64> = task(&app, "add");
        let r = crash.enqueue(()).unwrap();
        // A crash takes every attempt running in its process with it: on a concurrent
        // worker the others are enqueued once it is over.
        let mut others = Vec::new();
        if !kind.concurrent() {
            others = add.enqueue_many((0..20).map(|i| (i, i))).unwrap();
        }
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("expected worker lost")
        };
        if kind.concurrent() {
            others = add.enqueue_many((0..20).map(|i| (i, i))).unwrap();
        }
        assert_eq!(e.kind, FailureKind::WorkerLost);
        assert!(e.message.contains("SIGABRT"), "{}", e.message);
        for (i, o) in others.iter().enumerate() {
            assert_eq!(o.wait(LONG).unwrap(), 2 * i as i64);
        }
        assert!(wait_until(LONG, || app.storage().counts().unwrap().dead == 1));
        let dead = app.storage().dead(10).unwrap();
        assert_eq!(dead[0].id, r.id());
    }
);

each!(
    task_past_its_timeout_fails_and_the_worker_is_replaced,
    |b: Backend, kind: Kind| {
        let app = b.app();
        let h = kind.start(&b.url(), &["-w", "1"]);
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let slow = sleep
            .call(20_000)
            .timeout(Duration::from_millis(300))
            .enqueue()
            .unwrap();
        let next = sleep.enqueue(1).unwrap();
        let Err(Error::Task(e)) = slow.wait(LONG) else {
            panic!("expected a timeout")
        };
        assert_eq!(e.kind, FailureKind::Timeout);
        assert_eq!(
            next.wait(LONG).unwrap(),
            1,
            "the next task runs on the new worker"
        );
        if kind.is_process() {
            assert_eq!(h.wait_workers(1, LONG).len(), 1);
        }
    }
);

each!(
    sigterm_lets_running_tasks_finish_and_leaves_the_rest_queued,
    |b: Backend, kind: Kind| {
        let app = b.app();
        let mut h = two_at_once(kind, &b.url());
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let running = sleep.enqueue_many([700, 700]).unwrap();
        assert!(wait_until(LONG, || h.log().matches("task started").count() == 2));
        let queued = sleep.enqueue_many([10, 10, 10]).unwrap();
        h.signal(Signal::SIGTERM);
        let status = h.wait_exit(LONG).expect("exits");
        assert!(status.success(), "{status:?}: {}", h.log());
        for r in &running {
            assert_eq!(r.get().unwrap(), Some(700), "running tasks finished");
        }
        let c = app.storage().counts().unwrap();
        assert_eq!(
            (c.ready, c.in_flight),
            (3, 0),
            "the rest is still queued, nothing leased"
        );
        let _h2 = two_at_once(kind, &b.url());
        for r in &queued {
            assert_eq!(r.wait(LONG).unwrap(), 10);
        }
    }
);

each!(
    stop_deadline_kills_running_tasks_and_they_are_redelivered,
    |b: Backend, kind: Kind| {
        let app = b.app();
        let mut h = kind.start(&b.url(), &["-w", "2", "--stop-timeout", "0.3"]);
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let long = sleep.enqueue_many([3000, 3000]).unwrap();
        assert!(wait_until(LONG, || h.log().matches("task started").count() == 2));
        h.signal(Signal::SIGTERM);
        let status = h.wait_exit(LONG).expect("exits");
        assert!(status.success());
        assert!(
            long.iter().all(|r| !r.is_ready().unwrap()),
            "not acknowledged"
        );
        let c = app.storage().counts().unwrap();
        assert_eq!(c.ready, 2, "released for redelivery: {c:?}");
        let _h2 = kind.start(&b.url(), &["-w", "2"]);
        for r in &long {
            assert_eq!(r.wait(LONG).unwrap(), 3000);
        }
    }
);

each!(second_signal_stops_at_once, |b: Backend, kind: Kind| {
    let app = b.app();
    let mut h = kind.start(&b.url(), &["-w", "1"]);
    let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
    let r = sleep.enqueue(20_000).unwrap();
    assert!(h.wait_log("task started", LONG));
    h.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    h.signal(Signal::SIGINT);
    assert!(
        h.wait_exit(Duration::from_secs(5)).is_some(),
        "stopped without waiting for the task"
    );
    assert!(!r.is_ready().unwrap());
    assert_eq!(app.storage().counts().unwrap().ready, 1);
});

each!(
    killed_supervisor_leases_expire_and_another_consumer_finishes,
    |b: Backend, kind: Kind| {
        let app = b.app();
        let h = kind.start(&b.url(), &["-w", "2", "--lease", "1"]);
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let rs = sleep.enqueue_many([5000, 5000, 1, 1]).unwrap();
        assert!(wait_until(LONG, || h.log().matches("task started").count() >= 2));
        let workers = h.workers();
        h.signal(Signal::SIGKILL);
        drop(h);
        for w in workers {
            // Workers die with their parent.
            assert!(wait_until(LONG, || !std::path::Path::new(&format!(
                "/proc/{w}"
            ))
            .exists()
                || std::fs::read_to_string(format!("/proc/{w}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true)));
        }
        let _h2 = kind.start(&b.url(), &["-w", "2", "--lease", "1"]);
        let got: Vec<u64> = rs.iter().map(|r| r.wait(LONG).unwrap()).collect();
        assert_eq!(got, vec![5000, 5000, 1, 1]);
    }
);

each!(max_tasks_recycles_workers, |b: Backend, kind: Kind| {
    if !kind.is_process() {
        return;
    }
    let app = b.app();
    let _h = kind.testbed(&b.url(), &["-w", "1", "-M", "2"]);
    let pid: Task<(), u32> = task(&app, kind.task("pid"));
    let mut pids = Vec::new();
    for _ in 0..6 {
        pids.push(pid.enqueue(()).unwrap().wait(LONG).unwrap());
    }
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
});

each!(delayed_task_runs_about_on_time, |b: Backend, kind: Kind| {
    let app = b.app();
    let _h = kind.start(&b.url(), &["-w", "1", "-s", "0.2"]);
    let add: Task<(i64, i64), i64> = task(&app, "add");
    let t0 = std::time::Instant::now();
    let r = add.schedule((1, 2), Duration::from_secs(2)).unwrap();
    assert_eq!(r.wait(LONG).unwrap(), 3);
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(2), "ran early: {took:?}");
    assert!(took < Duration::from_secs(6), "ran late: {took:?}");
});

each!(
    sighup_restarts_workers_without_losing_tasks,
    |b: Backend, kind: Kind| {
        if kind == Kind::Thread {
            return;
        }
        let app = b.app();
        let h = kind.start(&b.url(), &["-w", "2"]);
        let starts = |n| {
            wait_until(LONG, || {
                app.storage().incr("worker-starts", 0).unwrap() == n
            })
        };
        let before = h.wait_workers(if kind.is_process() { 2 } else { 0 }, LONG);
        if kind == Kind::Async {
            assert!(starts(1), "the runtime started");
        }
        let sleep: Task<u64, u64> = task(&app, kind.task("sleep"));
        let rs = sleep.enqueue_many(std::iter::repeat_n(50, 40)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        h.signal(Signal::SIGHUP);
        for r in &rs {
            assert_eq!(r.wait(LONG).unwrap(), 50);
        }
        if kind == Kind::Async {
            assert!(starts(2), "a fresh runtime took over");
            return;
        }
        assert!(
            wait_until(LONG, || {
                let now = h.workers();
                now.len() == 2 && now.iter().all(|p| !before.contains(p))
            }),
            "all workers replaced"
        );
    }
);

#[test]
fn bad_command_lines_exit_2_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["-w", "0"], "workers"),
        (&["-k", "banana"], "banana"),
        (&["--storage", "bogus://x"], "bogus://x"),
        (&["--lease=0"], "positive"),
        (&["--max-deliveries", "x"], "max-deliveries"),
        (&["-s", "soon"], "soon"),
        (&["-k", "thread", "--concurrency", "4"], "--concurrency"),
        (&["-k", "process", "-w", "2000"], "over 1024"),
        (&["-k", "async", "-w", "200000"], "200000"),
        (&["-k", "process", "--concurrency", "0"], "concurrency"),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(common::hueyd::exe())
            .args(*args)
            .env("HUEY_STORAGE", "memory:")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn max_memory_recycles_a_worker_over_the_limit_after_its_task() {
    let b = Backend::sqlite();
    let app = b.app();
    // Every worker is over 1 MB resident, so each one is replaced after one task.
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1", "--max-memory", "1"]);
    let pid: Task<(), u32> = task(&app, "pid");
    let pids: Vec<u32> = (0..3)
        .map(|_| pid.enqueue(()).unwrap().wait(LONG).unwrap())
        .collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert!(
        h.log().contains("recycling worker over its memory limit"),
        "{}",
        h.log()
    );
}
