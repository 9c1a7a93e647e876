//! The reference binary's demo tasks, and `hueyd demo`: a few seconds that show what the
//! product does, on the embedded default storage.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::app::Huey;
use crate::crontab::Crontab;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::message::StoredResult;
use crate::storage::Ns;
use crate::supervisor::{Config, Supervisor, WorkerKind};
use crate::task::Task;

/// Register the demo tasks: `noop`, `echo`, `add`, `sleep`, `cpu`, `fail` (fails with its
/// argument), `flaky(key, failures)` (fails `failures` times, counted in storage under
/// `flaky:KEY`, then succeeds; 5 retries) and the periodic `heartbeat` (writes the time to the
/// app data key `heartbeat` every minute). `hueyd demo` and the benchmarks run these; the
/// fault-injection tasks of the reliability tests live with the tests.
pub fn register(app: &Huey) -> Result<()> {
    app.task("noop").register(|(): ()| Ok::<_, String>(()))?;
    app.task("echo").register(|v: String| Ok::<_, String>(v))?;
    app.task("add")
        .register(|(a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))?;
    app.task("sleep").register(|ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, String>(ms)
    })?;
    app.task("cpu").register(|n: u64| Ok::<_, String>(cpu(n)))?;
    app.task("fail")
        .register(|message: String| Err::<(), _>(message))?;
    app.task("flaky").retries(5).register_with_context(
        |(key, failures): (String, u32), ctx: &crate::TaskContext| {
            let n = ctx
                .app()
                .storage()
                .incr(&format!("flaky:{key}"), 1)
                .map_err(|e| e.to_string())?;
            if n <= i64::from(failures) {
                Err(format!("failing on purpose ({n} of {failures})"))
            } else {
                Ok(n as u32)
            }
        },
    )?;
    app.task("heartbeat")
        .periodic(Crontab::parse("* * * * *")?)
        .register_with_context(|(): (), ctx: &crate::TaskContext| {
            let now = crate::clock::now_ms().to_string();
            ctx.app()
                .storage()
                .put(Ns::Data, "heartbeat", now.as_bytes(), None)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })?;
    Ok(())
}

/// A CPU-bound loop of `n` iterations (an xorshift walk) that returns what it computed.
pub fn cpu(n: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Options of `hueyd demo`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct DemoArgs {
    /// Process workers to start.
    #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// CPU tasks in the batch.
    #[arg(long, default_value_t = 16)]
    pub cpu_tasks: u32,
}

/// What the demo waits for: a label to print and whether it is expected to fail.
struct Pending {
    label: String,
    expect_failure: bool,
}

/// The demo's tasks, looked up by name before the consumer starts so a missing one is a clear
/// error and not a task that never finishes.
struct DemoTasks {
    add: Task<(i64, i64), i64>,
    echo: Task<String, String>,
    sleep: Task<u64, u64>,
    flaky: Task<(String, u32), u32>,
    fail: Task<String, ()>,
    cpu: Task<u64, u64>,
}

/// What the demo saw finish.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    retries: usize,
    workers: HashSet<u32>,
}

