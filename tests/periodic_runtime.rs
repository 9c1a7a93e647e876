//! Periodic schedules edited at run time, kept in the storage (real SQLite files, a real
//! redis-server): refused when wrong, run once per time across consumers, paused, resumed and
//! removed (driven by an injected clock), a run whose arguments no longer fit dead-lettered
//! with the error, and picked up by a running `hueyd` without a restart.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::hueyd::{exe, wait_until, Backend};
use huey::periodic_store::RuntimeSchedule;
use huey::storage::Ns;
use huey::supervisor::ticker::Ticker;
use huey::{Error, Huey};
use serde_json::json;

/// Second `s` after 10:00:10 (away from the minute's start, when the testbed's own periodic
/// task runs).
fn at(s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 10 + s).unwrap()
}

/// `hueyd --storage URL ARGS...`: (exit code, stdout, stderr).
fn hueyd(b: &Backend, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(exe())
        .arg("--storage")
        .arg(b.url())
        .args(args)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both!(
    wrong_schedules_are_refused_with_nothing_written,
    |b: Backend| {
        let app = b.app();
        let p = app.periodic();
        let e = p
            .add(RuntimeSchedule::new(
                "s",
                "61 * * * *",
                "add",
                json!([1, 2]),
            ))
            .unwrap_err();
        assert!(e.to_string().contains("minute"), "{e}");
        let e = p
            .add(RuntimeSchedule::new("s", "* * * * *", "add", json!([1, 2])).tz("Mars/Olympus"))
            .unwrap_err();
        assert!(e.to_string().contains("timezone"), "{e}");
        let e = p
            .add(RuntimeSchedule::new("s", "* * * * *", "nope", json!(null)))
            .unwrap_err();
        assert!(e.to_string().contains("no task named \"nope\""), "{e}");
        let e = p
            .add(RuntimeSchedule::new("s", "* * * * *", "add", json!("x")))
            .unwrap_err();
        assert!(matches!(e, Error::BadArguments { .. }), "{e}");
        let e = p
            .add(RuntimeSchedule::new(
                "two\nlines",
                "* * * * *",
                "add",
                json!([1, 2]),
            ))
            .unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        // Arguments too large for any run's message.
        app.set_max_message_bytes(4096);
        let e = p
            .add(RuntimeSchedule::new(
                "s",
                "* * * * *",
                "echo",
                json!("x".repeat(5000)),
            ))
            .unwrap_err();
        assert!(e.to_string().contains("over the message limit"), "{e}");
        app.set_max_message_bytes(huey::message::MAX_MESSAGE_BYTES);
        assert!(p.list().unwrap().is_empty());
        p.add(RuntimeSchedule::new("s", "* * * * *", "add", json!([1, 2])))
            .unwrap();
        let e = p
            .add(RuntimeSchedule::new("s", "0 * * * *", "add", json!([3, 4])))
            .unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
        assert_eq!(p.get("s").unwrap().unwrap().cron, "* * * * *");
        for e in [p.pause("other"), p.resume("other"), p.remove("other")] {
            assert!(e.unwrap_err().to_string().contains("\"other\""));
        }
    }
);

both!(
    two_consumers_run_each_time_once_and_pause_resume_remove_apply,
    |b: Backend| {
        let (one, two) = (b.app(), b.app());
        let (mut t1, mut t2) = (Ticker::new(&one), Ticker::new(&two));
        let ready = || one.storage().counts().unwrap().ready;
        assert!(t1.enqueue_due(at(0)).unwrap().is_empty(), "no schedule yet");
        one.periodic()
            .add(RuntimeSchedule::new("sum", "* * * * * *", "add", json!([2, 3])).priority(7))
            .unwrap();
        for s in 1..=3 {
            let a = t1.enqueue_due(at(s)).unwrap();
            let b = t2.enqueue_due(at(s)).unwrap();
            assert_eq!(a.len() + b.len(), 1, "second {s}: {a:?} {b:?}");
        }
        assert_eq!(ready(), 3);
        let pending = one.storage().pending(10).unwrap();
        let msg = huey::Message::decode(&pending[0]).unwrap();
        assert_eq!((msg.task.as_str(), msg.priority()), ("add", 7));
        assert_eq!(common::drain(&one, &["default"]), 3);
        one.periodic().pause("sum").unwrap();
        assert!(two.periodic().get("sum").unwrap().unwrap().paused);
        t1.enqueue_due(at(4)).unwrap();
        t2.enqueue_due(at(4)).unwrap();
        assert_eq!(ready(), 0, "paused");
        two.periodic().resume("sum").unwrap();
        t1.enqueue_due(at(5)).unwrap();
        t2.enqueue_due(at(5)).unwrap();
        assert_eq!(ready(), 1, "resumed");
        one.periodic().remove("sum").unwrap();
        t1.enqueue_due(at(6)).unwrap();
        t2.enqueue_due(at(6)).unwrap();
        assert_eq!(ready(), 1, "removed");
        assert!(one.periodic().list().unwrap().is_empty());
    }
);

both!(
    a_run_whose_arguments_no_longer_fit_is_dead_lettered,
    |b: Backend| {
        let app = b.app();
        // Written by a binary whose `add` took a string: this one cannot encode it.
        let s = RuntimeSchedule::new("stale", "* * * * * *", "add", json!("text"));
        let storage = app.storage();
        storage
            .put(
                Ns::Data,
                "periodic:stale",
                &serde_json::to_vec(&s).unwrap(),
                None,
            )
            .unwrap();
        storage
            .put(Ns::Data, "periodic-version", b"changed", None)
            .unwrap();
        let mut t = Ticker::new(&app);
        assert!(t.enqueue_due(at(0)).unwrap().is_empty());
        let dead = storage.dead(10).unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].error.contains("periodic schedule \"stale\""),
            "{}",
            dead[0].error
        );
        assert!(dead[0].error.contains("do not fit"), "{}", dead[0].error);
        let msg = huey::Message::decode(&dead[0].payload).unwrap();
        assert_eq!(msg.task, "add");
        Ticker::new(&app).enqueue_due(at(0)).unwrap();
        assert_eq!(
            storage.dead(10).unwrap().len(),
            1,
            "one dead letter per run"
        );
    }
);

