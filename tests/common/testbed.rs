//! The testbed app's tasks: the demo tasks plus the fault-injection tasks the reliability
//! tests and the soak run need, which the released `hueyd` does not carry.
//!
//! Shared by the tests' producers and in-process consumers, `examples/testbed.rs` (the consumer
//! binary the tests start when they need these tasks) and `examples/soak.rs`.

use std::time::Duration;

use huey::{Huey, TaskContext, TaskError};

/// Register the demo tasks ([`huey::demo::register`]) and the fault-injection tasks:
/// `pid` (the pid of the worker process that ran it), `spin(ms)` (a busy loop of `ms`, then
/// that pid), `panic`, `crash` (aborts its worker),
/// `collect` (a chord callback: the sum of the members that succeeded; each run adds 1 to the
/// counter `collect-runs`), `locked_sleep` (sleeps holding the lock `demo-lock`, whose TTL is
/// 3 s), `record(ms)` (counts its runs per task id in storage under `runs:ID`, sleeps, returns
/// the count), `failing(ms)` (like `record`, but fails every attempt; one retry),
/// `garble(len)` (writes a corrupt frame onto its worker's result pipe; process workers only),
/// `spawn((argv, wait))` (runs a command; with `wait`, returns its pid, exit code and stdout,
/// without, leaves it running and returns its pid) and `capped(ms)` (at most 2 runs at once
/// under the semaphore `capped`, retried while no permit is free; returns how many runs were in
/// progress, itself included, counted in storage under `capped-now`) and `solo(ms)` (the same
/// under the semaphore `solo` of 1 permit whose TTL, 300 ms, is shorter than a run: counted
/// under `solo-now`). A startup hook adds 1 to
/// the counter `worker-starts` in every worker; a shutdown hook sleeps for the value of the
/// counter `shutdown-sleep-ms`, then adds 1 to `worker-stops`. The async tasks are in
/// [`register_async`].
pub fn register(app: &Huey) -> huey::Result<()> {
    huey::demo::register(app)?;
    register_async(app)?;
    app.on_startup(|app| {
        if let Err(e) = app.storage().incr("worker-starts", 1) {
            tracing::warn!("could not count a worker start: {e}");
        }
    });
    app.on_shutdown(|app| {
        let ms = app.storage().incr("shutdown-sleep-ms", 0).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms.max(0) as u64));
        if let Err(e) = app.storage().incr("worker-stops", 1) {
            tracing::warn!("could not count a worker stop: {e}");
        }
    });
    app.task("spawn").register(spawn)?;
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
        .register_with_context(|ms: u64, ctx: &TaskContext| count_run(ms, ctx))?;
    app.task("failing").retries(1).register_with_context(
        |ms: u64, ctx: &TaskContext| -> Result<u32, String> {
            let runs = count_run(ms, ctx)?;
            Err(format!("run {runs} failed on purpose"))
        },
    )?;
    app.task("garble").register(garble)?;
    app.task("flood").register(flood)?;
    app.task("capped")
        .semaphore("capped", 2)
        .semaphore_ttl(Duration::from_secs(60))
        .retries(10_000)
        .retry_delay(Duration::from_millis(20))
        .register_with_context(|ms: u64, ctx: &TaskContext| {
            let s = ctx.app().storage();
            let now = s.incr("capped-now", 1).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(ms));
            s.incr("capped-now", -1).map_err(|e| e.to_string())?;
            Ok::<_, String>(now)
        })?;
    app.task("solo")
        .semaphore("solo", 1)
        .semaphore_ttl(Duration::from_millis(300))
        .retries(10_000)
        .retry_delay(Duration::from_millis(20))
        .register_with_context(|ms: u64, ctx: &TaskContext| {
            let s = ctx.app().storage();
            let now = s.incr("solo-now", 1).map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(ms));
            s.incr("solo-now", -1).map_err(|e| e.to_string())?;
            Ok::<_, String>(now)
        })?;
    app.task("spin").register(spin)?;
    app.task("warn").register(|message: String| {
        tracing::warn!("{message}");
        Ok::<_, String>(())
    })?;
    Ok(())
}

