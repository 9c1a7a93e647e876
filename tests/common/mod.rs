//! Shared test code: storage test helpers (the cases every backend runs are in `cases/`, which
//! each storage test binary mounts), a private `redis-server`, the real `hueyd` binary, and the
//! testbed's fault-injection tasks.
#![allow(dead_code, unused_macros)]

/// `both!(name, |b: Backend| ...)`: a test module `name` with the body run on SQLite and on
/// Redis (the test file imports `Backend`).
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                $body(Backend::sqlite())
            }
            #[test]
            fn redis() {
                $body(Backend::redis())
            }
        }
    };
}

pub mod hueyd;
pub mod pg_server;
pub mod redis_server;
pub mod suite;
pub mod testbed;

use huey::Huey;

/// Run everything ready on `queues` (and anything due) in this thread, as one consumer would,
/// until nothing is left; returns how many deliveries ran.
pub fn drain(app: &Huey, queues: &[&str]) -> usize {
    let req = suite::request("test", queues, 16, suite::LONG_LEASE);
    let mut n = 0;
    loop {
        app.storage()
            .promote_due(huey::clock::now_ms(), 1000)
            .unwrap();
        let batch = app.storage().dequeue(&req).unwrap();
        if batch.is_empty() {
            return n;
        }
        for d in &batch {
            app.execute(d).unwrap();
            n += 1;
        }
    }
}

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
