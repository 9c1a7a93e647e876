//! The per-app example, end to end: its own worker binary (with every hueyd flag) and its
//! producer, on one SQLite file.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::example;
use common::hueyd::{wait_until, Backend};

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
    // `status` reads an existing storage only.
    let _app = b.app();
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
