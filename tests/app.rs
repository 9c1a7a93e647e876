//! The library core on every storage: typed tasks, results, retries, revocation, immediate mode.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use huey::storage::{self, Ready, Storage};
use huey::{Error, FailureKind, Huey, Message, Revoke, Task};

fn backends() -> Vec<(&'static str, Arc<dyn Storage>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("app.db").display());
    vec![
        (
            "memory",
            storage::open("memory:", "t").unwrap(),
            tempfile::tempdir().unwrap(),
        ),
        ("sqlite", storage::open(&sqlite, "t").unwrap(), dir),
    ]
}

fn drain(app: &Huey) -> usize {
    common::drain(app, &["default"])
}

struct Tasks {
    add: Task<(i64, i64), i64>,
    fail: Task<String, ()>,
    noop: Task<(), ()>,
    flaky: Task<u32, u32>,
}

fn register(app: &Huey, attempts: Arc<AtomicU32>) -> Tasks {
    Tasks {
        add: app
            .task("add")
            .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
            .unwrap(),
        fail: app
            .task("fail")
            .register(|m: String| Err::<(), _>(m))
            .unwrap(),
        noop: app
            .task("noop")
            .register(|(): ()| Ok::<_, String>(()))
            .unwrap(),
        flaky: app
            .task("flaky")
            .retries(3)
            .register(move |fail_first: u32| {
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= fail_first {
                    Err(format!("attempt {n} fails"))
                } else {
                    Ok(n)
                }
            })
            .unwrap(),
    }
}

fn each_backend(f: impl Fn(&str, Huey, Tasks, Arc<AtomicU32>)) {
    for (name, storage, _dir) in backends() {
        let app = Huey::new("t", storage);
        let attempts = Arc::new(AtomicU32::new(0));
        let tasks = register(&app, attempts.clone());
        f(name, app, tasks, attempts);
    }
}

#[test]
fn registering_a_name_twice_is_an_error() {
    each_backend(|_, app, _, _| {
        let again = app.task("add").register(|x: i64| Ok::<_, String>(x));
        assert!(matches!(again, Err(Error::DuplicateTask(n)) if n == "add"));
    });
}

#[test]
fn enqueued_task_result_is_read_once_unless_preserved() {
    each_backend(|b, app, t, _| {
        let r = t.add.enqueue((2, 3)).unwrap();
        assert_eq!(r.get().unwrap(), None, "{b}: no result before it ran");
        assert!(!r.is_ready().unwrap());
        assert_eq!(drain(&app), 1);
        assert!(r.is_ready().unwrap(), "{b}: is_ready does not consume");
        assert_eq!(r.get().unwrap(), Some(5));
        assert_eq!(
            r.get().unwrap(),
            Some(5),
            "{b}: the handle keeps what it read"
        );
        let again = app.result::<i64>(r.id());
        assert_eq!(again.get().unwrap(), None, "{b}: the read was destructive");

        let p = t.add.enqueue((1, 1)).unwrap().preserve();
        drain(&app);
        assert_eq!(p.get().unwrap(), Some(2));
        assert_eq!(
            app.result::<i64>(p.id()).preserve().get().unwrap(),
            Some(2),
            "{b}"
        );
    });
}

#[test]
fn blocking_wait_times_out_with_a_distinct_error() {
    each_backend(|b, app, t, _| {
        let r = t.add.enqueue((1, 2)).unwrap();
        match r.wait(Duration::from_millis(100)) {
            Err(Error::Timeout(_)) => {}
            other => panic!("{b}: expected a timeout, got {other:?}"),
        }
        let app2 = app.clone();
        let runner = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drain(&app2)
        });
        assert_eq!(r.wait(Duration::from_secs(10)).unwrap(), 3, "{b}");
        runner.join().unwrap();
    });
}

