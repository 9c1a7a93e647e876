//! Progress reports (`ctx.progress`) on real SQLite files and a real redis-server: written
//! from task code, throttled, read back with `TaskResult::progress` and `hueyd inspect`.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::hueyd::{exe, Backend};
use huey::{Huey, Task, TaskContext};
use serde_json::Value;

/// The producer's app with two tasks that report progress.
fn app(b: &Backend) -> (Huey, Task<u64, u64>, Task<u64, u64>) {
    let app = b.app();
    // Reports step i of n; returns how many reports were written.
    let steps = app
        .task("progress_steps")
        .register_with_context(|n: u64, ctx: &TaskContext| {
            let mut written = 0;
            for i in 1..=n {
                if ctx.progress(i, n, &format!("step {i}"))? {
                    written += 1;
                }
            }
            Ok::<_, huey::Error>(written)
        })
        .unwrap();
    // One report with a message of `n` bytes.
    let huge = app
        .task("progress_huge")
        .register_with_context(|n: u64, ctx: &TaskContext| {
            ctx.progress(0, 0, &"x".repeat(n as usize))?;
            Ok::<_, huey::Error>(n)
        })
        .unwrap();
    (app, steps, huge)
}

both!(
    progress_is_reported_throttled_and_inspected,
    |b: Backend| {
        let (app, steps, huge) = app(&b);
        let h = steps.enqueue(1000).unwrap();
        assert_eq!(h.progress().unwrap(), None, "nothing before it runs");
        common::drain(&app, &["default"]);
        let written = h.wait(Duration::from_secs(10)).unwrap();
        assert!(
            (1..=5).contains(&written),
            "throttled: {written} writes for 1000 reports"
        );
        let p = h.progress().unwrap().expect("a report");
        assert_eq!(
            (p.done, p.total, p.message.as_str()),
            (1000, 1000, "step 1000")
        );
        assert_eq!(p.fraction(), Some(1.0));
        assert!(p.at_ms > 0);

        let out = Command::new(exe())
            .args(["--storage", &b.url(), "inspect", h.id(), "--json"])
            .env_remove("HUEY_STORAGE")
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["progress"]["done"], 1000, "{v}");
        assert_eq!(v["progress"]["message"], "step 1000", "{v}");

        // A megabyte of message is cut to the limit.
        let h = huge.enqueue(1 << 20).unwrap();
        common::drain(&app, &["default"]);
        h.wait(Duration::from_secs(10)).unwrap();
        let p = h.progress().unwrap().expect("a report");
        assert_eq!(p.message.len(), huey::progress::MAX_MESSAGE_BYTES);
    }
);
