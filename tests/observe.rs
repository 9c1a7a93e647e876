//! Observability with real consumers: heartbeat records (clean stop, SIGKILL), task state by
//! id through a task's life, Prometheus metrics after a known mix of outcomes (checked by
//! `promtool` when installed), per-minute counters, task logs from process workers (text and
//! JSON), and systemd watchdog pings.

mod common;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::hueyd::{wait_until, Backend, Hueyd};
use huey::observe::TaskState;
use huey::{Huey, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

/// One test per backend for a case taking a [`Backend`].
macro_rules! test_on_backends {
    ($case:ident) => {
        mod $case {
            #[test]
            fn sqlite() {
                super::$case(super::Backend::sqlite());
            }
            #[test]
            fn redis() {
                super::$case(super::Backend::redis());
            }
        }
    };
}

fn consumers_of(app: &Huey, pid: i32) -> usize {
    app.consumers()
        .unwrap()
        .iter()
        .filter(|c| c.pid == pid as u32)
        .count()
}

fn admin(b: &Backend, args: &[&str]) -> String {
    let out = Command::new(common::hueyd::exe())
        .arg("--storage")
        .arg(b.url())
        .args(args)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn consumer_is_listed_while_running_and_leaves(b: Backend) {
    let app = b.app();
    let mut d = Hueyd::start(&b.url(), &["-w", "2", "-k", "process"]);
    assert!(wait_until(LONG, || app.consumers().unwrap().iter().any(
        |c| c.pid == d.pid() as u32 && c.workers_now.iter().filter(|w| w.pid > 0).count() == 2
    )));
    let c = app.consumers().unwrap().remove(0);
    assert_eq!(
        (c.kind.as_str(), c.workers, c.app.as_str()),
        ("process", 2, "hueyd")
    );
    assert_eq!(c.queues, ["default"]);
    let listed: serde_json::Value =
        serde_json::from_str(&admin(&b, &["consumers", "--json"])).unwrap();
    assert_eq!(listed[0]["pid"], d.pid());
    assert!(
        admin(&b, &["status"]).contains(&c.id),
        "status names the consumer"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(LONG).is_some());
    assert_eq!(
        consumers_of(&app, d.pid()),
        0,
        "a clean exit removes the record"
    );
}

test_on_backends!(consumer_is_listed_while_running_and_leaves);

#[test]
fn a_killed_consumer_drops_out_when_its_record_expires() {
    let b = Backend::sqlite();
    let app = b.app();
    let d = Hueyd::start(&b.url(), &["-w", "1"]);
    assert!(wait_until(LONG, || consumers_of(&app, d.pid()) == 1));
    d.signal(Signal::SIGKILL);
    assert!(wait_until(LONG, || consumers_of(&app, d.pid()) == 0));
}

#[test]
fn a_frozen_consumer_drops_out_and_comes_back_when_it_resumes() {
    let b = Backend::sqlite();
    let app = b.app();
    let d = Hueyd::start(&b.url(), &["-w", "1"]);
    assert!(wait_until(LONG, || consumers_of(&app, d.pid()) == 1));
    d.signal(Signal::SIGSTOP);
    assert!(wait_until(LONG, || consumers_of(&app, d.pid()) == 0));
    d.signal(Signal::SIGCONT);
    assert!(wait_until(LONG, || consumers_of(&app, d.pid()) == 1));
}

fn task_state_follows_a_task_through_its_life(b: Backend) {
    let app = b.app();
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    let fail: Task<String, ()> = Task::from_name(&app, "fail").unwrap();
    let first = sleep.enqueue(3000).unwrap();
    let second = sleep.enqueue(10).unwrap();
    assert_eq!(
        second.state().unwrap(),
        TaskState::Queued {
            queue: "default".into(),
            position: Some(1),
            priority: 0
        }
    );
    let d = Hueyd::start(&b.url(), &["-w", "1", "-k", "process"]);
    let mut running = TaskState::Unknown;
    assert!(wait_until(LONG, || {
        running = first.state().unwrap();
        matches!(
            running,
            TaskState::Running {
                worker: Some(_),
                ..
            }
        )
    }));
    let TaskState::Running {
        consumer,
        attempt,
        since_ms,
        ..
    } = &running
    else {
        unreachable!()
    };
    assert!(consumer
        .as_deref()
        .unwrap()
        .ends_with(&format!(":{}", d.pid())));
    assert_eq!(*attempt, 1);
    assert!(since_ms.is_some());
    let inspected: serde_json::Value =
        serde_json::from_str(&admin(&b, &["inspect", first.id(), "--json"])).unwrap();
    assert_eq!(inspected["state"], "running", "{inspected}");
    assert!(wait_until(LONG, || second.state().unwrap() == TaskState::Done));
    let failed = fail.enqueue("boom".into()).unwrap();
    assert!(wait_until(LONG, || matches!(
        failed.state().unwrap(),
        TaskState::Failed { ref error } if error.contains("boom")
    )));
    assert!(admin(&b, &["inspect", failed.id()]).contains("failed"));
    assert_eq!(app.task_state("no-such-id").unwrap(), TaskState::Unknown);
}

test_on_backends!(task_state_follows_a_task_through_its_life);

#[test]
fn scheduled_revoked_and_dead_lettered_tasks_read_as_such() {
    let b = Backend::sqlite();
    let app = b.app();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let later = echo.schedule("x".into(), Duration::from_secs(600)).unwrap();
    assert!(matches!(
        later.state().unwrap(),
        TaskState::Scheduled { .. }
    ));
    let revoked = echo.enqueue("y".into()).unwrap();
    revoked.revoke().unwrap();
    assert_eq!(revoked.state().unwrap(), TaskState::Revoked);
    // Revoking a task by name applies to its waiting instances, until restored.
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let sum = add.enqueue((1, 2)).unwrap();
    app.revoke_task("add", Default::default()).unwrap();
    assert_eq!(sum.state().unwrap(), TaskState::Revoked);
    app.restore_task("add").unwrap();
    assert!(matches!(sum.state().unwrap(), TaskState::Queued { .. }));
    let crash: Task<(), ()> = Task::from_name(&app, "crash").unwrap();
    let _d = Hueyd::testbed(&b.url(), &["-w", "1", "-k", "process"]);
    let crashed = crash.enqueue(()).unwrap();
    assert!(wait_until(LONG, || matches!(
        crashed.state().unwrap(),
        TaskState::DeadLettered { .. }
    )));
    assert!(wait_until(LONG, || revoked.state().unwrap()
        == TaskState::Revoked
        && revoked.is_ready().unwrap()));
}

#[test]
fn metrics_count_each_outcome_and_pass_promtool() {
    let b = Backend::sqlite();
    let app = b.app();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let d = Hueyd::testbed(
        &b.url(),
        &["-w", "2", "-k", "process", "--metrics-bind", &bind],
    );
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let fail: Task<String, ()> = Task::from_name(&app, "fail").unwrap();
    let panic: Task<String, ()> = Task::from_name(&app, "panic").unwrap();
    let mut handles = Vec::new();
    for i in 0..3 {
        handles.push(echo.enqueue(format!("e{i}")).unwrap().id().to_string());
    }
    for _ in 0..2 {
        handles.push(fail.enqueue("no".into()).unwrap().id().to_string());
    }
    handles.push(panic.enqueue("oops".into()).unwrap().id().to_string());
    // A queue this consumer does not serve: its message waits, and its gauge says so.
    echo.call("elsewhere".into())
        .queue("other")
        .enqueue()
        .unwrap();
    assert!(d.wait_log("metrics at", LONG), "{}", d.log());
    let want = [
        r#"huey_tasks_total{task="echo",queue="default",outcome="complete"} 3"#,
        r#"huey_tasks_total{task="fail",queue="default",outcome="error"} 2"#,
        r#"huey_tasks_total{task="panic",queue="default",outcome="error"} 1"#,
        r#"huey_task_duration_seconds_count{task="echo",queue="default"} 3"#,
        r#"huey_worker_changes_total{change="start"} 2"#,
        r#"huey_messages{state="ready"} 1"#,
        r#"huey_queue_messages{queue="default",state="ready"} 0"#,
        r#"huey_queue_messages{queue="default",state="in_flight"} 0"#,
        r#"huey_queue_messages{queue="other",state="ready"} 1"#,
        r#"huey_storage_write_errors_total{op="outcomes"} 0"#,
    ];
    let mut text = String::new();
    let all = wait_until(LONG, || {
        text = scrape(port);
        want.iter().all(|w| text.lines().any(|l| l == *w))
    });
    assert!(all, "expected {want:#?} in:\n{text}");
    assert!(text.contains("# TYPE huey_storage_write_seconds histogram"));
    assert!(text.contains(r#"huey_storage_write_seconds_count{op="heartbeat"}"#));
    assert!(text.ends_with("# EOF\n"));
    // The same outcomes, counted per minute in storage.
    assert!(wait_until(LONG, || {
        let t = app.throughput(5).unwrap();
        let sum = |f: fn(&huey::observe::MinuteStats) -> u64| t.iter().map(f).sum::<u64>();
        sum(|m| m.complete) == 3 && sum(|m| m.error) == 3
    }));
    match which("promtool") {
        Some(promtool) => promtool_accepts(&promtool, &text),
        None => eprintln!("promtool not installed (Debian package prometheus): check skipped"),
    }
}

/// `promtool check metrics` finds no problem in `text`, but one: it reads the Prometheus text
/// format, where a counter's `# HELP` names its `_total` sample, while OpenMetrics (what is
/// served) names the family without the suffix. That lint, and only it, is let through when
/// the family's help is there.
fn promtool_accepts(promtool: &std::path::Path, text: &str) {
    let out = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output_with_stdin(text.as_bytes());
    if out.status.success() {
        return;
    }
    let problems = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(3),
        "a parse error, not a lint: {problems}"
    );
    for p in problems.lines().filter(|l| !l.trim().is_empty()) {
        let family = p
            .strip_suffix("_total no help text")
            .unwrap_or_else(|| panic!("promtool: {p}"));
        assert!(text.contains(&format!("# HELP {family} ")), "promtool: {p}");
    }
}

trait WithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl WithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn storage_write_errors_are_counted_while_the_storage_is_down() {
    let mut b = Backend::redis();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let d = Hueyd::start(&b.url(), &["-w", "1", "--metrics-bind", &bind]);
    assert!(d.wait_log("metrics at", LONG), "{}", d.log());
    let errors = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"huey_storage_write_errors_total{op="heartbeat"} "#))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    assert!(wait_until(LONG, || errors(&scrape(port)) == Some(0)));
    let Backend::Redis(server) = &mut b else {
        unreachable!()
    };
    server.kill();
    assert!(wait_until(LONG, || errors(&scrape(port)).is_some_and(|n| n >= 1)));
    server.restart();
    let app = b.app();
    assert!(
        wait_until(LONG, || consumers_of(&app, d.pid()) == 1),
        "beats again"
    );
}

#[test]
fn task_logs_reach_the_consumer_log_with_the_task_id_from_either_worker_kind() {
    for kind in ["process", "thread"] {
        let b = Backend::sqlite();
        let app = b.app();
        let d = Hueyd::testbed(&b.url(), &["-w", "1", "-k", kind]);
        let warn: Task<String, ()> = Task::from_name(&app, "warn").unwrap();
        let r = warn.enqueue("hello from a task".into()).unwrap();
        assert!(d.wait_log("hello from a task", LONG), "{kind}: {}", d.log());
        let log = d.log();
        let line = log
            .lines()
            .find(|l| l.contains("hello from a task"))
            .unwrap();
        assert!(
            line.contains(r.id()) && line.contains("name=warn") && line.contains("WARN"),
            "{kind}: {line}"
        );
    }
}

#[test]
fn json_logs_are_one_object_a_line_with_the_task_id() {
    let b = Backend::sqlite();
    let app = b.app();
    let d = Hueyd::testbed(
        &b.url(),
        &["-w", "1", "-k", "process", "--log-format", "json"],
    );
    let warn: Task<String, ()> = Task::from_name(&app, "warn").unwrap();
    let r = warn.enqueue("json from a task".into()).unwrap();
    assert!(d.wait_log("json from a task", LONG), "{}", d.log());
    let mut found = false;
    for line in d.log().lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        if v["message"] == "json from a task" {
            assert_eq!(v["level"], "WARN");
            assert_eq!(v["span"]["id"], r.id(), "{v}");
            found = true;
        }
    }
    assert!(found);
}

#[test]
fn the_main_loop_pings_the_systemd_watchdog() {
    let b = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut child = Command::new(common::hueyd::exe())
        .args(["--storage", &b.url(), "-n", "-w", "1"])
        .env_remove("HUEY_STORAGE")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let got = wait_until(LONG, || {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        seen.iter().filter(|s| *s == "WATCHDOG=1").count() >= 3
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(got, "{seen:?}");
    assert!(seen.contains(&"READY=1".to_string()), "{seen:?}");
}

#[test]
fn garbage_records_and_huge_ids_are_harmless() {
    for b in [Backend::sqlite(), Backend::redis()] {
        let app = b.app();
        let storage = app.storage();
        storage
            .put(huey::storage::Ns::Consumers, "bad", b"\x00not json", None)
            .unwrap();
        assert!(
            app.consumers().unwrap().is_empty(),
            "a bad record is skipped"
        );
        let huge = "x".repeat(1 << 20);
        assert_eq!(app.task_state(&huge).unwrap(), TaskState::Unknown);
        assert_eq!(app.task_state("").unwrap(), TaskState::Unknown);
        let out = admin(&b, &["inspect", "no-such-task", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["state"].as_str(), v["id"].as_str()),
            (Some("unknown"), Some("no-such-task"))
        );
    }
}