#[test]
fn failed_task_returns_a_typed_error_with_message_attempt_and_id() {
    each_backend(|b, app, t, _| {
        let r = t.fail.enqueue("boom".into()).unwrap();
        drain(&app);
        match r.get() {
            Err(Error::Task(e)) => {
                assert_eq!(e.message, "boom", "{b}");
                assert_eq!(e.attempt, 1);
                assert_eq!(e.id, r.id());
                assert_eq!(e.task, "fail");
                assert_eq!(e.kind, FailureKind::Error);
            }
            other => panic!("{b}: expected a task error, got {other:?}"),
        }
    });
}

#[test]
fn retries_rerun_with_the_same_id_until_success() {
    each_backend(|b, app, t, attempts| {
        let r = t.flaky.enqueue(2).unwrap();
        assert_eq!(drain(&app), 3, "{b}: two failures and one success");
        assert_eq!(r.get().unwrap(), Some(3));
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    });
}

#[test]
fn retries_run_out_and_the_last_error_is_kept() {
    each_backend(|b, app, t, _| {
        let r = t.flaky.call(10).retries(1).enqueue().unwrap();
        assert_eq!(drain(&app), 2, "{b}");
        let Err(Error::Task(e)) = r.get() else {
            panic!("{b}: expected failure")
        };
        assert_eq!((e.attempt, e.message.as_str()), (2, "attempt 2 fails"));
    });
}

#[test]
fn retry_delay_goes_through_the_schedule_with_backoff() {
    each_backend(|b, app, t, _| {
        let r = t
            .flaky
            .call(5)
            .retries(2)
            .retry_delay(Duration::from_secs(60))
            .retry_backoff(2.0)
            .enqueue()
            .unwrap();
        assert_eq!(drain(&app), 1, "{b}: the retry waits in the schedule");
        let s = app.storage();
        assert_eq!(s.counts().unwrap().scheduled, 1);
        let (eta, payload) = s.scheduled(10).unwrap().remove(0);
        let m = Message::decode(&payload).unwrap();
        assert_eq!(m.id, r.id(), "{b}: a retry keeps the task id");
        assert_eq!(m.attempt, 2);
        assert_eq!(m.options.retries, 1);
        assert_eq!(m.options.retry_delay_ms, 120_000, "{b}: next delay doubled");
        let wait = eta.saturating_sub(huey::clock::now_ms());
        assert!(
            (55_000..=60_000).contains(&wait),
            "{b}: eta {wait} ms ahead"
        );
    });
}

#[test]
fn higher_priority_runs_first_fifo_within_a_priority() {
    each_backend(|b, app, t, _| {
        let low1 = t.add.enqueue((0, 1)).unwrap();
        let high = t.add.call((0, 2)).priority(10).enqueue().unwrap();
        let low2 = t.add.enqueue((0, 3)).unwrap();
        let got: Vec<String> = app
            .storage()
            .dequeue(&common::suite::request(
                "test",
                &["default"],
                3,
                common::suite::LONG_LEASE,
            ))
            .unwrap()
            .iter()
            .map(|d| Message::decode(&d.payload).unwrap().id)
            .collect();
        assert_eq!(got, vec![high.id(), low1.id(), low2.id()], "{b}");
    });
}

#[test]
fn scheduled_task_waits_for_its_eta() {
    each_backend(|b, app, t, _| {
        let r = t.add.schedule((4, 4), Duration::from_millis(300)).unwrap();
        assert_eq!(drain(&app), 0, "{b}: not due yet");
        assert_eq!(app.storage().counts().unwrap().scheduled, 1);
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(drain(&app), 1);
        assert_eq!(r.get().unwrap(), Some(8));
        let at = t
            .add
            .schedule((1, 1), SystemTime::now() + Duration::from_secs(3600))
            .unwrap();
        assert_eq!(drain(&app), 0);
        assert!(at.get().unwrap().is_none());
    });
}

