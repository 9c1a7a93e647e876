//! Benchmark driver: runs one scenario against this crate and prints one JSON line of figures.
//!
//! `scripts/bench` runs it next to `scripts/bench_huey.py` (the same scenarios for Python huey)
//! and prints a comparison table; see BENCHMARKS.md for what each figure means. Usage:
//!
//! ```text
//! cargo run --release --example bench -- SCENARIO [--storage URL] [options]
//!   calibrate --target-ms 20                      iterations of demo `cpu` for ~20 ms
//!   drain     --kind K --workers W --tasks N      noop tasks/s, first to last finish
//!             [--revocations R]                   with R revocations of other ids stored
//!   cpu       --workers W --tasks N --iters I     the same with `cpu(I)` tasks, process workers
//!   enqueue   --tasks N --batch B                 enqueue rate, one at a time and in batches
//!                                                 (Postgres: also inside app transactions)
//!   latency   --kind K --workers W --count C      enqueue `echo` + wait for the result, C times
//!   startup   --kind K --workers W --repeat R     launch `hueyd` to first task finished
//!   memory    --kind K --workers W --tasks N      peak RSS of supervisor and worker
//! ```
//!
//! Every consumer is the release `hueyd` binary (next to this example, or `--hueyd PATH`),
//! started as a subprocess with `-q -n`, as users run it. SQLite files given with
//! `--storage sqlite:PATH` are deleted first so each run starts from an empty database.
//! Storage URLs: `sqlite:PATH`, `redis://127.0.0.1:PORT/0`, `postgres://USER@HOST:PORT/DB`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use huey::storage::Flush;
use huey::{Huey, Task, TaskResult};
use serde_json::{json, Value};

#[path = "common/bench.rs"]
mod common;
use common::{fresh_app, hueyd_path, round, status_kib, Res};

/// How long any single wait may take before the scenario fails.
const WAIT: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(about = "Benchmark driver for huey (one scenario, one JSON line)")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Storage URL: sqlite:PATH, redis://127.0.0.1:PORT/0 or postgres://USER@HOST:PORT/DB.
    #[arg(long, default_value = "sqlite:target/bench.db")]
    storage: String,
    /// Worker kind for the consumer.
    #[arg(long, default_value = "process")]
    kind: String,
    #[arg(long, default_value_t = 4)]
    workers: u32,
    /// Tasks to drain (drain, cpu, memory) or enqueue (enqueue).
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Chunk size for enqueue_many.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Round trips (latency).
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Launches (startup).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Iterations of the `cpu` task (cpu).
    #[arg(long, default_value_t = 0)]
    iters: u64,
    /// Target duration of one `cpu` task (calibrate).
    #[arg(long, default_value_t = 20.0)]
    target_ms: f64,
    /// Revocations by id of other task instances stored before a drain (drain).
    #[arg(long, default_value_t = 0)]
    revocations: usize,
    /// The consumer binary (default: `hueyd` next to this example's directory).
    #[arg(long)]
    hueyd: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Calibrate,
    Drain,
    Cpu,
    Enqueue,
    Latency,
    Startup,
    Memory,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("system".into(), json!("huey-rs"));
                m.insert(
                    "scenario".into(),
                    json!(format!("{:?}", args.scenario).to_lowercase()),
                );
                if args.scenario != Scenario::Calibrate {
                    m.insert("storage".into(), json!(backend(&args.storage)));
                }
            }
            println!("{v}");
        }
        Err(e) => {
            eprintln!("bench {:?}: {e}", args.scenario);
            std::process::exit(1);
        }
    }
}

fn run(a: &Args) -> Res<Value> {
    match a.scenario {
        Scenario::Calibrate => calibrate(a.target_ms),
        Scenario::Drain => drain(a, false),
        Scenario::Cpu => drain(a, true),
        Scenario::Enqueue => enqueue(a),
        Scenario::Latency => latency(a),
        Scenario::Startup => startup(a),
        Scenario::Memory => memory(a),
    }
}

fn backend(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("redis") {
        "redis"
    } else if url.starts_with("postgres") {
        "postgres"
    } else {
        "other"
    }
}

