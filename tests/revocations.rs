//! Revocations at scale: a consumer reads only the revocations that could apply to what it
//! fetched (by id and by task name), so many stored revocations of other tasks neither slow
//! it down nor change what runs. The real `hueyd` binary, on SQLite and Redis.

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::{Backend, Hueyd};
use huey::{Error, FailureKind, Revoke, Task};

const LONG: Duration = Duration::from_secs(60);
/// Revocations by id of task instances that never show up.
const OTHERS: usize = 20_000;
const TASKS: usize = 300;

fn many_revocations_of_other_ids(b: Backend, kind: &str) {
    let app = b.app();
    for i in 0..OTHERS {
        app.revoke_id(&format!("other-{i}"), Revoke::default())
            .unwrap();
    }
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let handles = add.enqueue_many((0..TASKS as i64).map(|i| (i, 1))).unwrap();
    for h in handles.iter().step_by(10) {
        h.revoke().unwrap();
    }
    // A revocation by name, once: exactly one echo is skipped.
    echo.revoke_with(Revoke::once()).unwrap();
    let echoes: Vec<_> = (0..5)
        .map(|i| echo.enqueue(format!("e{i}")).unwrap())
        .collect();

    let _h = Hueyd::start(&b.url(), &["-k", kind, "-w", "2"]);
    for (i, h) in handles.iter().enumerate() {
        if i % 10 == 0 {
            let Err(Error::Task(e)) = h.wait(LONG) else {
                panic!("task {i} was revoked and should not have run");
            };
            assert_eq!(e.kind, FailureKind::Revoked, "task {i}");
        } else {
            assert_eq!(h.wait(LONG).unwrap(), i as i64 + 1, "task {i}");
        }
    }
    let skipped = echoes
        .iter()
        .filter(|h| matches!(h.wait(LONG), Err(Error::Task(e)) if e.kind == FailureKind::Revoked))
        .count();
    assert_eq!(skipped, 1, "a revoke-once by name skips one instance");
    assert!(!echo.is_revoked().unwrap(), "and is used up");
    assert!(app.is_id_revoked("other-7").unwrap(), "others are kept");
}

#[test]
fn sqlite_thread_workers_skip_only_what_is_revoked_among_many_revocations() {
    many_revocations_of_other_ids(Backend::sqlite(), "thread");
}

#[test]
fn sqlite_process_workers_skip_only_what_is_revoked_among_many_revocations() {
    many_revocations_of_other_ids(Backend::sqlite(), "process");
}

#[test]
fn redis_process_workers_skip_only_what_is_revoked_among_many_revocations() {
    many_revocations_of_other_ids(Backend::redis(), "process");
}
