//! `hueyd demo`, the README's first command, works and shows what it promises; `hueyd`
//! carries the demo tasks only.

/// Run `hueyd ARGS...` to completion; its stdout, after checking it exited 0.
fn demo(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hueyd"))
        .args(args)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn demo_runs_a_mix_of_tasks_and_stops_gracefully() {
    let text = demo(&["demo", "--workers", "2", "--cpu-tasks", "4"]);
    for needle in [
        "add(2, 3)",
        "-> 5",
        "-> 42",
        "retry",
        "-> 3",
        "fails on purpose",
        "consumer stopped gracefully",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        text.contains("summary: 10 tasks, 9 succeeded, 1 failed, 2 retries"),
        "{text}"
    );
}

#[test]
fn demo_runs_on_redis_when_asked() {
    #[path = "common/redis_server.rs"]
    mod redis_server;
    let server = redis_server::RedisServer::start();
    let url = server.url();
    let text = demo(&[
        "--storage",
        &url,
        "demo",
        "--workers",
        "2",
        "--cpu-tasks",
        "2",
    ]);
    assert!(text.contains(&format!("on {url}")), "{text}");
    assert!(text.contains("summary: 8 tasks, 7 succeeded"), "{text}");
}

#[test]
fn hueyd_carries_the_demo_tasks_and_none_that_break_their_worker() {
    let text = demo(&["--storage", "memory:", "tasks"]);
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('(').next()).collect();
    assert_eq!(
        names,
        [
            "add",
            "cpu",
            "echo",
            "fail",
            "flaky",
            "heartbeat",
            "huey.command",
            "noop",
            "sleep"
        ],
        "{text}"
    );
}