#[test]
fn expired_task_is_skipped_not_run() {
    each_backend(|b, app, t, attempts| {
        let r = t
            .flaky
            .call(0)
            .expires(Duration::from_millis(50))
            .enqueue()
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        drain(&app);
        assert_eq!(attempts.load(Ordering::SeqCst), 0, "{b}: it never ran");
        let Err(Error::Task(e)) = r.get() else {
            panic!("{b}")
        };
        assert_eq!(e.kind, FailureKind::Expired);
        let fresh = t
            .flaky
            .call(0)
            .expires(SystemTime::now() + Duration::from_secs(60))
            .enqueue()
            .unwrap();
        drain(&app);
        assert_eq!(fresh.get().unwrap(), Some(1));
    });
}

#[test]
fn revoke_by_id_and_restore() {
    each_backend(|b, app, t, _| {
        let r = t.add.enqueue((1, 1)).unwrap();
        r.revoke().unwrap();
        assert!(r.is_revoked().unwrap());
        assert!(r.is_revoked().unwrap(), "{b}: is_revoked changes nothing");
        let kept = t.add.enqueue((2, 2)).unwrap();
        drain(&app);
        assert!(
            matches!(r.get(), Err(Error::Task(e)) if e.kind == FailureKind::Revoked),
            "{b}"
        );
        assert_eq!(kept.get().unwrap(), Some(4));

        let r2 = t.add.enqueue((3, 3)).unwrap();
        r2.revoke().unwrap();
        assert!(r2.restore().unwrap());
        assert!(!r2.is_revoked().unwrap());
        drain(&app);
        assert_eq!(r2.get().unwrap(), Some(6));
    });
}

#[test]
fn revoke_a_task_type_once_and_until_a_time() {
    each_backend(|b, app, t, _| {
        t.add.revoke_with(Revoke::once()).unwrap();
        assert!(t.add.is_revoked().unwrap());
        let a = t.add.enqueue((1, 0)).unwrap();
        let c = t.add.enqueue((2, 0)).unwrap();
        drain(&app);
        assert!(
            matches!(a.get(), Err(Error::Task(_))),
            "{b}: the first is skipped"
        );
        assert_eq!(c.get().unwrap(), Some(2), "{b}: only once");

        t.add
            .revoke_with(Revoke::until(
                SystemTime::now() + Duration::from_millis(300),
            ))
            .unwrap();
        let d = t.add.enqueue((3, 0)).unwrap();
        drain(&app);
        assert!(matches!(d.get(), Err(Error::Task(_))), "{b}");
        std::thread::sleep(Duration::from_millis(350));
        assert!(!t.add.is_revoked().unwrap());
        let e = t.add.enqueue((4, 0)).unwrap();
        drain(&app);
        assert_eq!(e.get().unwrap(), Some(4), "{b}: revocation over");

        t.add.revoke().unwrap();
        assert!(t.add.restore().unwrap());
        let f = t.add.enqueue((5, 0)).unwrap();
        drain(&app);
        assert_eq!(f.get().unwrap(), Some(5));
    });
}

#[test]
fn reschedule_revokes_the_original_and_schedules_a_copy() {
    each_backend(|b, app, t, _| {
        let r = t.add.enqueue((7, 7)).unwrap();
        let again = r.reschedule(Duration::from_millis(100)).unwrap();
        assert_ne!(again.id(), r.id());
        drain(&app);
        assert!(
            matches!(r.get(), Err(Error::Task(_))),
            "{b}: original revoked"
        );
        std::thread::sleep(Duration::from_millis(150));
        drain(&app);
        assert_eq!(again.get().unwrap(), Some(14), "{b}");
    });
}

#[test]
fn unit_results_are_not_stored_unless_asked() {
    each_backend(|b, app, t, _| {
        let r = t.noop.enqueue(()).unwrap();
        drain(&app);
        assert!(!r.is_ready().unwrap(), "{b}");
        assert_eq!(app.storage().counts().unwrap().results, 0);
        let kept = t.noop.call(()).store_result(true).enqueue().unwrap();
        drain(&app);
        assert_eq!(kept.get().unwrap(), Some(()), "{b}");
        let zero = app
            .task("zero")
            .register(|(): ()| Ok::<u8, String>(0))
            .unwrap()
            .enqueue(())
            .unwrap();
        drain(&app);
        assert_eq!(zero.get().unwrap(), Some(0), "{b}: a zero is a result");
        let dropped = t.add.call((1, 1)).store_result(false).enqueue().unwrap();
        drain(&app);
        assert!(!dropped.is_ready().unwrap());
    });
}

