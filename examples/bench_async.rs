//! Benchmark driver for the async side: runs one scenario and prints one JSON line of figures,
//! like `examples/bench.rs` (`scripts/bench` runs both, next to `scripts/bench_huey.py`).
//!
//! ```text
//! cargo run --release --example bench_async -- SCENARIO [--storage URL] [options]
//!   io       --kind async --workers W --tasks N --sleep-ms S
//!            N tasks that each sleep S ms (tokio::time::sleep), drained by W at once:
//!            tasks/s, % of the ideal N × S / W, and the consumer's peak RSS
//!   enqueue-async --tasks N --concurrency C
//!            enqueue rate of Task::enqueue against Task::enqueue_async on the same storage
//!            in the same run: one at a time, then C at once (threads / tokio tasks)
//! ```
//!
//! The consumer is this binary itself run as `hueyd` (the demo tasks plus the async
//! `sleep_async` task) when `BENCH_ASYNC_CONSUMER=1` is set: `hueyd`'s command line, as users
//! run it.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use huey::storage::Flush;
use huey::{Huey, Task, TaskResult};
use serde_json::{json, Value};

#[path = "common/bench.rs"]
#[allow(dead_code)] // the other drivers' parts of it
mod common;
use common::{fresh_app_with, status_kib, Res};

/// How long any single wait may take before the scenario fails.
const WAIT: Duration = Duration::from_secs(300);
const CONSUMER_ENV: &str = "BENCH_ASYNC_CONSUMER";

#[derive(Parser, Debug)]
#[command(about = "Benchmark driver for huey's async side (one scenario, one JSON line)")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Storage URL: sqlite:PATH or redis://127.0.0.1:PORT/0.
    #[arg(long, default_value = "sqlite:target/bench_async.db")]
    storage: String,
    /// Worker kind for the consumer.
    #[arg(long, default_value = "async")]
    kind: String,
    #[arg(long, default_value_t = 500)]
    workers: u32,
    /// Tasks to drain (io) or enqueue (enqueue).
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// How long each task sleeps (io).
    #[arg(long, default_value_t = 10)]
    sleep_ms: u64,
    /// Enqueuers at once (enqueue).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Io,
    EnqueueAsync,
}

/// The consumer's tasks: `hueyd`'s demo tasks and an async sleep.
fn register(app: &Huey) -> huey::Result<()> {
    huey::demo::register(app)?;
    app.task("sleep_async")
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, huey::TaskError>(())
        })?;
    Ok(())
}

fn main() -> ExitCode {
    if std::env::var_os(CONSUMER_ENV).is_some() {
        return huey::cli::main("hueyd", register);
    }
    let args = Args::parse();
    let out = match args.scenario {
        Scenario::Io => io(&args),
        Scenario::EnqueueAsync => enqueue(&args),
    };
    match out {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("system".into(), json!("huey-rs"));
                let scenario = match args.scenario {
                    Scenario::Io => "io",
                    Scenario::EnqueueAsync => "enqueue_async",
                };
                m.insert("scenario".into(), json!(scenario));
                let backend = args.storage.split(':').next().unwrap_or("");
                m.insert("storage".into(), json!(backend));
            }
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_async {:?}: {e}", args.scenario);
            ExitCode::FAILURE
        }
    }
}

/// This binary as a consumer, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Consumer {
    child: Child,
}

