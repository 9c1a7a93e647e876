//! huey parity in the smaller corners of the API, on real SQLite files and a real
//! redis-server: `Control::CancelRetry` (huey's `CancelExecution(retry=True)`), rate limits
//! with `retry = false`, their current usage and reset, and `reschedule` with a priority, an
//! expiry, and from a handle made from an id.

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::Backend;
use huey::task::Control;
use huey::{Error, EventKind, FailureKind, Huey, Reschedule, Task, TaskContext};

const LONG: Duration = Duration::from_secs(30);

fn drain(app: &Huey) -> usize {
    common::drain(app, &["default"])
}

both!(
    cancel_retry_runs_again_even_without_retries,
    |b: Backend| {
        let app = b.app();
        let events = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let e = events.clone();
        app.on_event(move |ev| e.lock().push(ev.kind));
        // No retries configured: a CancelRetry still runs it once more, a Cancel never does.
        let task = app
            .task("cancel_retry")
            .register_with_context(|retry: bool, ctx: &TaskContext| {
                if ctx.attempt() == 1 {
                    return Err(if retry {
                        Control::CancelRetry("not yet".into())
                    } else {
                        Control::Cancel("never".into())
                    });
                }
                Ok(ctx.attempt())
            })
            .unwrap();
        let again = task.enqueue(true).unwrap();
        let stop = task.enqueue(false).unwrap();
        assert_eq!(drain(&app), 3, "two first attempts and one retry");
        assert_eq!(again.wait(LONG).unwrap(), 2);
        assert!(matches!(stop.get(), Err(Error::Task(e)) if e.kind == FailureKind::Canceled));
        let seen = events.lock().clone();
        let canceled = seen.iter().filter(|k| **k == EventKind::Canceled).count();
        assert_eq!(canceled, 2, "{seen:?}");
        assert!(seen.contains(&EventKind::Retrying), "{seen:?}");
    }
);