// ----- setup --------------------------------------------------------------------------------

/// A running `hueyd`, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Consumer {
    child: Child,
}

impl Consumer {
    fn start(a: &Args, workers: u32) -> Res<Consumer> {
        let child = Command::new(hueyd_path(a.hueyd.as_ref())?)
            .args(["--storage", &a.storage, "-k", &a.kind, "-q", "-n"])
            .args(["-w", &workers.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Consumer { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Res<()> {
        common::stop(&mut self.child);
        Ok(())
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

fn echo(app: &Huey) -> Res<Task<String, String>> {
    Ok(Task::from_name(app, "echo")?)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- scenarios ----------------------------------------------------------------------------

/// Iterations of `huey::demo::cpu` that take `target_ms` here (the fastest of several runs,
/// the least disturbed by other load).
fn calibrate_iters(target_ms: f64) -> u64 {
    let probe = 2_000_000u64;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(huey::demo::cpu(std::hint::black_box(probe)));
        best = best.min(secs(t.elapsed()));
    }
    let n = (probe as f64 * target_ms / 1000.0 / best) as u64;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(huey::demo::cpu(std::hint::black_box(n)));
        best = best.min(secs(t.elapsed()));
    }
    (n as f64 * target_ms / 1000.0 / best) as u64
}

fn calibrate(target_ms: f64) -> Res<Value> {
    let iters = calibrate_iters(target_ms);
    let t = Instant::now();
    std::hint::black_box(huey::demo::cpu(std::hint::black_box(iters)));
    Ok(json!({"iters": iters, "check_ms": round(secs(t.elapsed()) * 1000.0, 2)}))
}

/// Drain: a start marker (`echo`), then N tasks (`noop`, or `cpu(iters)`), then one end marker
/// (`echo`) per worker, all enqueued before the consumer starts. The drain interval runs from
/// the moment the start marker's result is seen to the moment every end marker's result is
/// seen; the rate is (N + end markers) / interval. Queue order is FIFO, so when the last end
/// marker is done at most `workers - 1` other tasks can still be running: the error is below
/// one task's duration. As a check, the time until storage counts show nothing ready or in
/// flight is reported too (`empty_s`).
fn drain(a: &Args, cpu: bool) -> Res<Value> {
    let app = fresh_app(&a.storage)?;
    for i in 0..a.revocations {
        app.revoke_id(&format!("other-{i}"), huey::Revoke::default())?;
    }
    let echo = echo(&app)?;
    let t = Instant::now();
    let start = echo.enqueue("start".into())?;
    if cpu {
        if a.iters == 0 {
            return Err("cpu needs --iters (see the calibrate scenario)".into());
        }
        let task: Task<u64, u64> = Task::from_name(&app, "cpu")?;
        for chunk in (0..a.tasks).collect::<Vec<_>>().chunks(a.batch) {
            task.enqueue_many(chunk.iter().map(|_| a.iters))?;
        }
    } else {
        let task: Task<(), ()> = Task::from_name(&app, "noop")?;
        for chunk in (0..a.tasks).collect::<Vec<_>>().chunks(a.batch) {
            task.enqueue_many(chunk.iter().map(|_| ()))?;
        }
    }
    let ends = echo.enqueue_many((0..a.workers).map(|i| format!("end-{i}")))?;
    let enqueue_s = secs(t.elapsed());

    let launched = Instant::now();
    let consumer = Consumer::start(a, a.workers)?;
    wait(&start)?;
    let first = Instant::now();
    for e in &ends {
        wait(e)?;
    }
    let last = Instant::now();
    let storage = app.storage();
    let empty = loop {
        let c = storage.counts()?;
        if c.ready + c.in_flight == 0 {
            break Instant::now();
        }
        if launched.elapsed() > WAIT {
            return Err("the queue did not empty".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    consumer.stop()?;
    let counted = a.tasks + ends.len();
    let interval = secs(last - first);
    Ok(json!({
        "kind": a.kind, "workers": a.workers, "tasks": a.tasks,
        "revocations": a.revocations,
        "task": if cpu { "cpu" } else { "noop" },
        "iters": if cpu { Some(a.iters) } else { None },
        "enqueue_s": round(enqueue_s, 4),
        "startup_s": round(secs(first - launched), 4),
        "drain_s": round(interval, 4),
        "empty_s": round(secs(empty - first), 4),
        "tasks_per_s": round(counted as f64 / interval, 1),
    }))
}

/// Enqueue rate without a consumer: N `noop` calls one at a time (`Task::enqueue`, one storage
/// write each), then N more with `enqueue_many` in chunks of `batch` (one write per chunk).
/// On Postgres, then N more inside the application's own transactions (see [`enqueue_in_tx`]).
fn enqueue(a: &Args) -> Res<Value> {
    let app = fresh_app(&a.storage)?;
    let noop: Task<(), ()> = Task::from_name(&app, "noop")?;
    let t = Instant::now();
    for _ in 0..a.tasks {
        noop.enqueue(())?;
    }
    let single = secs(t.elapsed());
    app.storage().flush(Flush::all())?;
    let t = Instant::now();
    let mut left = a.tasks;
    while left > 0 {
        let n = left.min(a.batch);
        noop.enqueue_many(std::iter::repeat_n((), n))?;
        left -= n;
    }
    let batched = secs(t.elapsed());
    let ready = app.storage().counts()?.ready;
    if ready != a.tasks as u64 {
        return Err(format!("{ready} tasks ready after enqueueing {}", a.tasks).into());
    }
    let mut out = json!({
        "tasks": a.tasks, "batch": a.batch,
        "single_per_s": round(a.tasks as f64 / single, 1),
        "batch_per_s": round(a.tasks as f64 / batched, 1),
    });
    if backend(&a.storage) == "postgres" {
        let one = enqueue_in_tx(a, &app, &noop, 1)?;
        let many = enqueue_in_tx(a, &app, &noop, a.batch)?;
        out["tx_one_per_s"] = json!(round(a.tasks as f64 / one, 1));
        out["tx_batch_per_s"] = json!(round(a.tasks as f64 / many, 1));
    }
    Ok(out)
}

/// Transactional enqueue: N `noop` calls in application transactions of `per_tx` calls each
/// (`enqueue_in`, or `enqueue_many_in` for more than one), every transaction also inserting
/// one row into an application table, then committing; the seconds taken.
fn enqueue_in_tx(a: &Args, app: &Huey, noop: &Task<(), ()>, per_tx: usize) -> Res<f64> {
    let mut client = postgres::Client::connect(&client_url(&a.storage), postgres::NoTls)?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_orders(id bigserial PRIMARY KEY, total integer NOT NULL);
         TRUNCATE bench_orders",
    )?;
    app.storage().flush(Flush::all())?;
    // Prepared once, as an application would: each transaction's own insert is one round trip.
    let insert = client.prepare("INSERT INTO bench_orders(total) VALUES ($1)")?;
    let t = Instant::now();
    let mut left = a.tasks;
    while left > 0 {
        let n = left.min(per_tx.max(1));
        let mut tx = client.transaction()?;
        tx.execute(&insert, &[&42i32])?;
        if n == 1 {
            noop.enqueue_in(&mut tx, ())?;
        } else {
            noop.enqueue_many_in(&mut tx, std::iter::repeat_n((), n))?;
        }
        tx.commit()?;
        left -= n;
    }
    let elapsed = secs(t.elapsed());
    let ready = app.storage().counts()?.ready;
    let orders: i64 = client
        .query_one("SELECT count(*) FROM bench_orders", &[])?
        .get(0);
    let expected = a.tasks.div_ceil(per_tx.max(1)) as i64;
    if ready != a.tasks as u64 || orders != expected {
        return Err(
            format!("{ready} tasks and {orders} orders after {expected} transactions").into(),
        );
    }
    Ok(elapsed)
}

/// The storage URL without the storage's own `schema=` option, for the application's client.
fn client_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("schema="))
        .collect();
    if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Round-trip latency: with a consumer running (and warmed up by one task), enqueue one
/// `echo` and wait for its result, `count` times in a row; the time of each round trip as the
/// producer sees it.
fn latency(a: &Args) -> Res<Value> {
    let app = fresh_app(&a.storage)?;
    let echo = echo(&app)?;
    let consumer = Consumer::start(a, a.workers)?;
    wait(&echo.enqueue("warm-up".into())?)?;
    let mut ms = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let t = Instant::now();
        let r = echo.enqueue(format!("ping {i}"))?;
        let got = wait(&r)?;
        ms.push(secs(t.elapsed()) * 1000.0);
        if got != format!("ping {i}") {
            return Err(format!("echo returned {got:?}").into());
        }
    }
    consumer.stop()?;
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    Ok(json!({
        "kind": a.kind, "workers": a.workers, "count": a.count,
        "p50_ms": round(percentile(&ms, 0.5), 3),
        "p99_ms": round(percentile(&ms, 0.99), 3),
        "mean_ms": round(mean, 3),
        "max_ms": round(ms[ms.len() - 1], 3),
    }))
}

/// Startup: one `echo` enqueued, then `hueyd` launched; the time from the launch to the result
/// being seen. The median of `repeat` launches (each on a fresh storage).
fn startup(a: &Args) -> Res<Value> {
    let mut runs = Vec::new();
    for _ in 0..a.repeat.max(1) {
        let app = fresh_app(&a.storage)?;
        let r = echo(&app)?.enqueue("first".into())?;
        let t = Instant::now();
        let consumer = Consumer::start(a, a.workers)?;
        wait(&r)?;
        runs.push(secs(t.elapsed()) * 1000.0);
        consumer.stop()?;
    }
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "kind": a.kind, "workers": a.workers,
        "median_ms": round(percentile(&sorted, 0.5), 2),
        "runs_ms": runs.iter().map(|x| round(*x, 2)).collect::<Vec<_>>(),
    }))
}

/// `VmHWM` and `VmRSS` of a process, in KiB.
fn mem_kib(pid: u32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "VmHWM:")?, status_kib(pid, "VmRSS:")?))
}