impl Consumer {
    fn start(a: &Args) -> Res<Consumer> {
        let child = Command::new(std::env::current_exe()?)
            .env(CONSUMER_ENV, "1")
            .args(["--storage", &a.storage, "-k", &a.kind, "-q", "-n"])
            .args(["-w", &a.workers.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Consumer { child })
    }

    /// Peak RSS (VmHWM) of the consumer and of its largest child, in KiB.
    fn peak_kib(&self) -> (u64, Option<u64>) {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let child_max = children
            .split_whitespace()
            .filter_map(|p| status_kib(p.parse().ok()?, "VmHWM:"))
            .max();
        (status_kib(pid, "VmHWM:").unwrap_or(0), child_max)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        common::stop(&mut self.child);
    }
}

fn wait<R: serde::de::DeserializeOwned>(r: &TaskResult<R>) -> Res<R> {
    Ok(r.wait(WAIT)?)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// I/O-bound drain, measured as `bench drain` is: a start marker (`echo`), N `sleep_async(S)`
/// tasks, one end marker per worker, all enqueued before the consumer starts; the interval
/// runs from the start marker's result to the last end marker's. The ideal interval is
/// N × S / W (every worker always sleeping); `ideal_pct` is ideal / measured.
fn io(a: &Args) -> Res<Value> {
    let app = fresh_app_with(&a.storage, register)?;
    let echo: Task<String, String> = Task::from_name(&app, "echo")?;
    let sleep: Task<u64, ()> = Task::from_name(&app, "sleep_async")?;
    let start = echo.enqueue("start".into())?;
    for chunk in (0..a.tasks).collect::<Vec<_>>().chunks(1000) {
        sleep.enqueue_many(chunk.iter().map(|_| a.sleep_ms))?;
    }
    let ends = echo.enqueue_many((0..a.workers).map(|i| format!("end-{i}")))?;
    let launched = Instant::now();
    let consumer = Consumer::start(a)?;
    wait(&start)?;
    let first = Instant::now();
    for e in &ends {
        wait(e)?;
    }
    let interval = first.elapsed().as_secs_f64();
    let (hwm, child_hwm) = consumer.peak_kib();
    drop(consumer);
    let ideal = a.tasks as f64 * a.sleep_ms as f64 / 1000.0 / f64::from(a.workers);
    Ok(json!({
        "kind": a.kind, "workers": a.workers, "tasks": a.tasks, "sleep_ms": a.sleep_ms,
        "startup_s": round((first - launched).as_secs_f64(), 4),
        "drain_s": round(interval, 4),
        "ideal_s": round(ideal, 4),
        "ideal_pct": round(100.0 * ideal / interval, 1),
        "tasks_per_s": round((a.tasks + ends.len()) as f64 / interval, 1),
        "consumer_hwm_kib": hwm,
        "worker_hwm_kib": child_hwm,
    }))
}

/// Enqueue rate, no consumer, the same `noop` calls through both APIs in one process: `one`
/// = one call at a time (sync: a loop of `enqueue`; async: a loop of `enqueue_async().await`
/// on a multi-threaded runtime); `many` = C enqueuers at once (sync: C threads; async: C tokio
/// tasks). Each figure is the best of four rounds; each pair runs back to back, sync first in
/// even rounds and async first in odd ones.
fn enqueue(a: &Args) -> Res<Value> {
    let app = fresh_app_with(&a.storage, register)?;
    let noop: Task<(), ()> = Task::from_name(&app, "noop")?;
    let rt = tokio::runtime::Runtime::new()?;
    let (n, c) = (a.tasks, a.concurrency.max(1));
    let mut best = [0f64; 4];
    let runs: [&dyn Fn() -> Res<()>; 4] = [
        &|| sync_enqueue(&noop, n, 1),
        &|| rt.block_on(async_enqueue(&noop, n, 1)),
        &|| sync_enqueue(&noop, n, c),
        &|| rt.block_on(async_enqueue(&noop, n, c)),
    ];
    for round in 0..4 {
        // Each pair back to back, sync first in even rounds and async first in odd ones.
        let order = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        for i in order {
            app.storage().flush(Flush::all())?;
            let t = Instant::now();
            runs[i]()?;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            let ready = app.storage().counts()?.ready;
            if ready != n as u64 {
                return Err(format!("{ready} tasks ready after enqueueing {n}").into());
            }
            best[i] = best[i].max(rate);
        }
    }
    Ok(json!({
        "tasks": n, "concurrency": c,
        "sync_one_per_s": round(best[0], 1), "async_one_per_s": round(best[1], 1),
        "sync_many_per_s": round(best[2], 1), "async_many_per_s": round(best[3], 1),
        "async_one_pct": round(100.0 * best[1] / best[0], 1),
        "async_many_pct": round(100.0 * best[3] / best[2], 1),
    }))
}

fn share(n: usize, c: usize, i: usize) -> usize {
    n / c + usize::from(i < n % c)
}

fn sync_enqueue(noop: &Task<(), ()>, n: usize, c: usize) -> Res<()> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..c)
            .map(|i| {
                s.spawn(move || -> huey::Result<()> {
                    for _ in 0..share(n, c, i) {
                        noop.enqueue(())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().map_err(|_| "an enqueuer panicked")??;
        }
        Ok(())
    })
}

async fn async_enqueue(noop: &Task<(), ()>, n: usize, c: usize) -> Res<()> {
    let mut set = tokio::task::JoinSet::<huey::Result<()>>::new();
    for i in 0..c {
        let noop = noop.clone();
        set.spawn(async move {
            for _ in 0..share(n, c, i) {
                noop.enqueue_async(()).await?;
            }
            Ok(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}
