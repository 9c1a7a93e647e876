//! The async producer API on real storages: `enqueue_async`, `enqueue_many_async`,
//! `wait_async` and `get_async` on a current-thread runtime (so a blocked runtime thread would
//! stall everything), against a real `hueyd` (SQLite, Redis: woken across processes) or an
//! in-process consumer thread (memory).

mod common;

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::hueyd::{wait_until, Backend, Hueyd};
use huey::{Error, Huey, Task};
use tokio::task::JoinSet;

/// The tests count this process's watcher threads: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const WAITERS: usize = 1000;
const LONG: Duration = Duration::from_secs(60);

/// One test at a time, starting once the watcher of the one before has ended.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(wait_until(Duration::from_secs(10), || watchers() == 0));
    guard
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Threads of this process that watch results for async waiters.
fn watchers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "huey-results")
        })
        .count()
}

fn assert_send_static<T: Send + 'static>(_: &T) {}

fn add(app: &Huey) -> Task<(i64, i64), i64> {
    Task::from_name(app, "add").unwrap()
}

/// `WAITERS` futures wait for results on one thread; the consumer starts only once they are
/// all waiting, so every one of them is woken by the watcher, not by its first read.
fn many_waiters_complete(app: &Huey, start_consumer: impl FnOnce() -> Box<dyn std::any::Any>) {
    let rt = runtime();
    let add = add(app);
    let handles = rt
        .block_on(add.enqueue_many_async((0..WAITERS as i64).map(|i| (i, i))))
        .unwrap();
    assert_eq!(handles.len(), WAITERS);
    let _in_rt = rt.enter();
    let mut set = JoinSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let fut = async move { (i, h.wait_async(LONG).await) };
        assert_send_static(&fut);
        set.spawn(fut);
    }
    let consumer = rt.block_on(async {
        // Let every waiter register and read once (they then sleep on the watcher).
        let end = Instant::now() + LONG;
        while watchers() == 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start_consumer()
    });
    let mut done = 0;
    rt.block_on(async {
        while let Some(joined) = set.join_next().await {
            let (i, sum) = joined.unwrap();
            assert_eq!(sum.unwrap(), 2 * i as i64);
            done += 1;
        }
    });
    assert_eq!(done, WAITERS);
    drop(consumer);
    assert!(
        wait_until(Duration::from_secs(10), || watchers() == 0),
        "the watcher thread ends when nothing waits"
    );
}

#[test]
fn a_thousand_waiters_on_sqlite_are_woken_across_processes() {
    let _s = serial();
    let b = Backend::sqlite();
    let app = b.app();
    many_waiters_complete(&app, || {
        Box::new(Hueyd::start(&b.url(), &["-k", "thread", "-w", "4"]))
    });
}

#[test]
fn a_thousand_waiters_on_redis_are_woken_across_processes() {
    let _s = serial();
    let b = Backend::redis();
    let app = b.app();
    many_waiters_complete(&app, || {
        Box::new(Hueyd::start(&b.url(), &["-k", "thread", "-w", "4"]))
    });
}

#[test]
fn a_thousand_waiters_on_memory_are_woken_in_process() {
    let _s = serial();
    let app = Huey::open("hueyd", "memory:").unwrap();
    common::testbed::register(&app).unwrap();
    let consumer_app = app.clone();
    many_waiters_complete(&app, move || {
        Box::new(std::thread::spawn(move || {
            common::drain(&consumer_app, &["default"])
        }))
    });
}

fn on_each_backend(test: impl Fn(&Huey)) {
    let redis = Backend::redis();
    let sqlite = Backend::sqlite();
    let memory = Huey::open("hueyd", "memory:").unwrap();
    common::testbed::register(&memory).unwrap();
    for app in [redis.app(), sqlite.app(), memory] {
        test(&app);
    }
}

