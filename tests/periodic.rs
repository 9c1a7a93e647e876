//! Periodic tasks, driven by an injected clock: start-of-minute alignment, no bursts after a
//! stall, no repeat after a restart, once cluster-wide on a shared storage.

#[macro_use]
mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use common::hueyd::Backend;
use huey::supervisor::scheduler::Ticker;
use huey::{Crontab, Huey};

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).unwrap()
}

fn app_on(url: &str) -> Huey {
    let app = Huey::open("periodic", url).unwrap();
    app.task("every_minute")
        .periodic(Crontab::parse("* * * * *").unwrap())
        .register(|(): ()| Ok::<_, String>(()))
        .unwrap();
    app.task("every_10s")
        .periodic(Crontab::parse("*/10 * * * * *").unwrap())
        .register(|(): ()| Ok::<_, String>(()))
        .unwrap();
    app.task("at_noon")
        .periodic(Crontab::parse("0 12 * * *").unwrap())
        .register(|(): ()| Ok::<_, String>(()))
        .unwrap();
    app.task("plain")
        .register(|(): ()| Ok::<_, String>(()))
        .unwrap();
    app
}

fn names(due: Vec<(String, DateTime<Utc>)>) -> Vec<String> {
    due.into_iter().map(|(n, _)| n).collect()
}

#[test]
fn runs_at_the_start_of_the_minute_not_at_the_start_offset() {
    let app = app_on("memory:");
    let mut t = Ticker::new(&app);
    assert!(
        names(t.due(at(10, 5, 31))).is_empty(),
        "started mid-minute: nothing yet"
    );
    for s in 32..60 {
        assert!(!names(t.due(at(10, 5, s))).contains(&"every_minute".to_string()));
    }
    let due = t.due(at(10, 6, 0));
    assert!(
        due.contains(&("every_minute".to_string(), at(10, 6, 0))),
        "{due:?}"
    );
    assert!(
        names(t.due(at(10, 6, 0))).is_empty(),
        "a second is looked at once"
    );
    assert!(!names(t.due(at(10, 6, 1))).contains(&"every_minute".to_string()));
    assert!(names(t.due(at(12, 0, 0))).contains(&"at_noon".to_string()));
}

#[test]
fn a_skipped_second_is_caught_up_but_a_stall_is_not_replayed() {
    let app = app_on("memory:");
    let mut t = Ticker::new(&app);
    t.due(at(10, 0, 58));
    let due = t.due(at(10, 1, 2));
    assert!(
        due.contains(&("every_minute".to_string(), at(10, 1, 0))),
        "a short gap: {due:?}"
    );
    let after_stall = names(t.due(at(10, 9, 31)));
    assert!(
        after_stall.is_empty(),
        "no burst of the missed minutes: {after_stall:?}"
    );
    assert_eq!(names(t.due(at(10, 10, 0))), ["every_10s", "every_minute"]);
}

#[test]
fn six_field_schedules_fire_on_their_seconds() {
    let app = app_on("memory:");
    let mut t = Ticker::new(&app);
    let mut fired = Vec::new();
    for s in 0..30 {
        for (n, when) in t.due(at(10, 0, s)) {
            if n == "every_10s" {
                fired.push(when);
            }
        }
    }
    assert_eq!(fired, [at(10, 0, 0), at(10, 0, 10), at(10, 0, 20)]);
}

fn restart_within_the_minute_does_not_enqueue_again(b: Backend) {
    let url = b.url();
    let app = app_on(&url);
    assert_eq!(
        Ticker::new(&app).enqueue_due(at(10, 6, 0)).unwrap(),
        ["every_10s", "every_minute"]
    );
    let restarted = app_on(&url);
    assert!(Ticker::new(&restarted)
        .enqueue_due(at(10, 6, 0))
        .unwrap()
        .is_empty());
    assert_eq!(app.storage().counts().unwrap().ready, 2);
    assert_eq!(
        Ticker::new(&restarted)
            .enqueue_due(at(10, 7, 0))
            .unwrap()
            .len(),
        2,
        "the next minute runs"
    );
}

