//! Shared test code: storage test helpers (the cases every backend runs are in `cases/`, which
//! each storage test binary mounts), a private `redis-server`, the real `hueyd` binary, and the
//! testbed's fault-injection tasks.
#![allow(dead_code, unused_macros)]

pub mod hueyd;
pub mod redis_server;
pub mod suite;
pub mod testbed;

/// An example binary, built by `cargo test` beside the test binaries (built here if missing).
pub fn example(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = deps.parent().unwrap().join("examples").join(name);
    if !exe.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    exe
}
