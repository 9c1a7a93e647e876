//! The testbed app's tasks: the demo tasks plus the fault-injection tasks the reliability
//! tests and the soak run need, which the released `hueyd` does not carry.
//!
//! Shared by the tests' producers and in-process consumers, `examples/testbed.rs` (the consumer
//! binary the tests start when they need these tasks) and `examples/soak.rs`.

use std::time::Duration;

use huey::{Huey, TaskContext, TaskError};

/// Register the demo tasks ([`huey::demo::register`]) and the fault-injection tasks:
/// `pid` (the pid of the worker process that ran it), `panic`, `crash` (aborts its worker),
/// `collect` (a chord callback: the sum of the members that succeeded; each run adds 1 to the
/// counter `collect-runs`), `locked_sleep` (sleeps holding the lock `demo-lock`, whose TTL is
/// 3 s), `record(ms)` (counts its runs per task id in storage under `runs:ID`, sleeps, returns
/// the count), `failing(ms)` (like `record`, but fails every attempt; one retry) and
/// `garble(len)` (writes a corrupt frame onto its worker's result pipe; process
/// workers only). A startup hook adds 1 to the counter `worker-starts` in every worker.
pub fn register(app: &Huey) -> huey::Result<()> {
    huey::demo::register(app)?;
    app.on_startup(|app| {
        if let Err(e) = app.storage().incr("worker-starts", 1) {
            tracing::warn!("could not count a worker start: {e}");
        }
    });
    app.task("pid")
        .register(|(): ()| Ok::<_, String>(std::process::id()))?;
    app.task("panic")
        .register(|message: String| -> Result<(), String> { panic!("{message}") })?;
    app.task("crash")
        .register(|(): ()| -> Result<(), String> { std::process::abort() })?;
    app.task("collect").register_with_context(
        |outcomes: Vec<Result<i64, TaskError>>, ctx: &TaskContext| {
            ctx.app()
                .storage()
                .incr("collect-runs", 1)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(outcomes.iter().flatten().sum::<i64>())
        },
    )?;
    app.task("locked_sleep")
        .lock("demo-lock")
        .lock_ttl(Duration::from_secs(3))
        .register(|ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(ms)
        })?;
    app.task("record")
        .retries(5)
        .register_with_context(|ms: u64, ctx: &TaskContext| {
            let runs = ctx
                .app()
                .storage()
                .incr(&format!("runs:{}", ctx.id()), 1)
                .map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(runs as u32)
        })?;
    app.task("failing").retries(1).register_with_context(
        |ms: u64, ctx: &TaskContext| -> Result<u32, String> {
            let runs = ctx
                .app()
                .storage()
                .incr(&format!("runs:{}", ctx.id()), 1)
                .map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(ms));
            Err(format!("run {runs} failed on purpose"))
        },
    )?;
    app.task("garble").register(garble)?;
    Ok(())
}

/// Write a frame header announcing `len` bytes onto this worker's result pipe (fd 4), then
/// junk, and linger so the supervisor reads the corrupt frame before the worker exits.
fn garble(len: u32) -> Result<(), String> {
    use std::io::Write;
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/4")
        .map_err(|e| e.to_string())?;
    let mut junk = len.to_le_bytes().to_vec();
    junk.extend([0xff; 16]);
    pipe.write_all(&junk).map_err(|e| e.to_string())?;
    drop(pipe);
    std::thread::sleep(Duration::from_secs(5));
    Ok(())
}
