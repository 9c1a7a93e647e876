//! apalis on the benchmark's drain and latency scenarios, with the definitions of
//! examples/bench.rs (see BENCHMARKS.md): one JSON line per run on stdout.
//!
//! ```text
//! bench-apalis drain   --storage URL --workers 4 --tasks 20000 [--batch 1000]
//! bench-apalis latency --storage URL --workers 1 --count 500
//! ```
//!
//! URL is `sqlite:PATH` or `redis://HOST:PORT/DB`. `--kind` is accepted and ignored (apalis
//! runs tasks as futures on a tokio runtime). Tuning: `--batch-size` (tasks one fetch takes,
//! default 100, huey-rs's lease size), `--poll-ms` (how often an idle worker looks for new
//! tasks, default 1), `--split true` (W workers of concurrency 1 instead of one worker of
//! concurrency W).

mod consumer;
mod store;

use std::time::Instant;

use serde_json::{json, Value};

use consumer::Consumer;
use store::{task, Job, Res, Store, WAIT};

#[derive(Debug, Clone)]
pub struct Args {
    scenario: String,
    storage: String,
    workers: usize,
    tasks: usize,
    count: usize,
    batch: usize,
    batch_size: usize,
    poll_ms: u64,
    split: bool,
}

fn parse() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let scenario = it
        .next()
        .ok_or("usage: bench-apalis drain|latency|consume --storage URL ...")?;
    let mut a = Args {
        scenario,
        storage: String::new(),
        workers: 4,
        tasks: 20_000,
        count: 500,
        batch: 1000,
        batch_size: 100,
        poll_ms: 1,
        split: false,
    };
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--storage" => a.storage = v,
            "--workers" => a.workers = v.parse()?,
            "--tasks" => a.tasks = v.parse()?,
            "--count" => a.count = v.parse()?,
            "--batch" => a.batch = v.parse()?,
            "--batch-size" => a.batch_size = v.parse()?,
            "--poll-ms" => a.poll_ms = v.parse()?,
            "--split" => a.split = v.parse()?,
            "--kind" => {}
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if a.storage.is_empty() {
        return Err("--storage URL is required".into());
    }
    if a.workers == 0 || a.batch == 0 || a.batch_size == 0 || a.count == 0 {
        return Err("--workers, --batch, --batch-size and --count must be positive".into());
    }
    Ok(a)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-apalis: {e}");
            std::process::exit(2);
        }
    };
    if a.scenario == "consume" {
        if let Err(e) = consumer::consume(&a) {
            eprintln!("bench-apalis consume: {e}");
            std::process::exit(1);
        }
        return;
    }
    let run = || -> Res<Value> {
        // The producer: one thread, which sleeps between lookups.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        match a.scenario.as_str() {
            "drain" => rt.block_on(drain(&a)),
            "latency" => rt.block_on(latency(&a)),
            s => Err(format!("unknown scenario {s}").into()),
        }
    };
    match run() {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("system".into(), json!("apalis"));
                m.insert("scenario".into(), json!(a.scenario));
                let storage = if store::sqlite_path(&a.storage).is_some() {
                    "sqlite"
                } else {
                    "redis"
                };
                m.insert("storage".into(), json!(storage));
                m.insert("apalis".into(), json!("1.0.0"));
                m.insert("batch_size".into(), json!(a.batch_size));
                m.insert("poll_ms".into(), json!(a.poll_ms));
                if a.split {
                    m.insert("split".into(), json!(true));
                }
            }
            println!("{v}");
        }
        Err(e) => {
            eprintln!("bench-apalis {}: {e}", a.scenario);
            std::process::exit(1);
        }
    }
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Drain: before the consumer starts, a start marker (`echo`), N `noop` tasks (`push_all` in
/// chunks of `batch`), then one end marker per unit of concurrency; the interval runs from the
/// moment the producer sees the start marker's outcome to the moment it has seen every end
/// marker's; the rate is (N + end markers) / interval. Task ids come from a monotonic ULID
/// generator, so SQLite's fetch order (priority, run_at in seconds, id) is push order, as
/// Redis's list is. One worker with concurrency W holds one buffer, so when the last end
/// marker is done at most W - 1 other tasks can still be running. `empty_s`: until the storage
/// shows all N + 1 + W tasks done.
async fn drain(a: &Args) -> Res<Value> {
    let mut store = Store::fresh(&a.storage, a.batch_size).await?;
    let mut ids = ulid::Generator::new();
    let t = Instant::now();
    let (start, first_task) = task(Job::Echo("start".into()), &mut ids)?;
    store.push(vec![first_task]).await?;
    let mut left = a.tasks;
    while left > 0 {
        let n = left.min(a.batch);
        let chunk = (0..n)
            .map(|_| task(Job::Noop, &mut ids).map(|(_, t)| t))
            .collect::<Res<Vec<_>>>()?;
        store.push(chunk).await?;
        left -= n;
    }
    let mut ends = Vec::new();
    let mut end_tasks = Vec::new();
    for i in 0..a.workers {
        let (id, t) = task(Job::Echo(format!("end-{i}")), &mut ids)?;
        ends.push(id);
        end_tasks.push(t);
    }
    store.push(end_tasks).await?;
    store.promote_due().await?;
    let enqueue_s = secs(t.elapsed());

    let launched = Instant::now();
    let mut consumer = Consumer::start(a)?;
    store
        .wait_all(std::slice::from_ref(&start), &mut consumer)
        .await?;
    let first = Instant::now();
    store.wait_all(&ends, &mut consumer).await?;
    let last = Instant::now();
    let total = (a.tasks + 1 + ends.len()) as u64;
    let empty = loop {
        if store.done_count().await? >= total {
            break Instant::now();
        }
        if launched.elapsed() > WAIT {
            return Err("the queue did not empty".into());
        }
        consumer.check()?;
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    drop(consumer);
    let interval = secs(last - first);
    Ok(json!({
        "kind": "async", "workers": a.workers, "tasks": a.tasks, "task": "noop",
        "enqueue_s": round(enqueue_s, 4),
        "startup_s": round(secs(first - launched), 4),
        "drain_s": round(interval, 4),
        "empty_s": round(secs(empty - first), 4),
        "tasks_per_s": round((a.tasks + ends.len()) as f64 / interval, 1),
    }))
}

/// Latency: with a consumer running (warmed up by one task), `count` times in a row: push one
/// `echo` and wait until its outcome is in apalis's result store; the time of each round trip
/// as the producer sees it. SQLite: the producer looks every millisecond. Redis: it waits for
/// apalis's own completion notice (the `tasks:QUEUE:done` pub/sub message the storage sends
/// when it records an outcome), then reads the outcome.
async fn latency(a: &Args) -> Res<Value> {
    let mut store = Store::fresh(&a.storage, a.batch_size).await?;
    let mut ids = ulid::Generator::new();
    let mut done = store::DoneNotices::open(&store).await?;
    let mut consumer = Consumer::start(a)?;
    let (warm, t) = task(Job::Echo("warm-up".into()), &mut ids)?;
    store.push(vec![t]).await?;
    store
        .wait_all(std::slice::from_ref(&warm), &mut consumer)
        .await?;
    let mut ms = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let expect = format!("ping {i}");
        let t0 = Instant::now();
        let (id, t) = task(Job::Echo(expect.clone()), &mut ids)?;
        store.push(vec![t]).await?;
        let got = done.wait(&mut store, &id, &mut consumer).await?;
        ms.push(secs(t0.elapsed()) * 1000.0);
        if got.result.as_deref() != Ok(expect.as_str()) {
            return Err(format!("echo returned {:?}", got.result).into());
        }
    }
    drop(consumer);
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    Ok(json!({
        "kind": "async", "workers": a.workers, "count": a.count,
        "p50_ms": round(percentile(&ms, 0.5), 3),
        "p99_ms": round(percentile(&ms, 0.99), 3),
        "mean_ms": round(mean, 3),
        "max_ms": round(ms[ms.len() - 1], 3),
    }))
}
