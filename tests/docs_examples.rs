//! Every example the docs show is run, not only compiled.

#[macro_use]
mod common;

use std::process::Command;

use common::example;

#[test]
fn every_docs_example_runs_to_completion() {
    for name in [
        "docs_guide",
        "docs_pipelines",
        "docs_groups",
        "docs_locks",
        "docs_rate_limits",
        "docs_events",
        "docs_semaphores",
        "docs_schedules",
    ] {
        let out = Command::new(example(name)).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
