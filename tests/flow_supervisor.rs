//! Workflows and task control with real consumers: chords across two `hueyd` processes, lock
//! TTLs outliving a killed holder, revoking a running task, named queues, worker hooks, and
//! the events a supervisor's handlers receive.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hueyd::{wait_until, Backend, Hueyd, Kind};
use huey::supervisor::{Config, Supervisor, WorkerKind};
use huey::task::Control;
use huey::{Error, EventKind, FailureKind, Huey, Revoke, Task, TaskError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;

const LONG: Duration = Duration::from_secs(30);

fn task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Task<A, R> {
    Task::from_name(app, name).unwrap()
}

fn counter(app: &Huey, key: &str) -> i64 {
    app.storage().incr(key, 0).unwrap()
}

fn chord_callback_fires_once_with_members_on_two_consumers(b: Backend, kind: Kind) {
    let app = b.app();
    let _c1 = kind.testbed(&b.url(), &["-w", "3"]);
    let _c2 = kind.testbed(&b.url(), &["-w", "3"]);
    let add: Task<(i64, i64), i64> = task(&app, "add");
    let collect: Task<Vec<Result<i64, TaskError>>, i64> = task(&app, "collect");
    for round in 0..3 {
        let chord = add
            .map((0..30).map(|i| (i, round)))
            .then_with(&collect)
            .enqueue()
            .unwrap();
        let expected: i64 = (0..30).map(|i| i + round).sum();
        assert_eq!(chord.callback.wait(LONG).unwrap(), expected);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter(&app, "collect-runs"), 3, "one callback per chord");
}

#[test]
fn chord_callback_fires_once_with_members_on_two_consumers_sqlite() {
    chord_callback_fires_once_with_members_on_two_consumers(Backend::sqlite(), Kind::Thread);
}

#[test]
fn chord_callback_fires_once_with_members_on_two_async_consumers() {
    chord_callback_fires_once_with_members_on_two_consumers(Backend::sqlite(), Kind::Async);
}

#[test]
fn chord_callback_fires_once_with_members_on_two_concurrent_process_consumers() {
    let kind = Kind::ProcessConcurrent;
    chord_callback_fires_once_with_members_on_two_consumers(Backend::redis(), kind);
}

#[test]
fn chord_callback_fires_once_with_members_on_two_consumers_redis() {
    chord_callback_fires_once_with_members_on_two_consumers(Backend::redis(), Kind::Process);
}

fn lock_held_by_a_killed_task_expires_through_its_ttl(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1"]);
    let locked: Task<u64, u64> = task(&app, kind.task("locked_sleep"));
    let lock = app.lock_task("demo-lock");
    let first = locked.enqueue(60_000).unwrap();
    assert!(
        wait_until(LONG, || lock.is_locked().unwrap()),
        "{}",
        h.log()
    );
    for w in h.workers() {
        kill(Pid::from_raw(w), Signal::SIGKILL).unwrap();
    }
    let Err(Error::Task(e)) = first.wait(LONG) else {
        panic!("expected a lost worker")
    };
    assert_eq!(e.kind, FailureKind::WorkerLost);
    // The holder is gone; its lock goes by itself when the 3 s TTL runs out.
    assert!(wait_until(LONG, || !lock.is_locked().unwrap()));
    let again = locked.enqueue(10).unwrap();
    assert_eq!(again.wait(LONG).unwrap(), 10);
}

#[test]
fn lock_held_by_a_killed_task_expires_through_its_ttl_process() {
    lock_held_by_a_killed_task_expires_through_its_ttl(Kind::Process);
}

#[test]
fn lock_held_by_a_killed_async_task_expires_through_its_ttl() {
    lock_held_by_a_killed_task_expires_through_its_ttl(Kind::ProcessConcurrent);
}

fn revoking_a_running_task_kills_its_worker(b: Backend) {
    let app = b.app();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1", "-c", "0.2"]);
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let pid: Task<(), u32> = task(&app, "pid");
    let before = pid.enqueue(()).unwrap().wait(LONG).unwrap();
    let long = sleep.enqueue(600_000).unwrap();
    assert!(
        h.wait_log(&format!("id={}", long.id()), LONG),
        "the task never started: {}",
        h.log()
    );
    long.revoke().unwrap();
    let Err(Error::Task(e)) = long.wait(LONG) else {
        panic!("expected revoked: {}", h.log())
    };
    assert_eq!(e.kind, FailureKind::Revoked);
    let after = pid.enqueue(()).unwrap().wait(LONG).unwrap();
    assert_ne!(before, after, "the worker was replaced");
}

#[test]
fn revoking_a_running_task_kills_its_worker_sqlite() {
    revoking_a_running_task_kills_its_worker(Backend::sqlite());
}

#[test]
fn revoking_a_running_task_kills_its_worker_redis() {
    revoking_a_running_task_kills_its_worker(Backend::redis());
}

#[test]
fn consumer_serves_only_its_named_queues() {
    let b = Backend::sqlite();
    let app = b.app();
    let _fast = Hueyd::start(&b.url(), &["-k", "process", "-w", "1", "-Q", "fast"]);
    let echo: Task<String, String> = task(&app, "echo");
    let slow = echo.s("slow".into()).queue("slow").enqueue().unwrap();
    let fast = echo.s("fast".into()).queue("fast").enqueue().unwrap();
    let also_fast = echo.s("second".into()).queue("fast").enqueue().unwrap();
    assert_eq!(fast.wait(LONG).unwrap(), "fast");
    assert_eq!(also_fast.wait(LONG).unwrap(), "second");
    assert!(!slow.is_ready().unwrap(), "a fast-only consumer left it");
    let _slow = Hueyd::start(&b.url(), &["-k", "thread", "-w", "1", "-Q", "slow,fast"]);
    assert_eq!(slow.wait(LONG).unwrap(), "slow");
}

#[test]
fn startup_hooks_run_in_every_worker_of_either_kind() {
    for kind in ["process", "thread"] {
        let b = Backend::sqlite();
        let app = b.app();
        let _h = Hueyd::testbed(&b.url(), &["-k", kind, "-w", "3"]);
        assert!(
            wait_until(LONG, || counter(&app, "worker-starts") == 3),
            "{kind}: {}",
            counter(&app, "worker-starts")
        );
    }
}

#[test]
fn supervisor_handlers_receive_each_consumer_event() {
    supervisor_handlers_receive_each_consumer_event_from(WorkerKind::Thread);
}

#[test]
fn supervisor_handlers_receive_each_consumer_event_from_an_async_worker() {
    supervisor_handlers_receive_each_consumer_event_from(WorkerKind::Async);
}

fn supervisor_handlers_receive_each_consumer_event_from(kind: WorkerKind) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let app = Huey::open("t", &url).unwrap();
    common::testbed::register(&app).unwrap();
    let seen: Arc<Mutex<Vec<(EventKind, String)>>> = Arc::default();
    let s = seen.clone();
    app.on_event(move |e| s.lock().push((e.kind, e.task.clone())));
    app.on_event(|_| panic!("a broken handler"));
    let cancels = app
        .task("cancels")
        .register(|(): ()| -> Result<(), Control> { Err(Control::Cancel("no".into())) })
        .unwrap();
    let limited = app
        .task("limited")
        .rate_limit("one", 1, Duration::from_secs(3600))
        .register(|(): ()| Ok::<_, String>(()))
        .unwrap();
    let cfg = Config {
        workers: 2,
        kind,
        log_tasks: false,
        scheduler_interval: Duration::from_millis(100),
        ..Config::default()
    };
    let sup = Supervisor::new(app.clone(), cfg).unwrap();
    let stop = sup.stop_handle();
    let consumer = std::thread::spawn(move || sup.run().unwrap());

    let echo: Task<String, String> = task(&app, "echo");
    let fail: Task<String, ()> = task(&app, "fail");
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let flaky: Task<(String, u32), u32> = task(&app, "flaky");
    let locked: Task<u64, u64> = task(&app, "locked_sleep");
    echo.enqueue("hi".into()).unwrap().wait(LONG).unwrap();
    let _ = fail.enqueue("bad".into()).unwrap().wait(LONG);
    let _ = sleep
        .call(60_000)
        .timeout(Duration::from_millis(100))
        .enqueue()
        .unwrap()
        .wait(LONG);
    flaky
        .call(("k".into(), 1))
        .enqueue()
        .unwrap()
        .wait(LONG)
        .unwrap();
    let _ = cancels.enqueue(()).unwrap().wait(LONG);
    let guard = app.lock_task("demo-lock").acquire().unwrap();
    let _ = locked.enqueue(1).unwrap().wait(LONG);
    drop(guard);
    let revoked = echo
        .schedule("r".into(), Duration::from_millis(200))
        .unwrap();
    revoked.revoke_with(Revoke::default()).unwrap();
    let _ = revoked.wait(LONG);
    let _ = echo
        .s("x".into())
        .expires(Duration::from_millis(1))
        .delay(Duration::from_millis(100))
        .enqueue()
        .unwrap()
        .wait(LONG);
    limited.enqueue(()).unwrap();
    limited.enqueue(()).unwrap();
    let mut unknown = huey::Message::new("no_such_task", vec![], Default::default());
    unknown.id = "unknown-1".into();
    app.enqueue_messages(&[unknown]).unwrap();
    let wanted = [
        EventKind::Enqueued,
        EventKind::Scheduled,
        EventKind::Executing,
        EventKind::Complete,
        EventKind::Error,
        EventKind::Retrying,
        EventKind::Revoked,
        EventKind::Expired,
        EventKind::Locked,
        EventKind::Timeout,
        EventKind::RateLimited,
        EventKind::Canceled,
        EventKind::DeadLettered,
    ];
    let all_seen = wait_until(LONG, || {
        let got = seen.lock();
        wanted.iter().all(|k| got.iter().any(|(g, _)| g == k))
    });
    stop.stop();
    consumer.join().unwrap();
    let got: Vec<EventKind> = seen.lock().iter().map(|(k, _)| *k).collect();
    assert!(all_seen, "missing some of {wanted:?} in {got:?}");
}
