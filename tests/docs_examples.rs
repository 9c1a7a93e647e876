//! Every example the docs show is run, not only compiled.

use std::path::PathBuf;
use std::process::Command;

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
fn every_docs_example_runs_to_completion() {
    for name in [
        "docs_guide",
        "docs_pipelines",
        "docs_groups",
        "docs_locks",
        "docs_rate_limits",
        "docs_events",
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
