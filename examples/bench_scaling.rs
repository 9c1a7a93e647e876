//! Benchmark driver for how the cost grows: the scenarios of `scripts/bench --scaling` that
//! `examples/bench.rs` has no scenario for (its `drain` and `cpu` cover queue depth and worker
//! count). Prints one JSON line of figures, like `examples/bench.rs`.
//!
//! ```text
//! cargo run --release --example bench_scaling -- SCENARIO [--storage URL] [options]
//!   scheduled --tasks N --due D [--lead-ms L]
//!             N scheduled tasks, D of them due L ms after they are written, the others a day
//!             ahead; the time until the consumer's scheduler has moved the D due ones to the
//!             ready queue, and the consumer's peak RSS (VmHWM)
//!   producers --producers P --tasks N
//!             P producer processes (this binary), each its own `Huey` handle, enqueueing
//!             N / P `noop` tasks one at a time into one storage at once: total tasks/s and
//!             every error counted
//! ```
//!
//! The consumer is the release `hueyd` (next to this example, or `--hueyd PATH`), started as a
//! subprocess with `-q -n`. SQLite files given with `--storage sqlite:PATH` are deleted first.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, ValueEnum};
use huey::{Huey, Message, Task};
use serde_json::{json, Value};

#[path = "common/bench.rs"]
mod common;
use common::{fresh_app, hueyd_path, round, Res};

/// How long any single wait may take before the scenario fails.
const WAIT: Duration = Duration::from_secs(300);
/// Messages per storage write when filling the schedule.
const CHUNK: usize = 1000;

#[derive(Parser, Debug)]
#[command(about = "Benchmark driver for huey at scale (one scenario, one JSON line)")]
struct Args {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Storage URL: sqlite:PATH or redis://127.0.0.1:PORT/0.
    #[arg(long, default_value = "sqlite:target/bench_scaling.db")]
    storage: String,
    /// Tasks scheduled in all (scheduled) or enqueued by all producers together (producers).
    #[arg(long, default_value_t = 1_000_000)]
    tasks: usize,
    /// Scheduled tasks that become due (scheduled).
    #[arg(long, default_value_t = 100_000)]
    due: usize,
    /// How long after they are written the due tasks become due (scheduled).
    #[arg(long, default_value_t = 3000)]
    lead_ms: u64,
    /// Producer processes (producers).
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// The consumer binary (default: `hueyd` next to this example's directory).
    #[arg(long)]
    hueyd: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Scheduled,
    Producers,
    /// One producer process of `producers` (started by it).
    #[value(hide = true)]
    Produce,
}

fn main() {
    let args = Args::parse();
    let out = match args.scenario {
        Scenario::Scheduled => scheduled(&args),
        Scenario::Producers => producers(&args),
        Scenario::Produce => produce(&args),
    };
    match out {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                if args.scenario != Scenario::Produce {
                    m.insert("system".into(), json!("huey-rs"));
                    let name = format!("{:?}", args.scenario).to_lowercase();
                    m.insert("scenario".into(), json!(name));
                    let backend = args.storage.split(':').next().unwrap_or("");
                    m.insert("storage".into(), json!(backend));
                }
            }
            println!("{v}");
        }
        Err(e) => {
            eprintln!("bench_scaling {:?}: {e}", args.scenario);
            std::process::exit(1);
        }
    }
}

// ----- setup --------------------------------------------------------------------------------

/// A running `hueyd`, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Consumer {
    child: Child,
}