/// Keep a CPU busy for `ms` without a pause, then return this process's pid.
fn spin(ms: u64) -> Result<u32, String> {
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    let mut x = 0u64;
    while std::time::Instant::now() < end {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    Ok(std::process::id())
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

/// Write heartbeat frames into the worker's result pipe without pause for `ms` milliseconds,
/// as a worker gone wild would: valid frames, 4,095 bytes a write (under `PIPE_BUF`, so no
/// write mixes with the worker's own heartbeats). Returns how many bytes went out.
fn flood(ms: u64) -> Result<u64, String> {
    use std::io::Write;
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/4")
        .map_err(|e| e.to_string())?;
    let beats: Vec<u8> = std::iter::repeat_n([1u8, 0, 0, 0, 2], 819)
        .flatten()
        .collect();
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    let mut sent = 0;
    while std::time::Instant::now() < end {
        pipe.write_all(&beats).map_err(|e| e.to_string())?;
        sent += beats.len() as u64;
    }
    Ok(sent)
}

/// Run `argv`; with `wait`, to its end: (pid, exit code, stdout). Without, the child is left
/// running (not reaped by the task) and only its pid is returned.
fn spawn((argv, wait): (Vec<String>, bool)) -> Result<(u32, Option<i32>, String), String> {
    let (exe, args) = argv.split_first().ok_or("an empty command")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdin(std::process::Stdio::null());
    if !wait {
        let child = cmd.spawn().map_err(|e| e.to_string())?;
        return Ok((child.id(), None, String::new()));
    }
    cmd.stdout(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = child.id();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((pid, out.status.code(), stdout))
}

/// Count one more run of this task id in storage (`runs:<id>`), then take `ms`.
fn count_run(ms: u64, ctx: &TaskContext) -> Result<u32, String> {
    let runs = ctx
        .app()
        .storage()
        .incr(&format!("runs:{}", ctx.id()), 1)
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(runs as u32)
}

/// The async tasks: `async_add`, `async_limited` (once an hour, under the rate limit
/// `async-limit`), `async_sleep(ms)`, `async_record(ms)` and `async_failing(ms)` (as `record`
/// and `failing`, waiting on a timer), `async_locked_sleep(ms)` (holds `demo-lock` like
/// `locked_sleep`), `async_pid` (the pid of the process that ran it), `async_panic`,
/// `async_touch((path, ms))` (waits, then creates the file and returns `ms`: a cancelled
/// attempt never does) and
/// `in_flight(ms)` (adds 1 to the counter `in-flight` for `ms`; returns the count it saw on
/// arrival, so the largest answer is the most that ran at once) and `async_block(ms)` (a
/// broken async task: it blocks its runtime thread for `ms` without ever yielding, so it
/// cannot be cancelled in the meantime) and `async_drop_panic(ms)` (waits `ms` holding a
/// value whose `Drop` panics: cancelling it panics).
pub fn register_async(app: &Huey) -> huey::Result<()> {
    app.task("async_sleep")
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })?;
    app.task("async_record")
        .retries(5)
        .register_async_with_context(|ms: u64, ctx: TaskContext| async move {
            let runs = incr(&ctx, format!("runs:{}", ctx.id()), 1).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(runs as u32)
        })?;
    app.task("async_failing")
        .retries(1)
        .register_async_with_context(|ms: u64, ctx: TaskContext| async move {
            let runs = incr(&ctx, format!("runs:{}", ctx.id()), 1).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Err::<u32, _>(format!("run {runs} failed on purpose"))
        })?;
    app.task("async_locked_sleep")
        .lock("demo-lock")
        .lock_ttl(Duration::from_secs(3))
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })?;
    app.task("async_pid")
        .register_async(|(): ()| async { Ok::<_, String>(std::process::id()) })?;
    app.task("async_panic")
        .register_async(|message: String| async move {
            tokio::task::yield_now().await;
            if !message.is_empty() {
                panic!("{message}");
            }
            Ok::<(), String>(())
        })?;
    app.task("async_touch")
        .register_async(|(path, ms): (String, u64)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::fs::write(&path, b"done").map_err(|e| e.to_string())?;
            Ok::<_, String>(ms)
        })?;
    app.task("async_add")
        .register_async(|(a, b): (i64, i64)| async move {
            tokio::task::yield_now().await;
            a.checked_add(b).ok_or("overflow")
        })?;
    app.task("async_limited")
        .rate_limit("async-limit", 1, Duration::from_secs(3600))
        .register_async(|(): ()| async { Ok::<_, String>(1u8) })?;
    app.task("async_block")
        .register_async(|ms: u64| async move {
            std::thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(ms)
        })?;
    app.task("async_drop_panic")
        .register_async(|ms: u64| async move {
            let bomb = PanicOnDrop;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::mem::forget(bomb);
            Ok::<_, String>(ms)
        })?;
    app.task("in_flight")
        .register_async_with_context(|ms: u64, ctx: TaskContext| async move {
            let seen = incr(&ctx, "in-flight".into(), 1).await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            incr(&ctx, "in-flight".into(), -1).await?;
            Ok::<_, String>(seen)
        })?;
    Ok(())
}

/// Held across an `.await` by `async_drop_panic`: its `Drop` panics, so cancelling the
/// future there panics.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a value of the cancelled future panicked in drop");
    }
}

/// Add to a counter in storage off the runtime's threads (a storage call blocks).
async fn incr(ctx: &TaskContext, key: String, by: i64) -> Result<i64, String> {
    let app = ctx.app().clone();
    tokio::task::spawn_blocking(move || app.storage().incr(&key, by))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
