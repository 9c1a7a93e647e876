//! Task ids chosen by the caller (huey's `schedule(id=...)`) and unique tasks, on memory, real
//! SQLite files, a real redis-server and a real Postgres: a unique call is enqueued once while
//! a task with its id is queued, scheduled or running (retries waiting included), even with
//! many producers at once, and its id is free again once the task's final outcome is written.

#[macro_use]
mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use common::hueyd::{wait_until, Backend, Hueyd};
use huey::storage::Flush;
use huey::{Error, FailureKind, Huey, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// `every!(name, |app: Huey| ...)`: a test module `name` with the body run on the producer's
/// app over memory, SQLite, Redis and Postgres.
macro_rules! every {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn memory() {
                let app = Huey::open("hueyd", "memory:").unwrap();
                common::testbed::register(&app).unwrap();
                $body(app)
            }
            #[test]
            fn sqlite() {
                let b = Backend::sqlite();
                $body(b.app())
            }
            #[test]
            fn redis() {
                let b = Backend::redis();
                $body(b.app())
            }
            #[test]
            fn postgres() {
                let b = Backend::postgres();
                $body(b.app())
            }
        }
    };
}

fn add(app: &Huey) -> Task<(i64, i64), i64> {
    Task::from_name(app, "add").unwrap()
}

/// Run one ready delivery (after promoting what is due) in this thread; false when none was.
fn run_one(app: &Huey) -> bool {
    let s = app.storage();
    s.promote_due(huey::clock::now_ms(), 100).unwrap();
    let req = common::suite::request("test", &["default"], 1, common::suite::LONG_LEASE);
    match s.dequeue(&req).unwrap().pop() {
        Some(d) => {
            app.execute(&d).unwrap();
            true
        }
        None => false,
    }
}

every!(a_caller_chosen_id_keys_the_result, |app: Huey| {
    let add = add(&app);
    let h = add.call((2, 3)).id("invoice-42").enqueue().unwrap();
    assert_eq!(h.id(), "invoice-42");
    assert!(!h.is_duplicate());
    common::drain(&app, &["default"]);
    let by_id = app.result::<i64>("invoice-42");
    assert_eq!(by_id.wait(Duration::from_secs(10)).unwrap(), 5);
    // The same through a schedule, and through a task's builder options.
    let later = add
        .call((1, 1))
        .id("later-1")
        .delay(Duration::from_secs(3600))
        .enqueue()
        .unwrap();
    assert_eq!(later.id(), "later-1");
    assert_eq!(app.storage().counts().unwrap().scheduled, 1);
});

every!(bad_ids_are_refused_and_nothing_is_written, |app: Huey| {
    let add = add(&app);
    let long = "x".repeat(huey::message::MAX_ID_BYTES + 1);
    for bad in ["", long.as_str(), "line\nbreak"] {
        match add.call((1, 2)).id(bad).enqueue() {
            Err(Error::Config(m)) => assert!(m.contains("task id"), "{m}"),
            other => panic!("{bad:?} was accepted: {other:?}"),
        }
    }
    // A huge id is refused with a short error that names its start.
    match add.call((1, 2)).id("z".repeat(1 << 20)).enqueue() {
        Err(Error::Config(m)) => assert!(m.len() < 200 && m.contains("zzz\"..."), "{m}"),
        other => panic!("a huge id was accepted: {other:?}"),
    }
    let ok = "y".repeat(huey::message::MAX_ID_BYTES);
    add.call((1, 2)).id(ok).enqueue().unwrap();
    assert_eq!(app.storage().counts().unwrap().ready, 1, "only the good id");
});