impl Consumer {
    fn start(a: &Args, extra: &[&str]) -> Res<Consumer> {
        let child = Command::new(hueyd_path(a.hueyd.as_ref())?)
            .args(["--storage", &a.storage, "-q", "-n"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Consumer { child })
    }

    /// Peak RSS (VmHWM) of the consumer process, in KiB.
    fn hwm_kib(&self) -> Option<u64> {
        common::status_kib(self.child.id(), "VmHWM:")
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        common::stop(&mut self.child);
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| round(k as f64 / 1024.0, 1))
}

/// Write `n` scheduled `noop` calls due at `eta`, `CHUNK` per storage write.
fn schedule_many(app: &Huey, noop: &Task<(), ()>, n: usize, eta: SystemTime) -> Res<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        let msgs = (0..k)
            .map(|_| noop.call(()).eta(eta).to_message())
            .collect::<huey::Result<Vec<Message>>>()?;
        app.enqueue_messages(&msgs)?;
        left -= k;
    }
    Ok(())
}

// ----- scenarios ----------------------------------------------------------------------------

/// Scheduled: N - D `noop` tasks with an eta a day ahead, then D with an eta `lead_ms` ahead,
/// all written before the consumer starts (`hueyd -w 1 -k thread -Q parked`: it serves another
/// queue, so what its scheduler moves stays ready and the count is exact, and no worker takes
/// CPU from it). Storage counts are read every 10 ms from the eta on; `promote_s` runs from the
/// eta to the first count showing all D ready (so it includes the wait for the scheduler's next
/// turn, at most its 1 s interval), `moving_s` from the first count showing any ready. The
/// consumer's peak RSS is read before the eta and after the move.
fn scheduled(a: &Args) -> Res<Value> {
    if a.due > a.tasks {
        return Err("--due is more than --tasks".into());
    }
    let app = fresh_app(&a.storage)?;
    let noop: Task<(), ()> = Task::from_name(&app, "noop")?;
    let storage = app.storage();
    let t = Instant::now();
    let far = SystemTime::now() + Duration::from_secs(86_400);
    schedule_many(&app, &noop, a.tasks - a.due, far)?;
    let eta_wall = SystemTime::now() + Duration::from_millis(a.lead_ms);
    let eta = Instant::now() + Duration::from_millis(a.lead_ms);
    schedule_many(&app, &noop, a.due, eta_wall)?;
    let enqueue_s = t.elapsed().as_secs_f64();
    let mut consumer = Consumer::start(a, &["-w", "1", "-k", "thread", "-Q", "parked"])?;
    // Past the consumer's start: it must be up and idle before the eta.
    std::thread::sleep(Duration::from_millis(500));
    if Instant::now() + Duration::from_millis(200) > eta {
        return Err(format!("writing took {enqueue_s:.1} s: raise --lead-ms").into());
    }
    let c = storage.counts()?;
    if c.scheduled != a.tasks as u64 || c.ready != 0 {
        return Err(format!(
            "{} scheduled, {} ready before the eta",
            c.scheduled, c.ready
        )
        .into());
    }
    let hwm_before = consumer.hwm_kib();
    while Instant::now() < eta {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut first_seen = None;
    let mut polls = 0u64;
    let done = loop {
        let c = storage.counts()?;
        polls += 1;
        let now = Instant::now();
        if c.ready > 0 && first_seen.is_none() {
            first_seen = Some(now);
        }
        if c.ready >= a.due as u64 {
            if c.ready != a.due as u64 || c.scheduled != (a.tasks - a.due) as u64 {
                return Err(format!("{} ready, {} scheduled", c.ready, c.scheduled).into());
            }
            break now;
        }
        if consumer.exited() {
            return Err("the consumer exited".into());
        }
        if now > eta + WAIT {
            return Err(format!("{} of {} moved in {WAIT:?}", c.ready, a.due).into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let hwm_after = consumer.hwm_kib();
    drop(consumer);
    let first = first_seen.unwrap_or(done);
    let moving = (done - first).as_secs_f64();
    Ok(json!({
        "tasks": a.tasks, "due": a.due,
        "enqueue_s": round(enqueue_s, 3),
        "promote_s": round((done - eta).as_secs_f64(), 3),
        "moving_s": round(moving, 3),
        "first_seen_s": round((first - eta).as_secs_f64(), 3),
        "polls": polls,
        "supervisor_hwm_before_mib": mib(hwm_before),
        "supervisor_hwm_mib": mib(hwm_after),
    }))
}

/// Producers: P processes of this binary (`produce`), each opening its own `Huey` on the
/// storage, say they are ready; then all are told to go at once and enqueue N / P `noop`
/// tasks one at a time (`Task::enqueue`), counting every error instead of stopping. Total
/// tasks/s over the interval from "go" to the last producer's report; the ready count is
/// checked against the enqueues that succeeded.
fn producers(a: &Args) -> Res<Value> {
    let app = fresh_app(&a.storage)?;
    let p = a.producers.max(1);
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(p);
    for i in 0..p {
        let share = a.tasks / p + usize::from(i < a.tasks % p);
        let mut child = Command::new(&exe)
            .args([
                "produce",
                "--storage",
                &a.storage,
                "--tasks",
                &share.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        children.push((child, out));
    }
    for (_, out) in &mut children {
        let line = read_line(out)?;
        if line.trim() != "ready" {
            return Err(format!("a producer said {line:?}").into());
        }
    }
    let t = Instant::now();
    for (child, _) in &mut children {
        let stdin = child.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
    }
    let mut reports = Vec::with_capacity(p);
    for (child, out) in &mut children {
        let line = read_line(out)?;
        reports.push(serde_json::from_str::<Value>(line.trim())?);
        child.wait()?;
    }
    let wall = t.elapsed().as_secs_f64();
    let mut ok = 0u64;
    let mut errors = 0u64;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut p99 = 0f64;
    let mut max = 0f64;
    let mut p50s = Vec::new();
    for r in &reports {
        ok += r["ok"].as_u64().unwrap_or(0);
        errors += r["errors"].as_u64().unwrap_or(0);
        if let Some(m) = r["error_kinds"].as_object() {
            for (k, v) in m {
                *kinds.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        p99 = p99.max(r["p99_ms"].as_f64().unwrap_or(0.0));
        max = max.max(r["max_ms"].as_f64().unwrap_or(0.0));
        p50s.push(r["p50_ms"].as_f64().unwrap_or(0.0));
    }
    p50s.sort_by(f64::total_cmp);
    let ready = app.storage().counts()?.ready;
    Ok(json!({
        "producers": p, "tasks": a.tasks,
        "ok": ok, "errors": errors, "error_kinds": kinds,
        "stored": ready, "lost": ok.saturating_sub(ready),
        "wall_s": round(wall, 4),
        "tasks_per_s": round(ok as f64 / wall, 1),
        "p50_ms": round(p50s[p50s.len() / 2], 3),
        "p99_ms": round(p99, 3), "max_ms": round(max, 3),
    }))
}

fn read_line(out: &mut BufReader<ChildStdout>) -> Res<String> {
    let mut line = String::new();
    if out.read_line(&mut line)? == 0 {
        return Err("a producer exited early".into());
    }
    Ok(line)
}

/// One producer: open the storage, say "ready", wait for "go" on stdin, enqueue N `noop`
/// tasks one at a time; report successes, errors by message, and the latency of each call.
fn produce(a: &Args) -> Res<Value> {
    let app = Huey::open("hueyd", &a.storage)?;
    huey::demo::register(&app)?;
    let noop: Task<(), ()> = Task::from_name(&app, "noop")?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    let mut ms = Vec::with_capacity(a.tasks);
    let mut ok = 0u64;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..a.tasks {
        let t = Instant::now();
        match noop.enqueue(()) {
            Ok(_) => ok += 1,
            Err(e) => *kinds.entry(e.to_string()).or_default() += 1,
        }
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |x| round(*x, 3))
    };
    Ok(json!({
        "ok": ok, "errors": kinds.values().sum::<u64>(), "error_kinds": kinds,
        "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
    }))
}
