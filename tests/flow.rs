//! Workflows and task control on every storage (memory, SQLite, Redis), run with a drain loop:
//! pipelines, groups, chords, map, locks, rate limits, cancel/retry from task code, hooks,
//! events and named queues.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use huey::storage::{self, Storage};
use huey::task::Control;
use huey::{Error, EventKind, FailureKind, Huey, Revoke, Task, TaskError};
use parking_lot::Mutex;

const LONG: Duration = Duration::from_secs(10);
const HOUR: Duration = Duration::from_secs(3600);

/// Where a test's app keeps its queue; `handle()` opens another handle on the same storage.
enum Backend {
    Memory(Arc<dyn Storage>),
    Sqlite(tempfile::TempDir),
    Redis(RedisServer),
}

impl Backend {
    fn all() -> Vec<Backend> {
        vec![
            Backend::Memory(storage::open("memory:", "t").unwrap()),
            Backend::Sqlite(tempfile::tempdir().unwrap()),
            Backend::Redis(RedisServer::start()),
        ]
    }
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Redis(_) => "redis",
        }
    }
    fn handle(&self) -> Arc<dyn Storage> {
        match self {
            Backend::Memory(s) => s.clone(),
            Backend::Sqlite(d) => {
                storage::open(&format!("sqlite:{}", d.path().join("t.db").display()), "t").unwrap()
            }
            Backend::Redis(r) => storage::open(&r.url(), "t").unwrap(),
        }
    }
}

fn drain_queues(app: &Huey, queues: &[&str]) -> usize {
    common::drain(app, queues)
}

fn drain(app: &Huey) -> usize {
    drain_queues(app, &["default"])
}

struct Tasks {
    add: Task<(i64, i64), i64>,
    double: Task<i64, i64>,
    /// Fails for a negative number.
    check: Task<i64, i64>,
    /// An error handler: the name of the task that failed and why.
    on_error: Task<TaskError, String>,
    /// A chord callback: one word per member outcome.
    summary: Task<Vec<Result<i64, TaskError>>, String>,
    /// A chord callback with an extra argument.
    labelled: Task<(Vec<Result<i64, TaskError>>, String), String>,
}

