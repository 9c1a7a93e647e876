//! The admin subcommands as a user runs them: the real `hueyd` binary on a real SQLite file (and
//! Redis), with the library app as producer and inspector.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::hueyd::{exe, Backend, Hueyd};
use huey::message::{Message, MessageOptions};
use huey::storage::{Batch, DequeueRequest, Ready};
use huey::{Huey, Task};
use serde_json::Value;

/// What one `hueyd` run printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }
}

/// Run `hueyd --storage URL ARGS...` to the end.
fn hueyd(b: &Backend, args: &[&str]) -> Run {
    let out = Command::new(exe())
        .arg("--storage")
        .arg(b.url())
        .args(args)
        .env_remove("HUEY_STORAGE")
        .env_remove("HUEY_LOG")
        .output()
        .expect("run hueyd");
    Run {
        code: out.status.code().expect("hueyd exited by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn status(b: &Backend) -> Value {
    hueyd(b, &["status", "--json"]).ok().json()
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an integer in {v}"))
}

/// Run every ready message in this process, as one consumer thread would.
fn run_ready(app: &Huey) {
    common::drain(app, &["default"]);
}

/// A garbage payload and a message for a task nobody registers, both on the ready queue.
fn enqueue_undeliverable(app: &Huey) -> String {
    let ghost = Message::new("ghost", vec![], MessageOptions::default());
    let batch = Batch {
        enqueue: vec![
            Ready {
                id: "junk".into(),
                queue: "default".into(),
                priority: 0,
                payload: vec![1, 0xff],
            },
            Ready {
                id: ghost.id.clone(),
                queue: "default".into(),
                priority: 0,
                payload: ghost.encode().unwrap(),
            },
        ],
        ..Batch::default()
    };
    app.storage().apply(&batch).unwrap();
    ghost.id
}

const LONG: &str = "30";

#[test]
fn enqueue_then_a_consumer_runs_it_and_result_prints_json() {
    let b = Backend::sqlite();
    let r = hueyd(&b, &["enqueue", "echo", r#""hello""#]).ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(id.len(), 36, "one uuid: {:?}", r.stdout);
    let _h = Hueyd::start(&b.url(), &["-w", "1"]);
    let r = hueyd(&b, &["result", &id, "--wait", LONG]).ok();
    assert_eq!(r.json(), Value::String("hello".into()));
    // Reads remove the result.
    assert_eq!(hueyd(&b, &["result", &id]).code, 3);
}

#[test]
fn enqueue_json_output_and_typed_arguments_reach_the_task() {
    let b = Backend::sqlite();
    let app = b.app();
    let v = hueyd(&b, &["enqueue", "add", "[40, 2]", "--json"])
        .ok()
        .json();
    assert_eq!(v["task"], "add");
    let id = v["ids"][0].as_str().unwrap().to_string();
    run_ready(&app);
    assert_eq!(app.result::<i64>(id).get().unwrap(), Some(42));
}

#[test]
fn enqueue_count_enqueues_that_many_distinct_ids() {
    let b = Backend::sqlite();
    let r = hueyd(&b, &["enqueue", "noop", "--count", "2500"]).ok();
    let ids: HashSet<&str> = r.lines().into_iter().collect();
    assert_eq!(ids.len(), 2500);
    assert_eq!(count(&status(&b), "ready"), 2500);
    assert_eq!(hueyd(&b, &["enqueue", "noop", "--count", "0"]).code, 2);
}

#[test]
fn enqueue_options_override_the_task_defaults() {
    let b = Backend::sqlite();
    let app = b.app();
    hueyd(
        &b,
        &[
            "enqueue",
            "flaky",
            r#"["k", 0]"#,
            "--priority",
            "-7",
            "--retries",
            "1",
            "--queue",
            "other",
        ],
    )
    .ok();
    let p = app.storage().pending(10).unwrap();
    let m = Message::decode(&p[0]).unwrap();
    assert_eq!(
        (m.task.as_str(), m.options.priority, m.options.retries),
        ("flaky", -7, 1)
    );
    assert_eq!(m.queue(), "other");
    // Without overrides the registered default (5 retries) applies.
    hueyd(&b, &["enqueue", "flaky", r#"["k", 0]"#]).ok();
    let v = hueyd(&b, &["pending", "--json"]).ok().json();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["priority"], 0, "higher priority first");
    assert_eq!(items[0]["args"], serde_json::json!(["k", 0]));
    let m = Message::decode(&app.storage().pending(1).unwrap()[0]).unwrap();
    assert_eq!(m.options.retries, 5);
}

#[test]
fn delay_and_eta_schedule_the_task() {
    let b = Backend::sqlite();
    hueyd(&b, &["enqueue", "sleep", "1", "--delay", "600"]).ok();
    hueyd(
        &b,
        &["enqueue", "sleep", "2", "--eta", "2030-01-01T00:00:00Z"],
    )
    .ok();
    hueyd(&b, &["enqueue", "sleep", "3", "--eta", "1900000000"]).ok();
    // A time already past runs at once.
    hueyd(&b, &["enqueue", "sleep", "4", "--eta", "1000000000"]).ok();
    let s = status(&b);
    assert_eq!((count(&s, "scheduled"), count(&s, "ready")), (3, 1));
    let v = hueyd(&b, &["scheduled", "--json"]).ok().json();
    let etas: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eta"].as_str().unwrap())
        .collect();
    assert_eq!(etas[1], "2030-01-01T00:00:00.000Z");
    assert_eq!(etas[2], "2030-03-17T17:46:40.000Z");
    let text = hueyd(&b, &["scheduled"]).ok().stdout;
    assert!(text.contains("sleep(2)"), "{text}");
}

#[test]
fn bad_input_exits_2_and_names_the_problem() {
    let b = Backend::sqlite();
    let r = hueyd(&b, &["enqueue", "add", r#""not a pair""#]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("\"add\"") && r.stderr.contains("(i64, i64)"),
        "{}",
        r.stderr
    );
    let r = hueyd(&b, &["enqueue", "add", "[1,"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not JSON"), "{}", r.stderr);
    let r = hueyd(&b, &["enqueue", "add"]);
    assert_eq!(r.code, 2, "null does not fit (i64, i64)");
    let r = hueyd(&b, &["enqueue", "nope"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("\"nope\"") && r.stderr.contains("echo"),
        "{}",
        r.stderr
    );
    let r = hueyd(&b, &["enqueue", "noop", "--eta", "next tuesday"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("RFC 3339"), "{}", r.stderr);
    assert_eq!(
        hueyd(&b, &["enqueue", "noop", "--delay", "5", "--eta", "1"]).code,
        2
    );
    assert_eq!(hueyd(&b, &["enqueue", "noop", "--delay", "-1"]).code, 2);
    assert_eq!(hueyd(&b, &["result", "x", "--task", "nope"]).code, 2);
    assert_eq!(hueyd(&b, &["revoke", "--task", "nope"]).code, 2);
    assert_eq!(hueyd(&b, &["revoke"]).code, 2);
    let s = status(&b);
    assert_eq!((count(&s, "ready"), count(&s, "scheduled")), (0, 0));
}

#[test]
fn result_exit_codes_for_value_error_and_not_ready() {
    let b = Backend::sqlite();
    let app = b.app();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let fail: Task<String, ()> = Task::from_name(&app, "fail").unwrap();
    let ok = echo.enqueue("fine".into()).unwrap();
    let bad = fail.enqueue("boom".into()).unwrap();
    let not_run = echo.enqueue("later".into()).unwrap();
    // Not ready: exit 3, also after a bounded wait.
    assert_eq!(hueyd(&b, &["result", not_run.id()]).code, 3);
    let r = hueyd(&b, &["result", not_run.id(), "--wait", "0.3", "--json"]);
    assert_eq!(r.code, 3);
    assert_eq!(r.json()["status"], "pending");
    run_ready(&app);

    let r = hueyd(&b, &["result", ok.id(), "--preserve", "--json"]).ok();
    let v = r.json();
    assert_eq!((&v["status"], &v["value"]), (&"ok".into(), &"fine".into()));
    assert_eq!(v["task"], "echo");
    // Preserved: still there.
    let r = hueyd(&b, &["result", ok.id()]).ok();
    assert_eq!(r.json(), Value::String("fine".into()));
    assert_eq!(hueyd(&b, &["result", ok.id()]).code, 3);

    let r = hueyd(&b, &["result", bad.id()]);
    assert_eq!(r.code, 1, "stderr: {}", r.stderr);
    let e = r.json();
    assert_eq!(e["id"], bad.id());
    assert_eq!(e["task"], "fail");
    assert_eq!(e["attempt"], 1);
    assert_eq!(e["kind"], "error");
    assert_eq!(e["message"], "boom");
    assert_eq!(hueyd(&b, &["result", bad.id()]).code, 3, "read once");
}

#[test]
fn result_is_decoded_by_the_task_that_stored_it() {
    let b = Backend::sqlite();
    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let h = add.enqueue((1, 2)).unwrap();
    run_ready(&app);
    // An i64 result would also decode as the u64 and u32 results of other tasks; the stored
    // result names its task, so no --task is needed.
    let r = hueyd(&b, &["result", h.id(), "--json", "--preserve"]).ok();
    let v = r.json();
    assert_eq!(
        (
            v["status"].as_str(),
            v["task"].as_str(),
            v["value"].as_i64()
        ),
        (Some("ok"), Some("add"), Some(3))
    );
    // --task overrides: as the result of `echo` (a String) the bytes do not fit.
    assert_eq!(hueyd(&b, &["result", h.id(), "--task", "echo"]).code, 2);
    let r = hueyd(&b, &["result", h.id()]).ok();
    assert_eq!(r.json(), 3);
    assert_eq!(
        hueyd(&b, &["result", h.id()]).code,
        3,
        "the read was destructive"
    );
}

#[test]
fn status_json_counts_each_part() {
    let b = Backend::sqlite();
    let app = b.app();
    enqueue_undeliverable(&app);
    run_ready(&app); // one dead letter for the garbage, one (and a stored error) for "ghost"
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let done = echo.enqueue("x".into()).unwrap();
    run_ready(&app);
    let _ = done;
    echo.enqueue("a".into()).unwrap();
    echo.enqueue("b".into()).unwrap();
    echo.enqueue("leased".into()).unwrap();
    echo.schedule("s".into(), Duration::from_secs(600)).unwrap();
    let leased = app
        .storage()
        .dequeue(&DequeueRequest {
            consumer: "test".into(),
            queues: vec!["default".into()],
            max: 1,
            lease: Duration::from_secs(60),
            wait: Duration::ZERO,
            max_deliveries: 5,
        })
        .unwrap();
    assert_eq!(leased.len(), 1);
    app.revoke_task("echo", huey::Revoke::once()).unwrap();

    let s = status(&b);
    assert_eq!(count(&s, "ready"), 2);
    assert_eq!(count(&s, "scheduled"), 1);
    assert_eq!(count(&s, "in_flight"), 1);
    assert_eq!(count(&s, "results"), 2, "echo's value and ghost's error");
    assert_eq!(count(&s, "dead"), 2);
    assert_eq!(count(&s, "revoked"), 1);
    assert_eq!(count(&s, "locks"), 0);
    assert_eq!(s["storage"], "sqlite");
    assert_eq!(s["app"], "hueyd");
    let tasks: Vec<&str> = s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tasks.contains(&"heartbeat") && tasks.contains(&"add"));

    let text = hueyd(&b, &["status"]).ok().stdout;
    assert!(text.contains("in flight  1"), "{text}");
    assert!(text.contains("dead       2"), "{text}");
}

#[test]
fn status_watch_refreshes_count_times() {
    let b = Backend::sqlite();
    // `status` reads an existing storage only.
    let _app = b.app();
    let r = hueyd(
        &b,
        &[
            "status",
            "--watch",
            "--count",
            "3",
            "--interval",
            "0.1",
            "--json",
        ],
    )
    .ok();
    let lines = r.lines();
    assert_eq!(lines.len(), 3);
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(count(&v, "ready"), 0);
    }
    assert_eq!(
        hueyd(&b, &["status", "--count", "2"]).code,
        2,
        "needs --watch"
    );
}

#[test]
fn revoke_and_restore_by_id_and_by_task() {
    let b = Backend::sqlite();
    let app = b.app();
    let r = hueyd(&b, &["revoke", "some-id"]).ok();
    assert!(r.stdout.contains("revoked id some-id"), "{}", r.stdout);
    assert!(app.is_id_revoked("some-id").unwrap());
    let r = hueyd(&b, &["restore", "some-id", "--json"]).ok();
    assert_eq!(r.json()["restored"], true);
    assert!(!app.is_id_revoked("some-id").unwrap());
    // Restoring what is not revoked is not an error.
    let r = hueyd(&b, &["restore", "some-id"]).ok();
    assert!(r.stdout.contains("was not revoked"), "{}", r.stdout);

    let v = hueyd(&b, &["revoke", "--task", "echo", "--once", "--json"])
        .ok()
        .json();
    assert_eq!((&v["task"], &v["once"]), (&"echo".into(), &true.into()));
    assert!(app.is_task_revoked("echo").unwrap());
    // The revocation applies to the next run only.
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let first = echo.enqueue("1".into()).unwrap();
    run_ready(&app);
    let second = echo.enqueue("2".into()).unwrap();
    run_ready(&app);
    let r = hueyd(&b, &["result", first.id()]);
    assert_eq!((r.code, r.json()["kind"].clone()), (1, "revoked".into()));
    assert_eq!(hueyd(&b, &["result", second.id()]).ok().json(), "2");

    hueyd(
        &b,
        &["revoke", "--task", "add", "--until", "2100-01-01T00:00:00Z"],
    )
    .ok();
    assert!(app.is_task_revoked("add").unwrap());
    hueyd(&b, &["restore", "--task", "add"]).ok();
    assert!(!app.is_task_revoked("add").unwrap());
    hueyd(&b, &["revoke", "--task", "add", "--until", "1000000000"]).ok();
    assert!(
        !app.is_task_revoked("add").unwrap(),
        "a revocation until a past time is over"
    );
}

#[test]
fn flush_empties_only_the_parts_chosen() {
    let b = Backend::sqlite();
    let app = b.app();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    echo.enqueue("done".into()).unwrap();
    run_ready(&app);
    echo.enqueue("ready".into()).unwrap();
    echo.schedule("later".into(), Duration::from_secs(600))
        .unwrap();
    app.revoke_id("x", huey::Revoke::default()).unwrap();

    let r = hueyd(&b, &["flush"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--all"), "{}", r.stderr);

    hueyd(&b, &["flush", "--schedule"]).ok();
    let s = status(&b);
    assert_eq!(
        (
            count(&s, "ready"),
            count(&s, "scheduled"),
            count(&s, "results")
        ),
        (1, 0, 1)
    );
    let r = hueyd(&b, &["flush", "--queue", "--results"]).ok();
    assert!(r.stdout.contains("queue, results"), "{}", r.stdout);
    let s = status(&b);
    assert_eq!((count(&s, "ready"), count(&s, "results")), (0, 0));
    assert_eq!(count(&s, "revoked"), 1, "kv is kept unless asked");
    hueyd(&b, &["flush", "--all"]).ok();
    assert_eq!(count(&status(&b), "revoked"), 0);
}

#[test]
fn tasks_lists_options_types_and_periodic_schedules() {
    let b = Backend::sqlite();
    let v = hueyd(&b, &["tasks", "--json"]).ok().json();
    let find = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    let hb = find("heartbeat");
    assert_eq!(hb["periodic"], "* * * * *");
    let add = find("add");
    assert_eq!(add["periodic"], Value::Null);
    assert_eq!(
        (&add["args"], &add["result"]),
        (&"(i64, i64)".into(), &"i64".into())
    );
    assert_eq!(add["queue"], "default");
    assert_eq!(find("flaky")["retries"], 5);
    assert_eq!(find("echo")["args"], "String");
    let text = hueyd(&b, &["tasks"]).ok().stdout;
    let line = text.lines().find(|l| l.starts_with("heartbeat")).unwrap();
    assert!(line.contains("periodic: * * * * *"), "{line}");
}

#[test]
fn dead_letters_are_listed_and_retried() {
    let b = Backend::sqlite();
    let app = b.app();
    let ghost = enqueue_undeliverable(&app);
    run_ready(&app);
    let v = hueyd(&b, &["dead", "--json"]).ok().json();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let g = entries.iter().find(|e| e["id"] == ghost.as_str()).unwrap();
    assert_eq!(g["task"], "ghost");
    assert!(g["error"].as_str().unwrap().contains("ghost"));
    assert!(g["at"].as_str().unwrap().ends_with('Z'));
    let junk = entries.iter().find(|e| e["id"] != ghost.as_str()).unwrap();
    assert_eq!(junk["task"], Value::Null);
    assert!(junk["error"].as_str().unwrap().contains("undecodable"));
    assert_eq!(
        hueyd(&b, &["dead", "--json", "--limit", "1"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let text = hueyd(&b, &["dead"]).ok().stdout;
    assert!(text.contains("task=ghost"), "{text}");

    let r = hueyd(&b, &["dead", "retry", "no-such-key"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no-such-key"), "{}", r.stderr);
    assert_eq!(hueyd(&b, &["dead", "retry"]).code, 2, "keys or --all");

    let key = g["key"].as_str().unwrap();
    let r = hueyd(&b, &["dead", "retry", key]).ok();
    assert_eq!(r.stdout.trim(), "retried 1");
    let s = status(&b);
    assert_eq!((count(&s, "dead"), count(&s, "ready")), (1, 1));
    let v = hueyd(&b, &["dead", "retry", "--all", "--json"]).ok().json();
    assert_eq!(v["retried"], 1);
    let s = status(&b);
    assert_eq!((count(&s, "dead"), count(&s, "ready")), (0, 2));
}

#[test]
fn redis_enqueue_run_result_and_status() {
    let b = Backend::redis();
    let ids = hueyd(&b, &["enqueue", "echo", r#""r""#, "--count", "3"]).ok();
    let ids: Vec<String> = ids.lines().iter().map(|s| s.to_string()).collect();
    assert_eq!(ids.len(), 3);
    let s = status(&b);
    assert_eq!((count(&s, "ready"), &s["storage"]), (3, &"redis".into()));
    let _h = Hueyd::start(&b.url(), &["-w", "1"]);
    for id in &ids {
        let r = hueyd(&b, &["result", id, "--wait", LONG, "--json"]).ok();
        assert_eq!(r.json()["value"], "r");
    }
    let s = status(&b);
    assert_eq!((count(&s, "ready"), count(&s, "results")), (0, 0));
}

#[test]
fn redis_dead_letters_from_a_real_consumer() {
    let b = Backend::redis();
    let app = b.app();
    enqueue_undeliverable(&app);
    let _h = Hueyd::start(&b.url(), &["-w", "1"]);
    assert!(common::hueyd::wait_until(Duration::from_secs(30), || {
        count(&status(&b), "dead") == 2
    }));
    let v = hueyd(&b, &["dead", "--json"]).ok().json();
    assert!(v.as_array().unwrap().iter().any(|e| e["task"] == "ghost"));
    hueyd(&b, &["flush", "--dead"]).ok();
    assert_eq!(count(&status(&b), "dead"), 0);
}

#[test]
fn storage_goes_before_or_after_the_subcommand_and_consumer_flags_do_not_mix() {
    let b = Backend::sqlite();
    hueyd(&b, &["enqueue", "noop"]).ok();
    let out = Command::new(exe())
        .args(["status", "--json", "--storage", &b.url()])
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(count(&v, "ready"), 1);
    let r = hueyd(&b, &["-w", "2", "status"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--workers"), "{}", r.stderr);
}
