//! huey parity in the library API, on real SQLite files and a real redis-server: the
//! app-wide "store no results" switch (huey's `results=False`) and `wait_or_revoke` (huey's
//! `get(revoke_on_timeout=True)`).

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::Backend;
use huey::{Error, FailureKind, Task};

both!(no_results_stores_neither_values_nor_errors, |b: Backend| {
    let app = b.app();
    assert!(app.stores_results());
    app.set_store_results(false);
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let fail: Task<String, ()> = Task::from_name(&app, "fail").unwrap();
    let sum = add.call((2, 3)).store_result(true).enqueue().unwrap();
    let err = fail.enqueue("boom".into()).unwrap();
    assert_eq!(common::drain(&app, &["default"]), 2);
    assert_eq!(app.storage().counts().unwrap().results, 0);
    assert!(matches!(sum.get(), Ok(None)), "no value");
    assert!(matches!(err.get(), Ok(None)), "no error");
    // Switched back on, results are stored again.
    app.set_store_results(true);
    let sum = add.enqueue((4, 5)).unwrap();
    common::drain(&app, &["default"]);
    assert_eq!(sum.wait(Duration::from_secs(10)).unwrap(), 9);
});

both!(
    wait_or_revoke_revokes_a_task_that_did_not_answer,
    |b: Backend| {
        let app = b.app();
        let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
        let late = add.enqueue((1, 1)).unwrap();
        let short = Duration::from_millis(50);
        assert!(matches!(late.wait_or_revoke(short), Err(Error::Timeout(_))));
        assert!(late.is_revoked().unwrap());
        // A task that answers in time is not revoked.
        let quick = add.enqueue((2, 2)).unwrap();
        common::drain(&app, &["default"]);
        assert_eq!(quick.wait_or_revoke(Duration::from_secs(10)).unwrap(), 4);
        assert!(!quick.is_revoked().unwrap());
        match late.wait(Duration::from_secs(10)) {
            Err(Error::Task(e)) => assert_eq!(e.kind, FailureKind::Revoked),
            other => panic!("the late task ran: {other:?}"),
        }
    }
);

both!(hooks_and_event_handlers_can_be_removed, |b: Backend| {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let events = Arc::new(AtomicUsize::new(0));
    let pre = Arc::new(AtomicUsize::new(0));
    let once = Arc::new(AtomicUsize::new(0));
    let e = events.clone();
    let handler = app.on_event(move |_| {
        e.fetch_add(1, Ordering::SeqCst);
    });
    let p = pre.clone();
    let hook = app.pre_execute(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    // A handler that removes itself from inside its first call.
    let own: Arc<OnceLock<huey::HookId>> = Arc::new(OnceLock::new());
    let (o, own2, app2) = (once.clone(), own.clone(), app.clone());
    let id = app.on_event(move |_| {
        o.fetch_add(1, Ordering::SeqCst);
        if let Some(id) = own2.get() {
            app2.remove_hook(*id);
        }
    });
    own.set(id).unwrap();
    add.enqueue((1, 2)).unwrap();
    common::drain(&app, &["default"]);
    let (e1, p1) = (events.load(Ordering::SeqCst), pre.load(Ordering::SeqCst));
    assert!(e1 > 0 && p1 == 1, "events {e1}, pre {p1}");
    assert_eq!(
        once.load(Ordering::SeqCst),
        1,
        "removed itself after one call"
    );
    assert!(app.remove_hook(handler) && app.remove_hook(hook));
    assert!(!app.remove_hook(handler), "already removed");
    add.enqueue((1, 2)).unwrap();
    common::drain(&app, &["default"]);
    assert_eq!(events.load(Ordering::SeqCst), e1, "no more events");
    assert_eq!(pre.load(Ordering::SeqCst), 1, "no more pre-execute calls");
    assert_eq!(once.load(Ordering::SeqCst), 1);
});