fn several_consumers_enqueue_each_run_once(b: Backend) {
    let url = b.url();
    let apps: Vec<Huey> = (0..4).map(|_| app_on(&url)).collect();
    let barrier = Arc::new(std::sync::Barrier::new(apps.len()));
    let handles: Vec<_> = apps
        .iter()
        .cloned()
        .map(|app| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut t = Ticker::new(&app);
                let mut n = 0;
                for m in 0..5 {
                    barrier.wait();
                    n += t.enqueue_due(at(11, m, 0)).unwrap().len();
                }
                n
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        total, 10,
        "two periodic tasks, five minutes, once each across four consumers"
    );
    assert_eq!(apps[0].storage().counts().unwrap().ready, 10);
}

#[test]
fn restart_within_the_minute_does_not_enqueue_again_on_sqlite() {
    restart_within_the_minute_does_not_enqueue_again(Backend::sqlite());
}

#[test]
fn restart_within_the_minute_does_not_enqueue_again_on_redis() {
    restart_within_the_minute_does_not_enqueue_again(Backend::redis());
}

#[test]
fn several_consumers_enqueue_each_run_once_on_sqlite() {
    several_consumers_enqueue_each_run_once(Backend::sqlite());
}

#[test]
fn several_consumers_enqueue_each_run_once_on_redis() {
    several_consumers_enqueue_each_run_once(Backend::redis());
}

#[test]
fn a_storage_error_claims_nothing_and_the_runs_are_written_on_the_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("periodic.db");
    let app = app_on(&format!("sqlite:{}?busy_timeout=0.1", db.display()));
    assert_eq!(app.storage().counts().unwrap().ready, 0);
    let mut t = Ticker::new(&app);

    // Another connection holds the write lock while two runs are due.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(t.enqueue_due(at(10, 6, 0)).is_err());
    let claims: i64 = holder
        .query_row("SELECT COUNT(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(claims, 0, "no run claimed without being enqueued");
    holder.execute_batch("COMMIT").unwrap();

    // The next turn writes them, though their second has passed; a second consumer (or this one
    // after a restart) finds them claimed.
    let mut enqueued = t.enqueue_due(at(10, 6, 1)).unwrap();
    enqueued.sort();
    assert_eq!(enqueued, ["every_10s", "every_minute"]);
    assert!(Ticker::new(&app)
        .enqueue_due(at(10, 6, 0))
        .unwrap()
        .is_empty());
    assert!(
        t.enqueue_due(at(10, 6, 2)).unwrap().is_empty(),
        "written once"
    );
    assert_eq!(app.storage().counts().unwrap().ready, 2);
}

/// While the storage is down, the runs whose write failed are tried again after a pause that
/// grows with each failure (not on every turn of the consumer's loop, 20 times a second, each
/// a connection attempt and an error logged), and once it is back they are enqueued once.
#[test]
fn runs_whose_write_failed_are_tried_again_after_a_growing_pause() {
    use common::pg_server::PgServer;
    let ms = chrono::Duration::milliseconds;
    let mut own = PgServer::start();
    let app = app_on(&format!("{}?schema=ticker", own.url()));
    let mut t = Ticker::new(&app);
    own.kill();
    let start = at(10, 6, 0);
    assert!(t.enqueue_due(start).is_err(), "the server is down");
    assert_eq!(
        t.enqueue_due(start + ms(50)).unwrap(),
        Vec::<String>::new(),
        "the next turn waits, sending nothing"
    );
    assert!(
        t.enqueue_due(start + ms(150)).is_err(),
        "tried again after a pause"
    );
    assert_eq!(
        t.enqueue_due(start + ms(250)).unwrap(),
        Vec::<String>::new(),
        "the pause has grown"
    );
    own.restart();
    let mut names = t.enqueue_due(start + ms(5_000)).unwrap();
    names.sort();
    assert_eq!(names, ["every_10s", "every_minute"], "enqueued once");
    assert_eq!(app.storage().counts().unwrap().ready, 2);
}