/// Run the demo on `url` (a temporary SQLite file when `None`): start a supervisor with process
/// workers in this process, enqueue a mix of tasks, print each result as it arrives with the
/// worker that ran it, print a summary, and stop gracefully.
pub(crate) fn run(
    name: &str,
    url: Option<String>,
    args: DemoArgs,
    register: &dyn Fn(&Huey) -> Result<()>,
) -> Result<ExitCode> {
    let (url, _tmp) = demo_storage(url)?;
    let app = Huey::open(name, &url)?;
    register(&app)?;
    let tasks = DemoTasks::resolve(&app)?;
    let rx = outcomes(&app);
    let cfg = Config {
        workers: args.workers as usize,
        kind: WorkerKind::Process,
        scheduler_interval: Duration::from_millis(100),
        log_tasks: false,
        periodic: false,
        ..Config::default()
    };
    println!("huey demo: {} process workers on {url}", args.workers);
    let started = Instant::now();
    let supervisor = Supervisor::new(app.clone(), cfg)?;
    let stop = supervisor.stop_handle();
    let consumer = std::thread::spawn(move || supervisor.run());

    let mut pending = tasks.enqueue(args.cpu_tasks)?;
    let total = pending.len();
    let tally = watch(&app, &rx, &mut pending);
    stop.stop();
    let stopped = consumer
        .join()
        .map_err(|_| Error::Config("the demo's consumer thread panicked".into()))??;
    let elapsed = started.elapsed();
    println!(
        "summary: {total} tasks, {} succeeded, {} failed, {} retries, {} worker processes, {:.2} s; consumer stopped {}",
        tally.ok,
        tally.failed,
        tally.retries,
        tally.workers.len(),
        elapsed.as_secs_f64(),
        match stopped.0 {
            crate::supervisor::Stopped::Graceful => "gracefully",
            crate::supervisor::Stopped::Interrupted => "with tasks interrupted",
        }
    );
    if !pending.is_empty() {
        return Err(Error::Config(format!(
            "{} demo tasks did not finish in time",
            pending.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// The storage URL, and the temporary directory holding the database when none was given
/// (removed when dropped, so kept until the demo ends).
fn demo_storage(url: Option<String>) -> Result<(String, Option<tempfile::TempDir>)> {
    if let Some(u) = url {
        return Ok((u, None));
    }
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
    let url = format!("sqlite:{}", dir.path().join("demo.db").display());
    Ok((url, Some(dir)))
}

/// The events the demo prints: outcomes and retries.
fn outcomes(app: &Huey) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel::<Event>();
    let tx = Mutex::new(tx);
    app.on_event(move |e| {
        if matches!(
            e.kind,
            EventKind::Complete
                | EventKind::Error
                | EventKind::Retrying
                | EventKind::WorkerLost
                | EventKind::Timeout
        ) {
            let _ = tx.lock().send(e.clone());
        }
    });
    rx
}

impl DemoTasks {
    fn resolve(app: &Huey) -> Result<DemoTasks> {
        Ok(DemoTasks {
            add: demo_task(app, "add")?,
            echo: demo_task(app, "echo")?,
            sleep: demo_task(app, "sleep")?,
            flaky: demo_task(app, "flaky")?,
            fail: demo_task(app, "fail")?,
            cpu: demo_task(app, "cpu")?,
        })
    }

    /// Enqueue the mix; what to wait for, by task id.
    fn enqueue(&self, cpu_tasks: u32) -> Result<HashMap<String, Pending>> {
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut expect = |id: &str, label: String, expect_failure: bool| {
            pending.insert(
                id.to_string(),
                Pending {
                    label,
                    expect_failure,
                },
            );
        };
        expect(self.add.enqueue((2, 3))?.id(), "add(2, 3)".into(), false);
        expect(
            self.echo.enqueue("hello from huey".into())?.id(),
            "echo(\"hello from huey\")".into(),
            false,
        );
        expect(self.sleep.enqueue(300)?.id(), "sleep(300 ms)".into(), false);
        expect(
            self.add
                .schedule((40, 2), Duration::from_millis(1500))?
                .id(),
            "add(40, 2), delayed 1.5 s".into(),
            false,
        );
        let key = crate::message::new_id();
        expect(
            self.flaky
                .call((key, 2))
                .retry_delay(Duration::from_millis(200))
                .enqueue()?
                .id(),
            "flaky(fails twice, then succeeds)".into(),
            false,
        );
        expect(
            self.fail.enqueue("this one fails on purpose".into())?.id(),
            "fail(\"...\"), fails on purpose".into(),
            true,
        );
        let iterations = 20_000_000;
        for h in self.cpu.enqueue_many((0..cpu_tasks).map(|_| iterations))? {
            expect(h.id(), format!("cpu({iterations})"), false);
        }
        Ok(pending)
    }
}

/// Print each outcome as it arrives until nothing is pending (or two minutes have passed).
fn watch(app: &Huey, rx: &mpsc::Receiver<Event>, pending: &mut HashMap<String, Pending>) -> Tally {
    let mut tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() && Instant::now() < deadline {
        let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if e.kind == EventKind::Retrying {
            tally.retries += 1;
            let label = pending
                .get(&e.id)
                .map(|p| p.label.as_str())
                .unwrap_or(&e.task);
            println!(
                "  retry   {label:<38} attempt {} failed: {}",
                e.attempt,
                e.error.as_deref().unwrap_or("")
            );
            continue;
        }
        let Some(p) = pending.remove(&e.id) else {
            continue;
        };
        if let Some(w) = e.worker {
            tally.workers.insert(w);
        }
        if e.kind == EventKind::Complete {
            tally.ok += 1;
        } else {
            tally.failed += 1;
        }
        show_outcome(app, &e, &p);
    }
    tally
}

/// One line for a finished task: its label, its result, and the worker that ran it.
fn show_outcome(app: &Huey, e: &Event, p: &Pending) {
    let worker = e
        .worker
        .map(|w| w.to_string())
        .unwrap_or_else(|| "?".into());
    let took = e
        .duration
        .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_default();
    let shown = match app
        .result::<serde_json::Value>(e.id.clone())
        .preserve()
        .get()
    {
        Err(Error::Task(err)) => format!("error: {}", err.message),
        _ => show_result(app, &e.task, &e.id),
    };
    let mark = match (e.kind == EventKind::Complete, p.expect_failure) {
        (true, _) => "ok     ",
        (false, true) => "failed ",
        (false, false) => "FAILED ",
    };
    println!(
        "  {mark} {:<38} -> {shown:<24} [worker {worker}, {took}]",
        p.label
    );
}

fn demo_task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Result<Task<A, R>> {
    Task::from_name(app, name).map_err(|e| {
        Error::Config(format!(
            "the demo needs the demo tasks (huey::demo::register): {e}"
        ))
    })
}

/// A stored result as JSON text, through the task's own decoder.
fn show_result(app: &Huey, task: &str, id: &str) -> String {
    let bytes = match app.storage().result(id, false) {
        Ok(Some(b)) => b,
        _ => return "(no result stored)".into(),
    };
    match (StoredResult::decode(&bytes), app.task_def(task)) {
        (Ok(StoredResult::Ok { value: v, .. }), Some(def)) => def
            .handler
            .result_to_json(&v)
            .map(|j| j.to_string())
            .unwrap_or_else(|e| format!("(undecodable: {e})")),
        (Ok(StoredResult::Err(e)), _) => format!("error: {}", e.message),
        _ => "(undecodable)".into(),
    }
}