fn describe(outcomes: &[Result<i64, TaskError>]) -> String {
    outcomes
        .iter()
        .map(|o| match o {
            Ok(v) => v.to_string(),
            Err(e) => e.kind.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn register(app: &Huey) -> Tasks {
    Tasks {
        add: app
            .task("add")
            .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
            .unwrap(),
        double: app
            .task("double")
            .register(|a: i64| Ok::<_, String>(a * 2))
            .unwrap(),
        check: app
            .task("check")
            .register(|a: i64| {
                if a < 0 {
                    Err(format!("{a} < 0"))
                } else {
                    Ok(a)
                }
            })
            .unwrap(),
        on_error: app
            .task("on_error")
            .register(|e: TaskError| Ok::<_, String>(format!("{} {}", e.task, e.kind)))
            .unwrap(),
        summary: app
            .task("summary")
            .register(|o: Vec<Result<i64, TaskError>>| Ok::<_, String>(describe(&o)))
            .unwrap(),
        labelled: app
            .task("labelled")
            .register(|(o, label): (Vec<Result<i64, TaskError>>, String)| {
                Ok::<_, String>(format!("{label}:{}", describe(&o)))
            })
            .unwrap(),
    }
}

/// Run `f` on a fresh app on each backend.
fn each_backend(f: impl Fn(&str, &Backend, Huey, Tasks)) {
    for b in Backend::all() {
        let app = Huey::new("t", b.handle());
        let tasks = register(&app);
        f(b.name(), &b, app, tasks);
    }
}

/// Collect the kinds of every event the app's handlers see.
fn record_events(app: &Huey) -> Arc<Mutex<Vec<(EventKind, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    app.on_event(move |e| s.lock().push((e.kind, e.task.clone())));
    seen
}

fn kinds_for(seen: &Mutex<Vec<(EventKind, String)>>, task: &str) -> Vec<EventKind> {
    seen.lock()
        .iter()
        .filter(|(_, t)| t == task)
        .map(|(k, _)| *k)
        .collect()
}

// ----- pipelines -------------------------------------------------------------------------------

#[test]
fn pipeline_passes_each_result_to_the_next_stage() {
    each_backend(|b, _, app, t| {
        let p = t.add.s((1, 2)).then(&t.add, 10).then_with(&t.double);
        assert_eq!(p.len(), 3);
        let r = p.enqueue().unwrap();
        assert_eq!(drain(&app), 3, "{b}");
        assert_eq!(
            r.get_all().unwrap(),
            vec![
                Some(Ok(serde_json::json!(3))),
                Some(Ok(serde_json::json!(13))),
                Some(Ok(serde_json::json!(26)))
            ],
            "{b}"
        );
        assert_eq!(r.stage::<i64>(1).unwrap().get().unwrap(), Some(13), "{b}");
        assert_eq!(r.wait(LONG).unwrap(), 26, "{b}");
    });
}

#[test]
fn pipeline_stages_take_their_own_delay_priority_and_queue() {
    each_backend(|b, _, app, t| {
        let before = huey::clock::now_ms();
        let r = t
            .add
            .s((1, 2))
            .pipeline()
            .priority(5)
            .then(&t.add, 10)
            .delay(HOUR)
            .priority(9)
            .then_with(&t.double)
            .queue("later")
            .enqueue()
            .unwrap();
        let first = huey::Message::decode(&app.storage().pending(10).unwrap()[0]).unwrap();
        assert_eq!(first.priority(), 5, "{b}");
        assert_eq!(drain(&app), 1, "{b}: the second stage waits");
        // The second stage is scheduled an hour after the first one succeeded, at priority 9.
        let scheduled = app.storage().scheduled(10).unwrap();
        assert_eq!(scheduled.len(), 1, "{b}");
        let (eta, payload) = &scheduled[0];
        assert!(*eta >= before + 3_600_000, "{b}: eta {eta} from {before}");
        assert!(*eta <= huey::clock::now_ms() + 3_600_000, "{b}");
        let second = huey::Message::decode(payload).unwrap();
        assert_eq!((second.task.as_str(), second.priority()), ("add", 9), "{b}");
        let third = second.on_complete.as_ref().unwrap();
        assert_eq!((third.queue(), third.eta_ms), ("later", None), "{b}");
        assert_eq!(r.stage::<i64>(0).unwrap().get().unwrap(), Some(3), "{b}");
    });
}

#[test]
fn a_stage_runs_on_its_own_queue() {
    each_backend(|b, _, app, t| {
        let r = t
            .add
            .s((1, 2))
            .then_with(&t.double)
            .queue("later")
            .enqueue()
            .unwrap();
        assert_eq!(drain(&app), 1, "{b}");
        assert_eq!(drain(&app), 0, "{b}: not on the default queue");
        assert_eq!(drain_queues(&app, &["later"]), 1, "{b}");
        assert_eq!(r.wait(LONG).unwrap(), 6, "{b}");
    });
}

#[test]
fn a_delay_on_the_first_stage_schedules_the_pipeline() {
    each_backend(|b, _, app, t| {
        let before = huey::clock::now_ms();
        t.add
            .s((1, 2))
            .pipeline()
            .delay(HOUR)
            .then_with(&t.double)
            .enqueue()
            .unwrap();
        let c = app.storage().counts().unwrap();
        assert_eq!((c.ready, c.scheduled), (0, 1), "{b}");
        let (eta, _) = app.storage().scheduled(1).unwrap()[0].clone();
        assert!(eta >= before + 3_600_000, "{b}");
    });
}

#[test]
fn pipeline_enqueued_through_the_app_returns_one_handle_per_stage() {
    each_backend(|b, _, app, t| {
        let r = app
            .enqueue_pipeline(t.double.s(4).then_with(&t.double))
            .unwrap();
        assert_eq!(r.ids().len(), 2);
        drain(&app);
        assert_eq!(r.stage::<i64>(0).unwrap().get().unwrap(), Some(8), "{b}");
        assert_eq!(r.last().get().unwrap(), Some(16), "{b}");
    });
}

#[test]
fn failed_stage_stops_the_chain_and_runs_the_error_handler() {
    each_backend(|b, _, app, t| {
        let r = t
            .add
            .s((-5, 1))
            .then_with(&t.check)
            .then_with(&t.double)
            .error(&t.on_error)
            .enqueue()
            .unwrap();
        assert_eq!(
            drain(&app),
            3,
            "{b}: add, check, then the handler (not double)"
        );
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("{b}: expected the failing stage's error")
        };
        assert_eq!((e.task.as_str(), e.kind), ("check", FailureKind::Error));
        assert_eq!(
            r.last().get().unwrap(),
            None,
            "{b}: the last stage never ran"
        );
        let handler = r.error_handler::<String>().unwrap();
        assert_eq!(
            handler.get().unwrap().as_deref(),
            Some("check error"),
            "{b}"
        );
    });
}

#[test]
fn revoked_stage_stops_the_chain() {
    each_backend(|b, _, app, t| {
        let r = t.double.s(1).then_with(&t.double).enqueue().unwrap();
        app.revoke_id(r.ids()[0], Revoke::default()).unwrap();
        assert_eq!(drain(&app), 1, "{b}");
        assert_eq!(r.last().get().unwrap(), None);
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("{b}: expected revoked")
        };
        assert_eq!(e.kind, FailureKind::Revoked);
    });
}

#[test]
fn pipeline_runs_at_once_in_immediate_mode() {
    let app = Huey::immediate("t");
    let t = register(&app);
    let r = t.add.s((2, 2)).then_with(&t.double).enqueue().unwrap();
    assert_eq!(r.last().get().unwrap(), Some(8));
}

// ----- groups, chords, map ---------------------------------------------------------------------

#[test]
fn group_results_come_back_in_member_order() {
    each_backend(|b, _, app, t| {
        let g = app.group((0..5).map(|i| t.add.s((i, i))));
        assert_eq!(g.len(), 5);
        let r = g.enqueue().unwrap();
        assert_eq!(r.get().unwrap(), None, "{b}: nothing before they ran");
        drain(&app);
        assert_eq!(r.wait(LONG).unwrap(), vec![0, 2, 4, 6, 8], "{b}");
        assert_eq!(r.get().unwrap(), Some(vec![0, 2, 4, 6, 8]), "{b}");
    });
}

#[test]
fn map_is_a_group_of_calls_of_one_task_and_yields_as_completed() {
    each_backend(|b, _, app, t| {
        let r = t.check.map([3, -1, 5]).enqueue().unwrap();
        drain(&app);
        let mut seen: Vec<(usize, Result<i64, FailureKind>)> = r
            .as_completed(LONG)
            .map(|x| {
                let (i, o) = x.unwrap();
                (i, o.map_err(|e| e.kind))
            })
            .collect();
        seen.sort_by_key(|(i, _)| *i);
        assert_eq!(
            seen,
            vec![(0, Ok(3)), (1, Err(FailureKind::Error)), (2, Ok(5))],
            "{b}"
        );
        assert!(matches!(r.wait(LONG), Err(Error::Task(_))), "{b}");
    });
}

#[test]
fn chord_callback_gets_every_outcome_in_member_order() {
    each_backend(|b, _, app, t| {
        let members = vec![
            t.check.s(1),
            t.check.s(-1),
            t.check.s(3),
            t.check.s(4),
            t.check.s(5).expires(Duration::from_millis(1)),
        ];
        let chord = app.group(members).then_with(&t.summary).enqueue().unwrap();
        chord.members.handles()[3].revoke().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drain(&app);
        assert_eq!(
            chord.callback.wait(LONG).unwrap(),
            "1,error,3,revoked,expired",
            "{b}"
        );
        assert_eq!(chord.members.handles()[0].get().unwrap(), Some(1), "{b}");
    });
}

#[test]
fn chord_callback_takes_extra_arguments() {
    each_backend(|b, _, app, t| {
        let chord = t
            .double
            .map([1, 2])
            .then(&t.labelled, "sum".to_string())
            .enqueue()
            .unwrap();
        drain(&app);
        assert_eq!(chord.callback.wait(LONG).unwrap(), "sum:2,4", "{b}");
    });
}

#[test]
fn chord_of_no_members_fires_at_once() {
    each_backend(|b, _, app, t| {
        let chord = t.double.map([]).then_with(&t.summary).enqueue().unwrap();
        drain(&app);
        assert_eq!(chord.callback.wait(LONG).unwrap(), "", "{b}");
    });
}

#[test]
fn chord_fires_exactly_once_when_members_complete_on_many_consumers_at_once() {
    for b in Backend::all() {
        let runs = Arc::new(AtomicU32::new(0));
        let consumers: Vec<Huey> = (0..4)
            .map(|_| {
                let app = Huey::new("t", b.handle());
                let t = register(&app);
                let r = runs.clone();
                app.task("count")
                    .register(move |o: Vec<Result<i64, TaskError>>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, String>(o.len())
                    })
                    .unwrap();
                let _ = t;
                app
            })
            .collect();
        let producer = &consumers[0];
        let count: Task<Vec<Result<i64, TaskError>>, usize> =
            Task::from_name(producer, "count").unwrap();
        let double: Task<i64, i64> = Task::from_name(producer, "double").unwrap();
        let chord = double.map(0..40).then_with(&count).enqueue().unwrap();
        let threads: Vec<_> = consumers
            .iter()
            .cloned()
            .map(|app| std::thread::spawn(move || drain(&app)))
            .collect();
        let ran: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        drain(producer);
        assert_eq!(chord.callback.wait(LONG).unwrap(), 40, "{}", b.name());
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{}: ran {ran}", b.name());
    }
}