every!(
    a_unique_call_is_enqueued_once_until_it_finishes,
    |app: Huey| {
        let add = add(&app);
        let first = add.call((1, 2)).id("u-1").unique().enqueue().unwrap();
        assert!(!first.is_duplicate());
        let again = add.call((5, 5)).id("u-1").unique().enqueue().unwrap();
        assert!(again.is_duplicate(), "a duplicate while queued");
        assert_eq!(again.id(), "u-1");
        assert_eq!(app.storage().counts().unwrap().ready, 1);
        // Other ids and calls without `unique` are not affected.
        assert!(!add
            .call((1, 1))
            .id("u-2")
            .unique()
            .enqueue()
            .unwrap()
            .is_duplicate());
        assert_eq!(common::drain(&app, &["default"]), 2);
        // The duplicate's handle reads the result of the task that was there.
        assert_eq!(again.wait(Duration::from_secs(10)).unwrap(), 3);
        let next = add.call((2, 2)).id("u-1").unique().enqueue().unwrap();
        assert!(!next.is_duplicate(), "free again once finished");
        common::drain(&app, &["default"]);
        assert_eq!(next.wait(Duration::from_secs(10)).unwrap(), 4);
    }
);

every!(a_scheduled_unique_task_holds_its_id, |app: Huey| {
    let add = add(&app);
    let call = || add.call((1, 2)).id("sched").unique();
    assert!(!call()
        .delay(Duration::from_secs(3600))
        .enqueue()
        .unwrap()
        .is_duplicate());
    assert!(call().enqueue().unwrap().is_duplicate());
    // Flushing the schedule gives the id back with the message.
    app.storage()
        .flush(Flush {
            schedule: true,
            ..Flush::default()
        })
        .unwrap();
    assert!(!call().enqueue().unwrap().is_duplicate());
    app.storage()
        .flush(Flush {
            queue: true,
            ..Flush::default()
        })
        .unwrap();
    assert!(!call().enqueue().unwrap().is_duplicate());
});

every!(unique_on_registration_applies_to_every_call, |app: Huey| {
    let once = app
        .task("unique_echo")
        .unique(true)
        .register(|s: String| Ok::<_, String>(s))
        .unwrap();
    assert!(!once
        .call("a".into())
        .id("e")
        .enqueue()
        .unwrap()
        .is_duplicate());
    assert!(once
        .call("b".into())
        .id("e")
        .enqueue()
        .unwrap()
        .is_duplicate());
    // enqueue_many: the second of two calls with one id in the same write is a duplicate.
    let handles = once
        .enqueue_many(["c".to_string(), "d".to_string()])
        .unwrap();
    assert!(handles.iter().all(|h| !h.is_duplicate()), "fresh ids");
});

every!(a_unique_task_keeps_its_id_through_retries, |app: Huey| {
    // `failing` has one retry: its first failure schedules the retry, the second is final.
    let failing: Task<u64, u32> = Task::from_name(&app, "failing").unwrap();
    let call = || failing.call(0).id("retried").unique();
    assert!(!call().enqueue().unwrap().is_duplicate());
    assert!(run_one(&app), "the first attempt ran");
    assert!(call().enqueue().unwrap().is_duplicate(), "its retry waits");
    assert!(run_one(&app), "the retry ran");
    match app.result::<u32>("retried").wait(Duration::from_secs(10)) {
        Err(Error::Task(e)) => assert_eq!(e.attempt, 2),
        other => panic!("{other:?}"),
    }
    assert!(
        !call().enqueue().unwrap().is_duplicate(),
        "released by the final failure"
    );
});