/// A `hueyd` consumer with its periodic ticker (the shared helper starts them without),
/// killed when dropped.
struct Consumer(std::process::Child, tempfile::NamedTempFile);

impl Consumer {
    fn start(b: &Backend) -> Consumer {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(exe())
            .args(["--storage", &b.url(), "-w", "2"])
            .env_remove("HUEY_STORAGE")
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Consumer(child, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.1.path()).unwrap_or_default()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The results stored so far.
fn results(app: &Huey) -> u64 {
    app.storage().counts().unwrap().results
}

both!(
    a_running_consumer_picks_up_hueyd_periodic_edits,
    |b: Backend| {
        let app = b.app();
        let consumer = Consumer::start(&b);
        // Wrong input: exit 2, nothing written.
        let (code, _, err) = hueyd(&b, &["periodic", "add", "s", "* 25 * * *", "add", "[1,2]"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("hour"), "{err}");
        let (code, _, err) = hueyd(&b, &["periodic", "add", "s", "* * * * *", "nope", "null"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("no task named \"nope\""), "{err}");
        let (code, _, err) = hueyd(&b, &["periodic", "add", "s", "* * * * *", "add", "[1]"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("(i64, i64)") || err.contains("do not fit"),
            "{err}"
        );
        assert!(app.periodic().list().unwrap().is_empty());

        let (code, _, err) = hueyd(
            &b,
            &[
                "periodic",
                "add",
                "sum",
                "* * * * * *",
                "add",
                "[20,22]",
                "--tz",
                "Europe/Paris",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            wait_until(Duration::from_secs(30), || results(&app) >= 1),
            "the running consumer ran the new schedule: {}",
            consumer.log()
        );
        let (_, tasks, _) = hueyd(&b, &["tasks"]);
        let line = tasks
            .lines()
            .find(|l| l.starts_with("schedule sum"))
            .unwrap_or_default();
        assert!(
            line.contains("add([20,22])") && line.contains("in storage"),
            "{tasks}"
        );
        let (_, list, _) = hueyd(&b, &["periodic", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list[0]["tz"], "Europe/Paris");
        assert_eq!(list[0]["paused"], false);

        assert_eq!(hueyd(&b, &["periodic", "pause", "sum"]).0, 0);
        let (_, list, _) = hueyd(&b, &["periodic", "list"]);
        assert!(list.contains("paused"), "{list}");
        assert_eq!(hueyd(&b, &["periodic", "resume", "sum"]).0, 0);
        assert_eq!(hueyd(&b, &["periodic", "remove", "sum"]).0, 0);
        let (code, _, err) = hueyd(&b, &["periodic", "remove", "sum"]);
        assert_eq!(code, 2, "{err}");
        assert!(app.periodic().list().unwrap().is_empty());
    }
);

both!(two_running_consumers_run_each_time_once, |b: Backend| {
    let app = b.app();
    let consumers = [Consumer::start(&b), Consumer::start(&b)];
    app.periodic()
        .add(RuntimeSchedule::new(
            "sum",
            "* * * * * *",
            "add",
            json!([1, 1]),
        ))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || results(&app) >= 4),
        "runs: {}",
        consumers[0].log()
    );
    app.periodic().remove("sum").unwrap();
    let claims = || {
        app.storage()
            .list(Ns::Claims)
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with("schedule:sum:"))
            .count() as u64
    };
    // Once every enqueued run has finished, the runs are exactly the times claimed: no time
    // ran on both consumers.
    let settled = wait_until(Duration::from_secs(30), || {
        let c = app.storage().counts().unwrap();
        let before = claims();
        c.ready == 0 && c.in_flight == 0 && results(&app) == before && claims() == before
    });
    assert!(settled, "results {} claims {}", results(&app), claims());
});