#[test]
fn batch_enqueue_writes_many_in_one_call() {
    each_backend(|b, app, t, _| {
        let handles = t.add.enqueue_many((0..100).map(|i| (i, i))).unwrap();
        assert_eq!(app.storage().counts().unwrap().ready, 100, "{b}");
        drain(&app);
        for (i, h) in handles.iter().enumerate() {
            assert_eq!(h.get().unwrap(), Some(2 * i as i64));
        }
    });
}

#[test]
fn panicking_task_fails_with_its_message() {
    each_backend(|b, app, _, _| {
        let p = app
            .task("panics")
            .register(|(): ()| -> Result<(), String> { panic!("kaboom") })
            .unwrap();
        let r = p.enqueue(()).unwrap();
        drain(&app);
        let Err(Error::Task(e)) = r.get() else {
            panic!("{b}")
        };
        assert_eq!((e.kind, e.message.as_str()), (FailureKind::Panic, "kaboom"));
    });
}

#[test]
fn undecodable_and_unknown_messages_are_dead_lettered_and_the_rest_runs() {
    each_backend(|b, app, t, _| {
        let s = app.storage();
        let garbage = Ready {
            id: "x".into(),
            queue: "default".into(),
            priority: 0,
            payload: vec![1, 0xff, 0xfe],
        };
        let unknown = Message::new("nope", vec![], Default::default());
        let unknown_ready = Ready {
            id: unknown.id.clone(),
            queue: "default".into(),
            priority: 0,
            payload: unknown.encode().unwrap(),
        };
        s.apply(&huey::storage::Batch {
            enqueue: vec![garbage, unknown_ready],
            ..Default::default()
        })
        .unwrap();
        let ok = t.add.enqueue((1, 2)).unwrap();
        assert_eq!(drain(&app), 3);
        assert_eq!(ok.get().unwrap(), Some(3), "{b}");
        let dead = s.dead(10).unwrap();
        assert_eq!(dead.len(), 2, "{b}");
        assert!(
            dead[0].error.contains("undecodable"),
            "{b}: {}",
            dead[0].error
        );
        assert!(dead[1].error.contains("nope"), "{b}: {}", dead[1].error);
        let r = app.result::<()>(unknown.id.clone());
        assert!(matches!(r.get(), Err(Error::Task(e)) if e.kind == FailureKind::UnknownTask));
        assert_eq!(
            s.counts().unwrap().ready + s.counts().unwrap().in_flight,
            0,
            "{b}: all acked"
        );
    });
}

#[test]
fn a_revoke_once_entry_is_not_used_up_by_a_message_that_would_not_run() {
    each_backend(|b, app, t, _| {
        // A message of a task this app does not register (e.g. mid-deploy): dead-lettered, and
        // the revoke-once entry for it is still there for the consumer that knows the task.
        let ghost = Message::new("ghost", vec![], huey::message::MessageOptions::default());
        app.enqueue_messages(std::slice::from_ref(&ghost)).unwrap();
        app.revoke_id(&ghost.id, Revoke::once()).unwrap();
        drain(&app);
        assert!(app.is_id_revoked(&ghost.id).unwrap(), "{b}: unknown task");

        // A message made ready before its eta goes back to the schedule, entry untouched.
        let mut early = t.add.call((1, 1)).to_message().unwrap();
        early.eta_ms = Some(huey::clock::now_ms() + 60_000);
        let ready = Ready {
            id: early.id.clone(),
            queue: "default".into(),
            priority: 0,
            payload: early.encode().unwrap(),
        };
        app.storage()
            .apply(&huey::storage::Batch {
                enqueue: vec![ready],
                ..Default::default()
            })
            .unwrap();
        app.revoke_id(&early.id, Revoke::once()).unwrap();
        drain(&app);
        assert!(app.is_id_revoked(&early.id).unwrap(), "{b}: early eta");
        assert_eq!(app.storage().counts().unwrap().scheduled, 1, "{b}");
    });
}