every!(
    revoked_and_expired_unique_tasks_release_their_id,
    |app: Huey| {
        let add = add(&app);
        let h = add.call((1, 2)).id("rev").unique().enqueue().unwrap();
        h.revoke_with(huey::revoke::Revoke::once()).unwrap();
        common::drain(&app, &["default"]);
        assert!(matches!(
            h.get(),
            Err(Error::Task(e)) if e.kind == FailureKind::Revoked
        ));
        assert!(!add
            .call((1, 2))
            .id("rev")
            .unique()
            .enqueue()
            .unwrap()
            .is_duplicate());
        common::drain(&app, &["default"]);

        let past = SystemTime::now() - Duration::from_secs(1);
        let h = add
            .call((1, 2))
            .id("exp")
            .unique()
            .expires(past)
            .enqueue()
            .unwrap();
        common::drain(&app, &["default"]);
        assert!(matches!(
            h.get(),
            Err(Error::Task(e)) if e.kind == FailureKind::Expired
        ));
        assert!(!add
            .call((1, 2))
            .id("exp")
            .unique()
            .enqueue()
            .unwrap()
            .is_duplicate());
    }
);

every!(
    a_unique_task_dead_lettered_after_too_many_deliveries_frees_its_id,
    |app: Huey| {
        let add = add(&app);
        let call = || add.call((1, 2)).id("worn").unique();
        assert!(!call().enqueue().unwrap().is_duplicate());
        let s = app.storage();
        let lease = Duration::from_millis(100);
        let mut req = common::suite::request("lost", &["default"], 1, lease);
        req.max_deliveries = 1;
        // Delivered once and never acknowledged (its consumer was lost).
        assert_eq!(s.dequeue(&req).unwrap().len(), 1);
        assert!(
            call().enqueue().unwrap().is_duplicate(),
            "held while leased"
        );
        common::suite::sleep_past(lease);
        // Over the limit: the next dequeue dead-letters it, and its claim goes with it.
        assert!(s.dequeue(&req).unwrap().is_empty());
        assert_eq!(s.counts().unwrap().dead, 1);
        assert!(!call().enqueue().unwrap().is_duplicate());
    }
);

every!(sixteen_producers_enqueue_a_unique_id_once, |app: Huey| {
    for round in 0..3 {
        let id = format!("race-{round}");
        let start = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (app, start, id) = (app.clone(), start.clone(), id.clone());
                std::thread::spawn(move || {
                    let add = add(&app);
                    start.wait();
                    let h = add.call((i, 0)).id(id).unique().enqueue().unwrap();
                    !h.is_duplicate()
                })
            })
            .collect();
        let enqueued = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&e| e)
            .count();
        assert_eq!(enqueued, 1, "round {round}");
        assert_eq!(app.storage().counts().unwrap().ready, 1, "round {round}");
        assert_eq!(common::drain(&app, &["default"]), 1);
    }
});

#[test]
fn immediate_mode_runs_a_unique_call_and_frees_its_id() {
    let app = Huey::immediate("docs");
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .unwrap();
    for n in 0..2 {
        let h = add.call((n, 1)).id("now").unique().enqueue().unwrap();
        assert!(!h.is_duplicate());
        assert_eq!(h.get().unwrap(), Some(n + 1));
    }
}

/// A unique task whose consumer is SIGKILLed mid-run still holds its id; a new consumer runs
/// it again (its lease ran out), it completes, and the id is free.
fn killed_consumer_keeps_the_id_until_the_rerun_completes(b: Backend) {
    let app = b.app();
    let record: Task<u64, u32> = Task::from_name(&app, "record").unwrap();
    let call = || record.call(1500).id("kill-me").unique();
    assert!(!call().enqueue().unwrap().is_duplicate());
    let runs = || app.storage().incr("runs:kill-me", 0).unwrap();
    let args = ["-k", "process", "-w", "1", "-q", "--lease", "1"];
    let mut h = Hueyd::testbed(&b.url(), &args);
    assert!(wait_until(LONG, || runs() >= 1), "{}", h.log());
    h.signal(Signal::SIGKILL);
    h.wait_exit(LONG);
    drop(h);
    assert!(
        call().enqueue().unwrap().is_duplicate(),
        "held while leased"
    );
    let _h2 = Hueyd::testbed(&b.url(), &args);
    let handle = app.result::<u32>("kill-me");
    assert_eq!(handle.wait(LONG).unwrap(), 2, "ran again and completed");
    assert!(
        !call().enqueue().unwrap().is_duplicate(),
        "free once completed"
    );
}

