//! An app that embeds huey's command line in its own clap command (`examples/embed_cli.rs`):
//! its own name and version, huey's flags in its help, its own subcommand, huey's admin
//! commands under its `queue` subcommand, and a real consumer (process workers re-running the
//! app's binary) draining a task it enqueued.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::hueyd::wait_until;

const LONG: Duration = Duration::from_secs(30);

fn shop() -> PathBuf {
    common::example("embed_cli")
}

fn run(args: &[&str]) -> Output {
    Command::new(shop())
        .args(args)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_is_the_apps_own() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "shop 2.3.1");
}

#[test]
fn help_shows_the_apps_command_and_hueys_flags_with_their_variables() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for needle in [
        "The shop: take orders",
        "order",
        "queue",
        "--workers",
        "[env: HUEY_WORKERS=]",
        "--kind",
        "--storage",
        "--config",
        "--pidfile",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let out = run(&["queue", "--help"]);
    let help = text(&out.stdout);
    for needle in ["status", "enqueue", "result", "inspect"] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

#[test]
fn consumer_flags_are_refused_with_the_apps_subcommands() {
    let out = run(&["-w", "3", "queue", "status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("--workers runs the consumer"),
        "{out:?}"
    );
}

#[test]
fn embedded_consumer_with_process_workers_drains_the_apps_task() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("shop.db").display());
    let out = run(&["--storage", &url, "order", "tea:2:450", "cup:1:1299"]);
    assert!(out.status.success(), "{out:?}");
    let id = text(&out.stdout).trim().to_string();
    assert!(!id.is_empty());

    let out = run(&["--storage", &url, "queue", "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("\"ready\":1"), "{out:?}");

    let log = dir.path().join("consumer.log");
    let mut consumer = Command::new(shop())
        .args(["--storage", &url, "-n", "-w", "2", "-k", "process"])
        .env_remove("HUEY_STORAGE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let out = run(&["--storage", &url, "queue", "result", &id, "--wait", "30"]);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(consumer.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let stopped = wait_until(LONG, || consumer.try_wait().unwrap().is_some());
    if !stopped {
        let _ = consumer.kill();
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\nconsumer log:\n{log}");
    assert_eq!(text(&out.stdout).trim(), "2199");
    assert!(stopped, "consumer stops on SIGTERM");
    assert!(log.contains("kind=Process"), "{log}");
}