#[test]
fn a_wait_runs_out_with_a_timeout_error_and_leaves_nothing_running() {
    let _s = serial();
    on_each_backend(|app| {
        let rt = runtime();
        let h = rt.block_on(add(app).enqueue_async((1, 2))).unwrap();
        let started = Instant::now();
        let out = rt.block_on(h.wait_async(Duration::from_millis(300)));
        assert!(matches!(out, Err(Error::Timeout(_))), "{out:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(rt.block_on(h.get_async()).unwrap().is_none());
        assert!(wait_until(Duration::from_secs(10), || watchers() == 0));
        // The task is still there for a consumer, and a later wait gets its result.
        assert_eq!(common::drain(app, &["default"]), 1);
        assert_eq!(rt.block_on(h.wait_async(LONG)).unwrap(), 3);
    });
}

#[test]
fn dropped_waits_are_forgotten_and_the_watcher_ends() {
    let _s = serial();
    on_each_backend(|app| {
        let rt = runtime();
        let handles = rt
            .block_on(add(app).enqueue_many_async((0..200).map(|i| (i, 1))))
            .unwrap();
        let _in_rt = rt.enter();
        let mut set = JoinSet::new();
        for h in handles {
            set.spawn(async move { h.wait_async(LONG).await });
        }
        rt.block_on(async {
            let end = Instant::now() + LONG;
            while watchers() == 0 && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(watchers(), 1, "one watcher for all the waiters");
        // Cancel every wait (as a dropped request would).
        rt.block_on(async {
            set.abort_all();
            while let Some(j) = set.join_next().await {
                assert!(j.unwrap_err().is_cancelled());
            }
        });
        assert!(
            wait_until(Duration::from_secs(10), || watchers() == 0),
            "the watcher thread ends once every wait is gone"
        );
        // Nothing was consumed by the cancelled waits: all 200 are still there to run.
        assert_eq!(common::drain(app, &["default"]), 200);
    });
}

#[test]
fn enqueue_async_writes_what_enqueue_writes() {
    let _s = serial();
    on_each_backend(|app| {
        let rt = runtime();
        let add = add(app);
        let one = add.enqueue_async((2, 2));
        assert_send_static(&one);
        let one = rt.block_on(one).unwrap();
        let urgent = rt
            .block_on(add.call((3, 3)).priority(9).enqueue_async())
            .unwrap();
        let later = rt
            .block_on(add.schedule_async((4, 4), Duration::from_secs(3600)))
            .unwrap();
        let many = rt
            .block_on(add.enqueue_many_async([(5, 5), (6, 6)]))
            .unwrap();
        let c = app.storage().counts().unwrap();
        assert_eq!((c.ready, c.scheduled), (4, 1));
        assert_eq!(common::drain(app, &["default"]), 4);
        assert_eq!(rt.block_on(one.get_async()).unwrap(), Some(4));
        assert_eq!(rt.block_on(urgent.wait_async(LONG)).unwrap(), 6);
        // Read once, kept by the handle.
        assert_eq!(rt.block_on(urgent.get_async()).unwrap(), Some(6));
        assert_eq!(urgent.get().unwrap(), Some(6));
        assert_eq!(
            rt.block_on(many[1].wait_async(LONG)).unwrap(),
            12,
            "{:?}",
            many[1].id()
        );
        assert!(later.revoke().is_ok());
        // A failure comes back as the task's error.
        let overflow = rt.block_on(add.enqueue_async((i64::MAX, 1))).unwrap();
        common::drain(app, &["default"]);
        match rt.block_on(overflow.wait_async(LONG)) {
            Err(Error::Task(e)) => assert_eq!(e.message, "overflow"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn a_preserved_result_is_there_for_every_waiter() {
    let _s = serial();
    on_each_backend(|app| {
        let rt = runtime();
        let h = rt.block_on(add(app).enqueue_async((20, 22))).unwrap();
        let id = h.id().to_string();
        let _in_rt = rt.enter();
        let mut set = JoinSet::new();
        for _ in 0..10 {
            let h = app.result::<i64>(id.clone()).preserve();
            set.spawn(async move { h.wait_async(LONG).await });
        }
        let drained = std::thread::scope(|s| {
            let t = s.spawn(|| {
                wait_until(LONG, || watchers() == 1);
                common::drain(app, &["default"])
            });
            rt.block_on(async {
                while let Some(j) = set.join_next().await {
                    assert_eq!(j.unwrap().unwrap(), 42);
                }
            });
            t.join().unwrap()
        });
        assert_eq!(drained, 1);
        assert_eq!(h.get().unwrap(), Some(42));
    });
}

/// Every future this API returns can go to `tokio::spawn` on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(t: Task<(i64, i64), i64>, h: huey::TaskResult<i64>) {
    fn send<F: Future + Send>(_: F) {}
    send(t.enqueue_async((1, 1)));
    send(t.enqueue_many_async([(1, 1)]));
    send(h.wait_async(LONG));
    send(h.get_async());
}

#[test]
fn on_a_multi_threaded_runtime_the_calls_run_in_place_and_waits_are_woken() {
    let _s = serial();
    let b = Backend::sqlite();
    let app = b.app();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let add = add(&app);
    // Spawned tasks on worker threads: enqueue, then wait, 200 at once.
    let joins: Vec<_> = (0..200i64)
        .map(|i| {
            let add = add.clone();
            rt.spawn(async move { add.enqueue_async((i, 1)).await?.wait_async(LONG).await })
        })
        .collect();
    let _consumer = Hueyd::start(&b.url(), &["-k", "thread", "-w", "4"]);
    rt.block_on(async {
        for (i, j) in joins.into_iter().enumerate() {
            assert_eq!(j.await.unwrap().unwrap(), i as i64 + 1);
        }
    });
}

#[test]
fn outside_a_runtime_the_async_calls_fail_with_an_error() {
    let app = Huey::open("hueyd", "memory:").unwrap();
    common::testbed::register(&app).unwrap();
    // Polled by a minimal executor that is not tokio.
    let out = block_on_without_tokio(add(&app).enqueue_async((1, 1)));
    match out {
        Err(Error::Config(m)) => assert!(m.contains("tokio runtime"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(app.storage().counts().unwrap().ready, 0);
}

fn block_on_without_tokio<F: Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_result_taken_by_a_cancelled_wait_stays_in_its_handle() {
    let _s = serial();
    on_each_backend(|app| {
        let rt = runtime();
        let h = rt.block_on(add(app).enqueue_async((40, 2))).unwrap();
        assert_eq!(common::drain(app, &["default"]), 1);
        // Polled once, then dropped: on a current-thread runtime the destructive read runs on
        // the blocking pool and finishes after the wait is gone.
        rt.block_on(async {
            let mut wait = std::pin::pin!(h.wait_async(LONG));
            std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx).is_pending()))
                .await
        });
        assert!(wait_until(LONG, || h.get().unwrap() == Some(42)));
        let id = h.id().to_string();
        assert_eq!(
            app.storage().result(&id, false).unwrap(),
            None,
            "it was taken"
        );
        assert_eq!(rt.block_on(h.wait_async(LONG)).unwrap(), 42);
    });
}

#[test]
fn a_wait_whose_redis_goes_away_ends_with_a_storage_error() {
    let _s = serial();
    let mut b = Backend::redis();
    let app = b.app();
    let rt = runtime();
    let handles = rt
        .block_on(add(&app).enqueue_many_async((0..50).map(|i| (i, i))))
        .unwrap();
    let _in_rt = rt.enter();
    let mut set = JoinSet::new();
    for h in handles {
        set.spawn(async move { h.wait_async(LONG).await });
    }
    rt.block_on(async {
        while watchers() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let Backend::Redis(server) = &mut b else {
        unreachable!()
    };
    server.kill();
    let started = Instant::now();
    rt.block_on(async {
        while let Some(j) = set.join_next().await {
            match j.unwrap() {
                Err(Error::Storage { backend, .. }) => assert_eq!(backend, "redis"),
                other => panic!("{other:?}"),
            }
        }
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not left to run out"
    );
    assert!(wait_until(Duration::from_secs(10), || watchers() == 0));
}