// ----- locks -----------------------------------------------------------------------------------

#[test]
fn lock_is_exclusive_released_on_drop_and_only_by_its_holder() {
    each_backend(|b, _, app, _| {
        let lock = app.lock_task("report");
        let guard = lock.acquire().unwrap();
        assert!(lock.is_locked().unwrap(), "{b}");
        assert!(matches!(lock.acquire(), Err(Error::Locked(n)) if n == "report"));
        drop(guard);
        assert!(!lock.is_locked().unwrap(), "{b}: released on drop");
        assert_eq!(lock.with_lock(|| 7).unwrap(), 7);
        // A holder whose TTL ran out cannot release the next holder's lock.
        let short = app.lock_task("report").ttl(Duration::from_millis(100));
        let stale = short.acquire().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let fresh = lock.acquire().unwrap();
        assert!(
            !stale.release().unwrap(),
            "{b}: the stale holder releases nothing"
        );
        assert!(lock.is_locked().unwrap(), "{b}");
        std::mem::forget(fresh);
        app.flush_locks().unwrap();
        assert!(
            !lock.is_locked().unwrap(),
            "{b}: flush_locks breaks every lock"
        );
    });
}

#[test]
fn task_with_a_held_lock_fails_as_locked_and_follows_its_retry_policy() {
    each_backend(|b, _, app, _| {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = app
            .task("exclusive")
            .lock("shared")
            .retries(1)
            .register(move |(): ()| {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(1u8)
            })
            .unwrap();
        let seen = record_events(&app);
        let guard = app.lock_task("shared").acquire().unwrap();
        let h = task.enqueue(()).unwrap();
        assert_eq!(drain(&app), 2, "{b}: the first attempt and its retry");
        let Err(Error::Task(e)) = h.get() else {
            panic!("{b}: expected a lock failure")
        };
        assert_eq!((e.kind, e.attempt), (FailureKind::Locked, 2), "{b}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let kinds = kinds_for(&seen, "exclusive");
        assert!(kinds.contains(&EventKind::Locked), "{b}: {kinds:?}");
        assert!(kinds.contains(&EventKind::Retrying), "{b}: {kinds:?}");
        drop(guard);
        let h = task.enqueue(()).unwrap();
        drain(&app);
        assert_eq!(h.get().unwrap(), Some(1), "{b}");
        assert!(
            !app.lock_task("shared").is_locked().unwrap(),
            "{b}: released after"
        );
    });
}

#[test]
fn lock_taken_inside_task_code_fails_the_attempt_as_locked() {
    each_backend(|b, _, app, _| {
        let task = app
            .task("inner_lock")
            .register_with_context(|(): (), ctx: &huey::TaskContext| {
                let _guard = ctx.app().lock_task("inner").acquire()?;
                Ok::<_, Error>(5u32)
            })
            .unwrap();
        let held = app.lock_task("inner").acquire().unwrap();
        let h = task.enqueue(()).unwrap();
        drain(&app);
        let Err(Error::Task(e)) = h.get() else {
            panic!("{b}")
        };
        assert_eq!(e.kind, FailureKind::Locked, "{b}");
        drop(held);
        let h = task.enqueue(()).unwrap();
        drain(&app);
        assert_eq!(h.get().unwrap(), Some(5), "{b}");
    });
}

// ----- rate limits -----------------------------------------------------------------------------

#[test]
fn over_the_rate_limit_a_task_is_rescheduled_without_using_a_retry() {
    each_backend(|b, _, app, _| {
        let task = app
            .task("limited")
            .rate_limit("api", 2, HOUR)
            .register(|n: u32| Ok::<_, String>(n))
            .unwrap();
        let seen = record_events(&app);
        let hs: Vec<_> = (0..3).map(|i| task.enqueue(i).unwrap()).collect();
        assert_eq!(drain(&app), 3, "{b}");
        let done = hs.iter().filter(|h| h.get().unwrap().is_some()).count();
        assert_eq!(done, 2, "{b}: two per window");
        assert_eq!(app.storage().counts().unwrap().scheduled, 1, "{b}");
        let kinds = kinds_for(&seen, "limited");
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == EventKind::RateLimited)
                .count(),
            1,
            "{b}: {kinds:?}"
        );
        assert!(!kinds.contains(&EventKind::Error), "{b}");
    });
}