both!(
    a_rate_limit_without_retry_fails_under_the_retry_policy,
    |b: Backend| {
        let app = b.app();
        let hour = Duration::from_secs(3600);
        let strict = app
            .task("strict")
            .rate_limit_retry(false)
            .rate_limit("strict-limit", 1, hour)
            .register(|n: u32| Ok::<_, String>(n))
            .unwrap();
        let first = strict.enqueue(1).unwrap();
        let second = strict.enqueue(2).unwrap();
        assert_eq!(drain(&app), 2);
        assert_eq!(first.wait(LONG).unwrap(), 1);
        match second.wait(LONG) {
            Err(Error::Task(e)) => assert_eq!((e.kind, e.attempt), (FailureKind::RateLimited, 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            app.storage().counts().unwrap().scheduled,
            0,
            "not rescheduled"
        );
        // With a retry, over the limit uses it up (and the retry is over the limit too).
        let retried = strict.call(3).retries(1).enqueue().unwrap();
        assert_eq!(drain(&app), 2);
        match retried.wait(LONG) {
            Err(Error::Task(e)) => assert_eq!((e.kind, e.attempt), (FailureKind::RateLimited, 2)),
            other => panic!("{other:?}"),
        }
        // The default still reschedules for the next window.
        let patient = app
            .task("patient")
            .rate_limit("strict-limit", 1, hour)
            .register(|n: u32| Ok::<_, String>(n))
            .unwrap();
        patient.enqueue(4).unwrap();
        drain(&app);
        assert_eq!(app.storage().counts().unwrap().scheduled, 1, "rescheduled");
    }
);

both!(rate_limit_usage_and_reset, |b: Backend| {
    let app = b.app();
    let hour = Duration::from_secs(3600);
    assert_eq!(app.rate_limit_usage("api", hour).unwrap(), 0);
    app.rate_limit("api", 2, hour).unwrap();
    app.rate_limit("api", 2, hour).unwrap();
    assert!(matches!(
        app.rate_limit("api", 2, hour),
        Err(Error::RateLimited { .. })
    ));
    assert_eq!(app.rate_limit_usage("api", hour).unwrap(), 3);
    app.rate_limit_reset("api", hour).unwrap();
    assert_eq!(app.rate_limit_usage("api", hour).unwrap(), 0);
    app.rate_limit("api", 2, hour).unwrap();
    assert_eq!(app.rate_limit_usage("api", hour).unwrap(), 1);
});

both!(
    reschedule_with_priority_expiry_and_from_an_id,
    |b: Backend| {
        let app = b.app();
        let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
        let later = add
            .call((1, 2))
            .id("to-move")
            .delay(Duration::from_secs(3600))
            .enqueue()
            .unwrap();
        drop(later);
        // A handle made from the id alone finds the call in storage.
        let by_id = app.result::<i64>("to-move");
        let moved = by_id
            .reschedule_with(Reschedule {
                priority: Some(7),
                expires: Some(Duration::from_secs(600).into()),
                ..Reschedule::default()
            })
            .unwrap();
        assert_ne!(moved.id(), "to-move");
        let pending = app.storage().pending(10).unwrap();
        assert_eq!(pending.len(), 1, "ready at once");
        let m = huey::Message::decode(&pending[0]).unwrap();
        assert_eq!(m.options.priority, 7);
        assert!(m.options.expires_at_ms.is_some());
        assert!(by_id.is_revoked().unwrap(), "the original is revoked once");
        app.storage().promote_due(u64::MAX / 2, 10).unwrap();
        drain(&app);
        assert_eq!(moved.wait(LONG).unwrap(), 3);
        // Nothing left under an id: a clear error.
        let gone = app.result::<i64>("no-such-task").reschedule(Duration::ZERO);
        assert!(matches!(gone, Err(Error::Config(m)) if m.contains("no-such-task")));
    }
);

/// Twelve results (ids `r-00`..`r-11`, one a final error) paged through five at a time.
fn list_results_in_pages(app: &Huey) {
    let add: Task<(i64, i64), i64> = Task::from_name(app, "add").unwrap();
    let fail: Task<String, ()> = Task::from_name(app, "fail").unwrap();
    for n in 0..11 {
        add.call((n, 1)).id(format!("r-{n:02}")).enqueue().unwrap();
    }
    fail.call("boom".into()).id("r-11").enqueue().unwrap();
    drain(app);
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = app.results_page(&after, 5).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().unwrap().0.clone();
        seen.extend(page);
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    let want: Vec<String> = (0..12).map(|n| format!("r-{n:02}")).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        matches!(&seen[11].1, Ok(huey::result::StoredResult::Err(e)) if e.message.contains("boom"))
    );
    // Listing consumed nothing.
    assert_eq!(app.result::<i64>("r-03").get().unwrap(), Some(4));
}

#[test]
fn results_are_listed_a_page_at_a_time_on_memory() {
    let app = Huey::open("hueyd", "memory:").unwrap();
    common::testbed::register(&app).unwrap();
    list_results_in_pages(&app);
}

#[test]
fn results_are_listed_a_page_at_a_time_on_postgres() {
    list_results_in_pages(&Backend::postgres().app());
}

both!(results_are_listed_a_page_at_a_time, |b: Backend| {
    let app = b.app();
    list_results_in_pages(&app);
    let out = std::process::Command::new(common::hueyd::exe())
        .args([
            "--storage",
            &b.url(),
            "results",
            "--limit",
            "3",
            "--after",
            "r-09",
            "--json",
        ])
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["id"], "r-10");
    assert_eq!(lines[0]["value"], 11);
    assert_eq!(lines[1]["status"], "error");
});

both!(
    an_undecodable_result_is_listed_and_the_listing_goes_on,
    |b: Backend| {
        let app = b.app();
        let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
        add.call((1, 1)).id("a-1").enqueue().unwrap();
        add.call((2, 2)).id("c-3").enqueue().unwrap();
        drain(&app);
        // Bytes that are not a result, stored between the two (in the real storage file or server).
        common::suite::put_result(&*app.storage(), "b-2", b"\xff\x00garbage", None);
        let page = app.results_page("", 10).unwrap();
        let ids: Vec<&str> = page.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a-1", "b-2", "c-3"]);
        assert!(
            matches!(&page[1].1, Err(Error::Decode(_))),
            "{:?}",
            page[1].1
        );
        assert!(page[2].1.is_ok());

        let run = |json: bool| {
            let mut args = vec!["--storage".to_string(), b.url(), "results".to_string()];
            if json {
                args.push("--json".into());
            }
            let out = std::process::Command::new(common::hueyd::exe())
                .args(&args)
                .env_remove("HUEY_STORAGE")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        let lines: Vec<serde_json::Value> = run(true)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[1]["id"], "b-2");
        assert_eq!(lines[1]["status"], "undecodable");
        assert!(!lines[1]["error"].as_str().unwrap().is_empty());
        assert_eq!(
            (lines[2]["id"].as_str(), lines[2]["value"].as_i64()),
            (Some("c-3"), Some(4))
        );
        let text = run(false);
        assert!(text.contains("b-2\t\tundecodable: "), "{text}");
        assert!(text.contains("c-3\tadd\t4"), "{text}");
    }
);
