//! huey parity on the command line: `hueyd cron`, and the consumer flags huey users have in
//! their scripts (`--worker-type`, `greenlet`, `-L`, `-S`, `-C`), on the real binary with real
//! SQLite files and a real redis-server.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::hueyd::{exe, Backend, Hueyd};
use huey::Task;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

/// `hueyd cron ARGS...` in an empty directory: (exit code, stdout, stderr).
fn cron(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(exe())
        .arg("cron")
        .args(args)
        .current_dir(dir)
        .env_remove("HUEY_STORAGE")
        .output()
        .expect("run hueyd cron");
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn cron_prints_the_next_runs_and_needs_no_storage() {
    let dir = tempfile::tempdir().unwrap();
    // (expression, zone, the next three runs in UTC after 2026-03-27T00:00Z, a Friday)
    let table = [
        (
            "0 9 * * MON-FRI",
            "Europe/Paris",
            [
                "2026-03-27T08:00:00Z",
                "2026-03-30T07:00:00Z",
                "2026-03-31T07:00:00Z",
            ],
        ),
        (
            "0 9 * * 5-7",
            "UTC",
            [
                "2026-03-27T09:00:00Z",
                "2026-03-28T09:00:00Z",
                "2026-03-29T09:00:00Z",
            ],
        ),
        (
            "@monthly",
            "UTC",
            [
                "2026-04-01T00:00:00Z",
                "2026-05-01T00:00:00Z",
                "2026-06-01T00:00:00Z",
            ],
        ),
        (
            "0 12 * * 1#2",
            "America/New_York",
            [
                "2026-04-13T16:00:00Z",
                "2026-05-11T16:00:00Z",
                "2026-06-08T16:00:00Z",
            ],
        ),
    ];
    for (expr, tz, want) in table {
        let args = [
            expr,
            "--tz",
            tz,
            "--next",
            "3",
            "--after",
            "2026-03-27T00:00:00Z",
            "--json",
        ];
        let (code, out, err) = cron(dir.path(), &args);
        assert_eq!(code, 0, "{expr}: {err}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["runs"], serde_json::json!(want), "{expr} in {tz}");
        assert_eq!(v["tz"], tz);
    }
    let (code, out, _) = cron(dir.path(), &["*/15 * * * *", "--after", "0", "--next", "2"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.starts_with("1970-01-01T00:15:00Z"), "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no storage file is created"
    );
}

#[test]
fn cron_rejects_bad_input_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["0 9 * * 8"], "day of week field"),
        (vec!["0 25 * * *"], "hour field"),
        (vec!["* * * JANUARY *"], "month field"),
        (vec!["@sometimes"], "unknown nickname"),
        (
            vec!["* * * * *", "--tz", "Mars/Olympus"],
            "unknown timezone",
        ),
    ] {
        let (code, out, err) = cron(dir.path(), &args);
        assert_eq!(code, 2, "{args:?} exits 2");
        assert!(out.is_empty() && err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = cron(dir.path(), &["* * * * *", "--next", "0"]);
    assert_eq!(code, 2, "{err}");
}

both!(huey_consumer_flags_work, |b: Backend| {
    let app = b.app();
    // Two locks left behind by a consumer that died holding them.
    for name in ["nightly", "report"] {
        std::mem::forget(app.lock_task(name).acquire().unwrap());
    }
    assert!(app.lock_task("nightly").is_locked().unwrap());
    let h = Hueyd::start(
        &b.url(),
        &[
            "--worker-type",
            "greenlet",
            "-w",
            "4",
            "-L",
            "nightly,report",
            "-S",
            "-C",
        ],
    );
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    assert_eq!(add.enqueue((2, 3)).unwrap().wait(LONG).unwrap(), 5);
    for name in ["nightly", "report"] {
        assert!(!app.lock_task(name).is_locked().unwrap(), "{name} cleared");
    }
    assert!(h.wait_log("-C is ignored", LONG), "{}", h.log());
    // huey's simple format: `HH:MM:SS message`, no level.
    let log = h.log();
    for line in log.lines().filter(|l| !l.is_empty()) {
        let (time, rest) = line.split_at(8.min(line.len()));
        let ok = time.len() == 8
            && time.chars().enumerate().all(|(i, c)| {
                if i % 3 == 2 {
                    c == ':'
                } else {
                    c.is_ascii_digit()
                }
            });
        assert!(ok && rest.starts_with(' '), "not simple: {line:?}");
        assert!(!line.contains(" INFO "), "no level: {line:?}");
    }
    assert!(
        log.contains("kind=Async"),
        "greenlet runs async workers: {log}"
    );
});

#[test]
fn unknown_worker_types_are_rejected() {
    let b = Backend::sqlite();
    let out = Command::new(exe())
        .args(["--storage", &b.url(), "--worker-type", "gevent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greenlet"), "{err}");
}