#[test]
fn rate_limited_task_runs_in_a_later_window() {
    each_backend(|b, _, app, _| {
        let task = app
            .task("per_second")
            .register_with_context(|n: u32, ctx: &huey::TaskContext| {
                ctx.app()
                    .rate_limit("tight", 1, Duration::from_millis(500))?;
                Ok::<_, Error>(n)
            })
            .unwrap();
        let hs: Vec<_> = (0..2).map(|i| task.enqueue(i).unwrap()).collect();
        let end = Instant::now() + LONG;
        while hs.iter().any(|h| !h.is_ready().unwrap()) && Instant::now() < end {
            drain(&app);
            std::thread::sleep(Duration::from_millis(50));
        }
        let got: Vec<_> = hs.iter().map(|h| h.get().unwrap()).collect();
        assert_eq!(got, vec![Some(0), Some(1)], "{b}");
    });
}

#[test]
fn rate_limit_is_shared_by_apps_on_one_storage() {
    for b in Backend::all() {
        let a1 = Huey::new("t", b.handle());
        let a2 = Huey::new("t", b.handle());
        assert!(a1.rate_limit("shared", 2, HOUR).is_ok());
        assert!(a2.rate_limit("shared", 2, HOUR).is_ok());
        let over = a2.rate_limit("shared", 2, HOUR);
        assert!(
            matches!(&over, Err(Error::RateLimited { retry_in, .. }) if *retry_in <= HOUR),
            "{}: {over:?}",
            b.name()
        );
        assert!(a1.rate_limit("other", 1, HOUR).is_ok());
    }
}

