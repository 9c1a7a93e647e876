//! The supervisor in-process on memory storage (an app's own tests can run a real consumer
//! without any files), with thread workers and with process workers of the `hueyd` binary.

use std::sync::Arc;
use std::time::Duration;

use huey::storage::MemoryStorage;
use huey::supervisor::{Config, Stopped, Supervisor, WorkerKind};
use huey::{Error, FailureKind, Huey, Task};

const LONG: Duration = Duration::from_secs(30);

fn consumer(
    kind: WorkerKind,
) -> (
    Huey,
    huey::supervisor::StopHandle,
    std::thread::JoinHandle<Stopped>,
) {
    // Opened from its URL: process workers open the same URL (their own memory storage).
    let app = Huey::open("hueyd", "memory:").unwrap();
    huey::demo::register(&app).unwrap();
    let cfg = Config {
        workers: 2,
        kind,
        worker_exe: Some(env!("CARGO_BIN_EXE_hueyd").into()),
        log_tasks: false,
        ..Config::default()
    };
    let sup = Supervisor::new(app.clone(), cfg).unwrap();
    let stop = sup.stop_handle();
    let t = std::thread::spawn(move || sup.run().unwrap().0);
    (app, stop, t)
}

fn memory_consumer_runs_retries_and_times_out(kind: WorkerKind) {
    let (app, stop, t) = consumer(kind);
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let flaky: Task<(String, u32), u32> = Task::from_name(&app, "flaky").unwrap();
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    let sums = add.enqueue_many((0..100).map(|i| (i, i))).unwrap();
    // `flaky` counts its attempts in storage, which only the supervisor's process can see on
    // memory storage, so use it with thread workers only.
    let retried = (kind != WorkerKind::Process).then(|| flaky.enqueue(("k".into(), 2)).unwrap());
    let slow = sleep
        .call(10_000)
        .timeout(Duration::from_millis(200))
        .enqueue()
        .unwrap();
    for (i, s) in sums.iter().enumerate() {
        assert_eq!(s.wait(LONG).unwrap(), 2 * i as i64);
    }
    if let Some(r) = retried {
        assert_eq!(r.wait(LONG).unwrap(), 3);
    }
    if kind == WorkerKind::Async {
        async_tasks_retry_and_time_out(&app);
    }
    let Err(Error::Task(e)) = slow.wait(LONG) else {
        panic!("expected a timeout")
    };
    assert_eq!(e.kind, FailureKind::Timeout);
    assert_eq!(
        sleep.enqueue(1).unwrap().wait(LONG).unwrap(),
        1,
        "a replacement worker runs"
    );
    stop.stop();
    assert_eq!(t.join().unwrap(), Stopped::Graceful);
}

#[test]
fn memory_consumer_with_thread_workers() {
    memory_consumer_runs_retries_and_times_out(WorkerKind::Thread);
}

#[test]
fn memory_consumer_with_process_workers() {
    memory_consumer_runs_retries_and_times_out(WorkerKind::Process);
}

#[test]
fn memory_consumer_with_async_workers() {
    memory_consumer_runs_retries_and_times_out(WorkerKind::Async);
}

/// An async task that fails twice is retried to success; one past its timeout is cut short.
fn async_tasks_retry_and_time_out(app: &Huey) {
    use std::sync::atomic::{AtomicU32, Ordering};
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let flaky = app
        .task("async_flaky")
        .retries(2)
        .register_async(move |(): ()| {
            let n = a.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::task::yield_now().await;
                if n < 3 {
                    Err(format!("attempt {n} fails"))
                } else {
                    Ok(n)
                }
            }
        })
        .unwrap();
    let nap = app
        .task("async_nap")
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .unwrap();
    assert_eq!(flaky.enqueue(()).unwrap().wait(LONG).unwrap(), 3);
    let slow = nap
        .call(60_000)
        .timeout(Duration::from_millis(100))
        .enqueue()
        .unwrap();
    let Err(Error::Task(e)) = slow.wait(LONG) else {
        panic!("expected a timeout")
    };
    assert_eq!(e.kind, FailureKind::Timeout);
    assert_eq!(nap.enqueue(5).unwrap().wait(LONG).unwrap(), 5);
}

/// `runtimes`: how many workers run hooks (an async worker is one runtime).
fn startup_and_shutdown_hooks_run_in_every_worker(kind: WorkerKind, runtimes: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let app = Huey::new("hooks", Arc::new(MemoryStorage::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let stopped = Arc::new(AtomicUsize::new(0));
    let (s, t) = (started.clone(), stopped.clone());
    app.on_startup(move |_| {
        s.fetch_add(1, Ordering::SeqCst);
    });
    app.on_shutdown(move |_| {
        t.fetch_add(1, Ordering::SeqCst);
    });
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .unwrap();
    let cfg = Config {
        workers: 3,
        kind,
        log_tasks: false,
        ..Config::default()
    };
    let sup = Supervisor::new(app.clone(), cfg).unwrap();
    let stop = sup.stop_handle();
    let consumer = std::thread::spawn(move || sup.run().unwrap().0);
    assert_eq!(add.enqueue((1, 2)).unwrap().wait(LONG).unwrap(), 3);
    // One worker ran the task; the others may still be starting.
    assert!(
        eventually(|| started.load(Ordering::SeqCst) == runtimes),
        "each worker ran its startup hook"
    );
    stop.stop();
    assert_eq!(consumer.join().unwrap(), Stopped::Graceful);
    assert!(
        eventually(|| stopped.load(Ordering::SeqCst) == runtimes),
        "each worker ran its shutdown hook"
    );
}

#[test]
fn startup_and_shutdown_hooks_run_in_every_thread_worker() {
    startup_and_shutdown_hooks_run_in_every_worker(WorkerKind::Thread, 3);
}

#[test]
fn startup_and_shutdown_hooks_run_once_in_an_async_worker() {
    startup_and_shutdown_hooks_run_in_every_worker(WorkerKind::Async, 1);
}

#[test]
fn a_concurrency_is_for_process_workers_only() {
    for (kind, concurrency) in [
        (WorkerKind::Thread, 4),
        (WorkerKind::Async, 4),
        (WorkerKind::Process, 0),
    ] {
        let app = Huey::open("c", "memory:").unwrap();
        let cfg = Config {
            kind,
            concurrency,
            ..Config::default()
        };
        let Err(Error::Config(e)) = Supervisor::new(app, cfg) else {
            panic!("expected a configuration error for {kind:?} with {concurrency}")
        };
        assert!(e.contains("--concurrency"), "{e}");
    }
}

#[test]
fn process_workers_need_an_app_opened_from_a_url() {
    let app = Huey::new("no-url", Arc::new(MemoryStorage::new()));
    let cfg = Config {
        kind: WorkerKind::Process,
        ..Config::default()
    };
    let Err(Error::Config(e)) = Supervisor::new(app, cfg) else {
        panic!("expected a configuration error")
    };
    assert!(e.contains("Huey::open"), "{e}");
}

/// Whether `cond` holds within [`LONG`].
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + LONG;
    while !cond() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
