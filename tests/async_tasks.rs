//! Async tasks on the paths that run one attempt to its end in the caller's thread: immediate
//! mode, `Huey::execute`, and thread workers. They keep every option of a sync task; a panic
//! is a task error; a timeout drops the future at its deadline; and calling from inside a
//! tokio runtime does not panic.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use huey::{Error, FailureKind, Huey, TaskContext};

const LONG: Duration = Duration::from_secs(30);

fn task_error<T: std::fmt::Debug>(r: huey::Result<Option<T>>) -> huey::TaskError {
    match r {
        Err(Error::Task(e)) => e,
        other => panic!("expected a task error, got {other:?}"),
    }
}

#[test]
fn async_tasks_run_in_immediate_mode_with_their_context_and_retries() {
    let app = Huey::immediate("a");
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let flaky = app
        .task("flaky")
        .retries(2)
        .register_async_with_context(move |word: String, ctx: TaskContext| {
            a.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if ctx.attempt() < 3 {
                    return Err(format!("attempt {} fails", ctx.attempt()));
                }
                Ok(format!(
                    "{word} on attempt {} of {}",
                    ctx.attempt(),
                    ctx.task()
                ))
            }
        })
        .unwrap();
    let r = flaky.enqueue("hi".into()).unwrap();
    assert_eq!(r.get().unwrap().unwrap(), "hi on attempt 3 of flaky");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[test]
fn a_panicking_async_task_is_a_task_error() {
    let app = Huey::immediate("a");
    let boom = app
        .task("boom")
        .register_async(|message: String| async move {
            tokio::task::yield_now().await;
            if !message.is_empty() {
                panic!("{message}");
            }
            Ok::<_, String>(())
        })
        .unwrap();
    let before_await = app
        .task("boom_at_once")
        .register_async(|(): ()| -> std::future::Ready<Result<(), String>> { panic!("at once") })
        .unwrap();
    let e = task_error(boom.enqueue("kaboom".into()).unwrap().get());
    assert_eq!((e.kind, e.message.as_str()), (FailureKind::Panic, "kaboom"));
    let e = task_error(before_await.enqueue(()).unwrap().get());
    assert_eq!(
        (e.kind, e.message.as_str()),
        (FailureKind::Panic, "at once")
    );
}

#[test]
fn an_async_task_past_its_timeout_is_cut_short_in_immediate_mode() {
    let app = Huey::immediate("a");
    let finished = Arc::new(AtomicU32::new(0));
    let f = finished.clone();
    let nap = app
        .task("nap")
        .timeout(Duration::from_millis(50))
        .register_async(move |ms: u64| {
            let f = f.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                f.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(ms)
            }
        })
        .unwrap();
    let e = task_error(nap.enqueue(5_000).unwrap().get());
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert_eq!(finished.load(Ordering::SeqCst), 0, "dropped before the end");
    assert_eq!(nap.enqueue(1).unwrap().get().unwrap(), Some(1));
}

#[test]
fn an_async_task_runs_when_enqueued_from_inside_a_tokio_runtime() {
    let app = Huey::immediate("a");
    let double = app
        .task("double")
        .register_async(|n: i64| async move { Ok::<_, String>(n * 2) })
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async { double.enqueue(21).unwrap().get().unwrap() });
    assert_eq!(got, Some(42));
}

#[test]
fn execute_runs_an_async_task_from_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let app = Huey::open(
        "a",
        &format!("sqlite:{}", dir.path().join("q.db").display()),
    )
    .unwrap();
    let add = app
        .task("add")
        .register_async(|(a, b): (i64, i64)| async move { Ok::<_, String>(a + b) })
        .unwrap();
    let r = add.enqueue((2, 3)).unwrap();
    let req = huey::storage::DequeueRequest {
        consumer: "test".into(),
        queues: vec!["default".into()],
        max: 1,
        lease: LONG,
        wait: Duration::ZERO,
        max_deliveries: 5,
    };
    let batch = app.storage().dequeue(&req).unwrap();
    app.execute(&batch[0]).unwrap();
    assert_eq!(r.get().unwrap(), Some(5));
    let (args, result) = app.task_def("add").unwrap().handler.signature();
    assert_eq!((args, result), ("(i64, i64)", "i64"));
}

#[test]
fn async_tasks_run_on_thread_workers() {
    use huey::supervisor::{Config, Supervisor, WorkerKind};
    let app = Huey::open("a", "memory:").unwrap();
    let nap = app
        .task("nap")
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .unwrap();
    let cfg = Config {
        workers: 2,
        kind: WorkerKind::Thread,
        log_tasks: false,
        ..Config::default()
    };
    let sup = Supervisor::new(app.clone(), cfg).unwrap();
    let stop = sup.stop_handle();
    let consumer = std::thread::spawn(move || sup.run().unwrap());
    let rs = nap.enqueue_many([5, 10, 15]).unwrap();
    for (r, ms) in rs.iter().zip([5, 10, 15]) {
        assert_eq!(r.wait(LONG).unwrap(), ms);
    }
    let slow = nap
        .call(60_000)
        .timeout(Duration::from_millis(100))
        .enqueue()
        .unwrap();
    let Err(Error::Task(e)) = slow.wait(LONG) else {
        panic!("expected a timeout")
    };
    assert_eq!(e.kind, FailureKind::Timeout);
    stop.stop();
    consumer.join().unwrap();
}