// ----- control from task code ------------------------------------------------------------------

#[test]
fn cancel_ends_a_task_without_a_retry() {
    each_backend(|b, _, app, _| {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = app
            .task("cancels")
            .retries(3)
            .register(move |(): ()| -> Result<(), Control> {
                r.fetch_add(1, Ordering::SeqCst);
                Err(Control::Cancel("not needed".into()))
            })
            .unwrap();
        let seen = record_events(&app);
        let h = task.enqueue(()).unwrap();
        drain(&app);
        let Err(Error::Task(e)) = h.get() else {
            panic!("{b}")
        };
        assert_eq!(
            (e.kind, e.message.as_str()),
            (FailureKind::Canceled, "not needed")
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{b}: no retry");
        assert!(
            kinds_for(&seen, "cancels").contains(&EventKind::Canceled),
            "{b}"
        );
    });
}

#[test]
fn retry_from_task_code_runs_again_without_using_a_retry() {
    each_backend(|b, _, app, _| {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let task = app
            .task("again")
            .register_with_context(move |(): (), ctx: &huey::TaskContext| {
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(ctx.retries_left(), 0);
                if n < 3 {
                    return Err(Control::Retry {
                        delay: Duration::ZERO,
                        reason: "not yet".into(),
                    });
                }
                let v: u32 = "42".parse()?;
                Ok(v + ctx.attempt())
            })
            .unwrap();
        let h = task.enqueue(()).unwrap();
        assert_eq!(drain(&app), 3, "{b}");
        assert_eq!(h.get().unwrap(), Some(45), "{b}");
    });
}

#[test]
fn errors_between_retries_are_stored_only_when_asked() {
    each_backend(|b, _, app, t| {
        for store in [false, true] {
            let h = t
                .check
                .s(-1)
                .retries(1)
                .retry_delay(HOUR)
                .store_errors_between_retries(store)
                .enqueue()
                .unwrap();
            drain(&app);
            match h.get() {
                Err(Error::Task(e)) if store => assert_eq!(e.attempt, 1, "{b}"),
                Ok(None) if !store => {}
                other => panic!("{b}: store={store}: {other:?}"),
            }
        }
    });
}

// ----- hooks and events ------------------------------------------------------------------------

#[test]
fn pre_execute_hook_can_cancel_and_post_execute_hook_sees_the_outcome() {
    each_backend(|b, _, app, t| {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let o = outcomes.clone();
        app.pre_execute(|ctx| {
            if ctx.task() == "check" {
                Err("checks are off".into())
            } else {
                Ok(())
            }
        });
        app.pre_execute(|_| panic!("a broken hook"));
        app.post_execute(move |ctx, f| o.lock().push((ctx.task().to_string(), f.map(|f| f.kind))));
        app.post_execute(|_, _| panic!("another broken hook"));
        let c = t.check.enqueue(1).unwrap();
        let d = t.double.enqueue(2).unwrap();
        drain(&app);
        let Err(Error::Task(e)) = c.get() else {
            panic!("{b}")
        };
        assert_eq!(
            (e.kind, e.message.as_str()),
            (FailureKind::Canceled, "checks are off")
        );
        assert_eq!(
            d.get().unwrap(),
            Some(4),
            "{b}: panicking hooks are not fatal"
        );
        assert_eq!(
            *outcomes.lock(),
            vec![
                ("check".to_string(), Some(FailureKind::Canceled)),
                ("double".to_string(), None)
            ],
            "{b}"
        );
    });
}

#[test]
fn handlers_see_enqueue_and_execution_events_and_may_panic() {
    each_backend(|b, _, app, t| {
        app.on_event(|_| panic!("a broken handler"));
        let seen = record_events(&app);
        t.double.enqueue(1).unwrap();
        // Far enough ahead that it is still in the future when written (a scheduled event).
        t.check.schedule(-1, Duration::from_millis(200)).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        drain(&app);
        assert_eq!(
            kinds_for(&seen, "double"),
            vec![
                EventKind::Enqueued,
                EventKind::Executing,
                EventKind::Complete
            ],
            "{b}"
        );
        assert_eq!(
            kinds_for(&seen, "check"),
            vec![EventKind::Scheduled, EventKind::Executing, EventKind::Error],
            "{b}"
        );
        let h = t
            .double
            .s(1)
            .expires(Duration::from_millis(1))
            .enqueue()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let r = t.double.enqueue(5).unwrap();
        r.revoke().unwrap();
        drain(&app);
        let kinds = kinds_for(&seen, "double");
        assert!(kinds.contains(&EventKind::Expired), "{b}: {kinds:?}");
        assert!(kinds.contains(&EventKind::Revoked), "{b}: {kinds:?}");
        let _ = h;
    });
}

// ----- named queues ----------------------------------------------------------------------------

#[test]
fn tasks_run_only_on_consumers_of_their_queue() {
    each_backend(|b, _, app, _| {
        let slow = app
            .task("slow")
            .queue("slow")
            .register(|n: u32| Ok::<_, String>(n))
            .unwrap();
        let fast = app
            .task("fast")
            .queue("fast")
            .register(|n: u32| Ok::<_, String>(n))
            .unwrap();
        let s = slow.enqueue(1).unwrap();
        let f = fast.enqueue(2).unwrap();
        let routed = slow.s(3).queue("fast").enqueue().unwrap();
        assert_eq!(drain_queues(&app, &["fast"]), 2, "{b}");
        assert_eq!(f.get().unwrap(), Some(2));
        assert_eq!(
            routed.get().unwrap(),
            Some(3),
            "{b}: a call can pick its queue"
        );
        assert_eq!(s.get().unwrap(), None, "{b}: not on a fast consumer");
        assert_eq!(drain_queues(&app, &["slow"]), 1, "{b}");
        assert_eq!(s.get().unwrap(), Some(1));
    });
}