/// Direct children of a process (its worker processes).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Memory of the supervisor and its largest worker: `hwm` is the peak (VmHWM), `rss` the
/// current value; in KiB.
fn mem_snapshot(pid: u32) -> Value {
    let (sup_hwm, sup_rss) = mem_kib(pid).unwrap_or_default();
    let workers: Vec<(u64, u64)> = children(pid).into_iter().filter_map(mem_kib).collect();
    json!({
        "supervisor_hwm_kib": sup_hwm, "supervisor_rss_kib": sup_rss,
        "worker_hwm_kib": workers.iter().map(|w| w.0).max(),
        "worker_rss_kib": workers.iter().map(|w| w.1).max(),
        "workers_seen": workers.len(),
    })
}

/// Memory: start the consumer, run one `echo` (so workers have started and run a task), wait
/// a second and read the supervisor's and workers' memory (idle); then drain N `noop` tasks
/// and one end marker per worker, and read the peaks again (drain).
fn memory(a: &Args) -> Res<Value> {
    let app = fresh_app(&a.storage)?;
    let echo = echo(&app)?;
    let consumer = Consumer::start(a, a.workers)?;
    wait(&echo.enqueue("warm-up".into())?)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = mem_snapshot(consumer.pid());
    let noop: Task<(), ()> = Task::from_name(&app, "noop")?;
    let mut left = a.tasks;
    while left > 0 {
        let n = left.min(a.batch);
        noop.enqueue_many(std::iter::repeat_n((), n))?;
        left -= n;
    }
    let ends = echo.enqueue_many((0..a.workers).map(|i| format!("end-{i}")))?;
    for e in &ends {
        wait(e)?;
    }
    let drained = mem_snapshot(consumer.pid());
    consumer.stop()?;
    Ok(json!({
        "kind": a.kind, "workers": a.workers, "tasks": a.tasks,
        "idle": idle, "drain": drained,
    }))
}