#[test]
fn killed_consumer_keeps_the_id_until_the_rerun_completes_on_sqlite() {
    killed_consumer_keeps_the_id_until_the_rerun_completes(Backend::sqlite());
}

#[test]
fn killed_consumer_keeps_the_id_until_the_rerun_completes_on_redis() {
    killed_consumer_keeps_the_id_until_the_rerun_completes(Backend::redis());
}

#[test]
fn killed_consumer_keeps_the_id_until_the_rerun_completes_on_postgres() {
    killed_consumer_keeps_the_id_until_the_rerun_completes(Backend::postgres());
}

/// `hueyd --storage URL enqueue ARGS...`: (exit code, stdout, stderr).
fn hueyd_enqueue(b: &Backend, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(common::hueyd::exe())
        .args(["--storage", &b.url(), "enqueue"])
        .args(args)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

both!(hueyd_enqueue_takes_an_id_and_unique, |b: Backend| {
    let app = b.app();
    let (code, out, _) = hueyd_enqueue(&b, &["add", "[2, 3]", "--id", "cli-1", "--unique"]);
    assert_eq!((code, out.trim()), (0, "cli-1"));
    // A duplicate: the existing id printed all the same, said so on stderr, exit status 4.
    let (code, out, err) = hueyd_enqueue(&b, &["add", "[2, 3]", "--id", "cli-1", "--unique"]);
    assert_eq!((code, out.trim()), (4, "cli-1"), "{err}");
    assert!(err.contains("duplicate: task cli-1 is already"), "{err}");
    let (code, out, err) = hueyd_enqueue(
        &b,
        &["add", "[2, 3]", "--id", "cli-1", "--unique", "--json"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cli-1") && err.contains("already"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["duplicates"], serde_json::json!(["cli-1"]), "{v}");
    assert_eq!(v["ids"], serde_json::json!([]), "{v}");
    assert_eq!(app.storage().counts().unwrap().ready, 1);
    // A bad id is refused with a clear error; --id with --count is a usage error.
    let (code, _, err) = hueyd_enqueue(&b, &["add", "[2, 3]", "--id", ""]);
    assert_ne!(code, 0);
    assert!(err.contains("task id"), "{err}");
    let (code, _, _) = hueyd_enqueue(&b, &["add", "[2, 3]", "--id", "x", "--count", "2"]);
    assert_ne!(code, 0);
    common::drain(&app, &["default"]);
    assert_eq!(app.result::<i64>("cli-1").wait(LONG).unwrap(), 5);
    let (_, out, _) = hueyd_enqueue(&b, &["add", "[2, 3]", "--id", "cli-1", "--unique"]);
    assert_eq!(out.trim(), "cli-1", "free again");
});

every!(
    a_unique_stage_nested_in_another_task_releases_no_claim,
    |app: Huey| {
        let add = add(&app);
        // A unique task holds "nested" for an hour.
        let held = add
            .call((1, 1))
            .id("nested")
            .unique()
            .delay(Duration::from_secs(3600))
            .enqueue()
            .unwrap();
        assert!(!held.is_duplicate());
        // A stage with that id marked unique, nested in another task: it is written by that
        // task's outcome without taking a claim, so its own outcome must not release one.
        let mut stage = add.call((0, 0)).id("nested").unique().to_message().unwrap();
        stage.on_complete = None;
        let mut head = add.call((2, 2)).to_message().unwrap();
        head.on_complete = Some(Box::new(stage));
        app.enqueue_messages(std::slice::from_ref(&head)).unwrap();
        assert!(run_one(&app), "the head ran");
        assert!(run_one(&app), "the nested stage ran");
        assert!(
            add.call((3, 3))
                .id("nested")
                .unique()
                .enqueue()
                .unwrap()
                .is_duplicate(),
            "the scheduled unique task still holds its id"
        );
    }
);

every!(
    a_unique_task_retried_from_the_dead_letters_releases_no_claim,
    |app: Huey| {
        let add = add(&app);
        let call = || add.call((1, 2)).id("again").unique();
        assert!(!call().enqueue().unwrap().is_duplicate());
        let s = app.storage();
        let lease = Duration::from_millis(100);
        let mut req = common::suite::request("lost", &["default"], 1, lease);
        req.max_deliveries = 1;
        assert_eq!(s.dequeue(&req).unwrap().len(), 1);
        common::suite::sleep_past(lease);
        assert!(s.dequeue(&req).unwrap().is_empty());
        assert_eq!(s.counts().unwrap().dead, 1);
        // The id is free: a new unique task takes it (scheduled for an hour).
        assert!(!call()
            .delay(Duration::from_secs(3600))
            .enqueue()
            .unwrap()
            .is_duplicate());
        // The dead letter is retried by hand and runs: its outcome must not free the id the
        // scheduled task holds.
        assert_eq!(s.retry_dead(None).unwrap(), 1);
        assert!(run_one(&app), "the retried dead letter ran");
        assert!(
            call().enqueue().unwrap().is_duplicate(),
            "the scheduled unique task still holds its id"
        );
    }
);

every!(
    producers_enqueuing_several_unique_ids_in_any_order_all_succeed,
    |app: Huey| {
        // Sixteen producers enqueue the same eight unique ids in one call each, in different
        // orders: every call succeeds (none is a deadlock victim), each id is enqueued once.
        let (threads, keys, rounds) = (16u64, 8usize, 5usize);
        let start = Arc::new(Barrier::new(threads as usize));
        let producers: Vec<_> = (0..threads)
            .map(|i| {
                let (app, start) = (app.clone(), start.clone());
                std::thread::spawn(move || {
                    let add = add(&app);
                    start.wait();
                    let mut written = 0;
                    for round in 0..rounds {
                        let mut order: Vec<usize> = (0..keys).collect();
                        if i % 2 == 1 {
                            order.reverse();
                        }
                        order.rotate_left((i as usize + round) % keys);
                        let msgs: Vec<_> = order
                            .iter()
                            .map(|k| {
                                add.call((1, 1))
                                    .id(format!("many-{round}-{k}"))
                                    .unique()
                                    .to_message()
                                    .unwrap()
                            })
                            .collect();
                        let w = app.enqueue_messages_unique(&msgs).unwrap();
                        written += w.iter().filter(|&&w| w).count();
                    }
                    written
                })
            })
            .collect();
        let written: usize = producers.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(written, keys * rounds);
        assert_eq!(
            app.storage().counts().unwrap().ready,
            (keys * rounds) as u64
        );
    }
);

every!(flushing_one_part_keeps_the_ids_of_the_other, |app: Huey| {
    let add = add(&app);
    let queued = || add.call((1, 2)).id("in-queue").unique();
    let scheduled = || {
        add.call((1, 2))
            .id("in-schedule")
            .unique()
            .delay(Duration::from_secs(3600))
    };
    assert!(!queued().enqueue().unwrap().is_duplicate());
    assert!(!scheduled().enqueue().unwrap().is_duplicate());
    let flush = |queue, schedule| {
        app.storage()
            .flush(Flush {
                queue,
                schedule,
                ..Flush::default()
            })
            .unwrap()
    };
    // The queue goes with its task's id; the scheduled task keeps its own.
    flush(true, false);
    assert!(
        scheduled().enqueue().unwrap().is_duplicate(),
        "still scheduled"
    );
    assert!(!queued().enqueue().unwrap().is_duplicate());
    // And the other way round.
    flush(false, true);
    assert!(queued().enqueue().unwrap().is_duplicate(), "still queued");
    assert!(!scheduled().enqueue().unwrap().is_duplicate());
});
