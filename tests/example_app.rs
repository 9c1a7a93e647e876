//! The per-app example, end to end: its own worker binary (with every hueyd flag) and its
//! producer, on one SQLite file.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::hueyd::{wait_until, Backend};

/// Examples are built by `cargo test` next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = deps.parent().unwrap().join("examples").join(name);
    if !exe.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    exe
}

#[test]
fn shop_worker_and_producer_run_end_to_end() {
    let b = Backend::sqlite();
    let mut worker = Command::new(example("shop_worker"))
        .args(["--storage", &b.url(), "-w", "2", "-k", "process", "-q"])
        .spawn()
        .unwrap();
    let out = Command::new(example("shop_producer"))
        .env("HUEY_STORAGE", b.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || worker
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("order total: 2199 cents"), "{text}");
    assert!(
        text.contains("receipt for 21.99 sent to ada@example.com by worker"),
        "{text}"
    );
    assert!(
        text.contains("failed as expected: \"nobody\" is not an email address"),
        "{text}"
    );
}

#[test]
fn shop_worker_has_the_admin_commands_too() {
    let b = Backend::sqlite();
    let out = Command::new(example("shop_worker"))
        .args(["--storage", &b.url(), "status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ready"], 0);
}