#[test]
fn immediate_mode_runs_each_callers_tasks_in_its_own_thread() {
    let app = Huey::immediate("t");
    let slow = app
        .task("slow")
        .register(|ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(format!("{:?}", std::thread::current().id()))
        })
        .unwrap();
    // A handler that slows every enqueue widens any window in which one caller could run
    // another's task.
    app.on_event(|_| std::thread::sleep(Duration::from_millis(1)));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let slow = slow.clone();
            std::thread::spawn(move || {
                let me = format!("{:?}", std::thread::current().id());
                for _ in 0..25 {
                    let r = slow.enqueue(if i == 0 { 5 } else { 0 }).unwrap();
                    assert_eq!(
                        r.get().unwrap(),
                        Some(me.clone()),
                        "ran in the caller, at once"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn immediate_mode_runs_tasks_in_the_caller() {
    let app = Huey::immediate("t");
    let attempts = Arc::new(AtomicU32::new(0));
    let t = register(&app, attempts.clone());
    assert_eq!(t.add.enqueue((20, 22)).unwrap().get().unwrap(), Some(42));
    assert_eq!(
        t.flaky.enqueue(2).unwrap().get().unwrap(),
        Some(3),
        "retries run at once too"
    );
    assert!(matches!(
        t.fail.enqueue("x".into()).unwrap().get(),
        Err(Error::Task(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    let durable = Huey::open(
        "t2",
        &format!("sqlite:{}", dir.path().join("x.db").display()),
    )
    .unwrap();
    let add = durable
        .task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .unwrap();
    durable.set_immediate(true);
    assert_eq!(add.enqueue((1, 1)).unwrap().get().unwrap(), Some(2));
    durable.set_immediate(false);
    let later = add.enqueue((2, 2)).unwrap();
    assert_eq!(
        later.get().unwrap(),
        None,
        "back on the durable storage, nothing ran"
    );
    assert_eq!(durable.storage().counts().unwrap().ready, 1);
}

#[test]
fn task_code_can_enqueue_through_its_context() {
    each_backend(|b, app, t, _| {
        let add = t.add.clone();
        let spawner = app
            .task("spawner")
            .register_with_context(move |n: i64, ctx: &huey::TaskContext| {
                assert_eq!(ctx.task(), "spawner");
                add.enqueue((n, n))
                    .map(|r| r.id().to_string())
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        let r = spawner.enqueue(21).unwrap();
        drain(&app);
        let child = app.result::<i64>(r.get().unwrap().unwrap());
        assert_eq!(child.get().unwrap(), Some(42), "{b}");
    });
}

#[test]
fn bad_storage_urls_are_clear_errors() {
    for url in ["mysql://x", "sqlite:", "nonsense"] {
        let e = storage::open(url, "t").err().expect(url).to_string();
        assert!(e.contains(url) || e.contains("sqlite:PATH"), "{url}: {e}");
    }
    // An unreachable Postgres host is named in the error.
    let e = storage::open("postgres://nowhere.invalid/db", "t")
        .err()
        .expect("an unreachable postgres")
        .to_string();
    assert!(
        e.contains("postgres") && e.contains("nowhere.invalid"),
        "{e}"
    );
}

#[test]
fn results_expire_after_the_app_result_ttl() {
    each_backend(|b, app, t, _| {
        app.set_result_ttl(Some(Duration::from_millis(200)));
        let r = t.add.enqueue((1, 1)).unwrap().preserve();
        drain(&app);
        assert_eq!(r.get().unwrap(), Some(2), "{b}: there before the ttl");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            app.result::<i64>(r.id()).get().unwrap(),
            None,
            "{b}: gone after it"
        );
    });
}
