//! The consumer's command line: its flags, their translation into a supervisor [`Config`], and
//! running the consumer with a pidfile and logging set up as asked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::supervisor::{Config, Stopped, Supervisor, WorkerKind};

/// The consumer's flags, public so that an app can `#[command(flatten)]` them into its own
/// clap command (see [`crate::cli::Cli`] for running them). Each long flag `--some-flag` may
/// also come from the environment variable `HUEY_SOME_FLAG` and from the `--config` file's key
/// `some-flag`; a flag given beats the environment, which beats the file, which beats the
/// default. A switch's variable takes true/false, yes/no, on/off or 1/0.
#[derive(Args, Debug, Clone)]
pub struct ConsumerArgs {
    /// Number of workers (at most 1024; with `-k async`, attempts run at once, at most 100000).
    #[arg(short = 'w', long, env = "HUEY_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_ASYNC))]
    workers: u32,
    /// Worker kind: thread, process for CPU-bound work, or async for many I/O-bound tasks at
    /// once (futures on one runtime).
    /// `--worker-type` (huey's name) is an alias, and `greenlet` one of `async`.
    #[arg(short = 'k', long, env = "HUEY_KIND", visible_alias = "worker-type", default_value = "thread", value_parser = worker_kind)]
    kind: WorkerKind,
    /// Attempts each process worker runs at once, as futures on a runtime of its own (async
    /// tasks; sync ones on its blocking threads).
    #[arg(long, env = "HUEY_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_ASYNC))]
    concurrency: u32,
    /// Queues to serve, in order (comma-separated).
    #[arg(
        short = 'Q',
        long = "queue",
        env = "HUEY_QUEUE",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// Do not enqueue periodic tasks from this consumer.
    #[arg(short = 'n', long, env = "HUEY_NO_PERIODIC", value_parser = BoolishValueParser::new())]
    no_periodic: bool,
    /// Seconds between moves of due scheduled tasks to the queue.
    #[arg(short = 's', long, env = "HUEY_SCHEDULER_INTERVAL", default_value = "1", value_parser = seconds)]
    scheduler_interval: Duration,
    /// Seconds between checks for running tasks revoked since they started (async attempts are
    /// cancelled; process workers running a sync one are killed). Dead workers and timeouts
    /// are handled at once regardless.
    #[arg(short = 'c', long, env = "HUEY_HEALTH_CHECK_INTERVAL", default_value = "1", value_parser = seconds)]
    health_check_interval: Duration,
    /// Seconds a process worker may send nothing (it sends a heartbeat every second, also while
    /// a task runs) before it is taken for frozen (stopped, or hung): it is killed and
    /// replaced, and its running tasks count as lost with it (retries apply). 0: never.
    #[arg(long, env = "HUEY_WORKER_STALL_TIMEOUT", default_value = "30", value_parser = seconds_or_zero)]
    worker_stall_timeout: Duration,
    /// Replace a worker after it has run this many tasks.
    #[arg(short = 'M', long, env = "HUEY_MAX_TASKS", value_parser = clap::value_parser!(u32).range(1..))]
    max_tasks: Option<u32>,
    /// Replace a process worker whose resident memory exceeds this many MB after a task.
    #[arg(long, env = "HUEY_MAX_MEMORY", value_parser = clap::value_parser!(u64).range(1..))]
    max_memory: Option<u64>,
    /// Seconds a dequeued task stays reserved for this consumer without renewal.
    #[arg(long, env = "HUEY_LEASE", default_value = "30", value_parser = seconds)]
    lease: Duration,
    /// Deliveries without an acknowledgement before a message is dead-lettered.
    #[arg(long, env = "HUEY_MAX_DELIVERIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: u32,
    /// Clear all locks at start.
    #[arg(short = 'f', long, env = "HUEY_FLUSH_LOCKS", value_parser = BoolishValueParser::new())]
    flush_locks: bool,
    /// Lock names to clear at start (comma-separated), as huey's `-L`; implies `-f`, since
    /// this consumer cannot tell task locks from others (huey clears its task locks too).
    #[arg(
        short = 'L',
        long,
        env = "HUEY_EXTRA_LOCKS",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    extra_locks: Vec<String>,
    /// huey's `-C/--disable-health-check`: accepted for scripts and ignored, since dead
    /// workers are always replaced here (the supervisor waits on its children).
    #[arg(short = 'C', long, env = "HUEY_DISABLE_HEALTH_CHECK", value_parser = BoolishValueParser::new())]
    disable_health_check: bool,
    /// Log `HH:MM:SS message` lines (huey's simple format); same as `--log-format simple`.
    #[arg(short = 'S', long, env = "HUEY_SIMPLE", value_parser = BoolishValueParser::new(), conflicts_with = "log_format")]
    simple: bool,
    /// Seconds running tasks may take to finish after SIGINT/SIGTERM.
    #[arg(long, env = "HUEY_STOP_TIMEOUT", default_value = "30", value_parser = seconds)]
    stop_timeout: Duration,
    /// Write logs to this file (reopened on SIGUSR1).
    #[arg(short = 'l', long, env = "HUEY_LOGFILE")]
    logfile: Option<PathBuf>,
    /// More logging (debug).
    #[arg(short = 'v', long, env = "HUEY_VERBOSE", value_parser = BoolishValueParser::new(), conflicts_with = "quiet")]
    verbose: bool,
    /// Less logging: warnings and errors only (no line per task).
    #[arg(short = 'q', long, env = "HUEY_QUIET", value_parser = BoolishValueParser::new())]
    quiet: bool,
    /// Log lines as text or as JSON objects, one a line (for log shippers).
    #[arg(long, env = "HUEY_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: crate::logging::LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9808).
    #[arg(long, env = "HUEY_METRICS_BIND", value_name = "ADDR")]
    metrics_bind: Option<std::net::SocketAddr>,
    /// Write no heartbeat record and no per-minute counters to the storage (the consumer
    /// is then missing from `consumers`).
    #[arg(long, env = "HUEY_NO_HEARTBEAT", value_parser = BoolishValueParser::new())]
    no_heartbeat: bool,
    /// Run `huey.command` tasks (programs named in messages). Anyone who can write to the
    /// queue can then run programs as this consumer's user.
    #[arg(long, env = "HUEY_ALLOW_COMMANDS", value_parser = BoolishValueParser::new())]
    allow_commands: bool,
    /// Write the pid here and hold a lock on it while running; refuse to start while another
    /// process holds it (a file left by a dead process is taken over).
    #[arg(long, env = "HUEY_PIDFILE")]
    pidfile: Option<PathBuf>,
    /// Read flags from this TOML file, one key per long flag (`workers = 4`, `kind =
    /// "process"`, `queue = ["high", "default"]`, `no-periodic = true`); flags given and
    /// HUEY_* variables win over it.
    #[arg(long, env = "HUEY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// huey's polling flags (-d, -m, -b): accepted for compatibility, ignored (dequeue blocks).
    #[arg(short = 'd', long = "delay", hide = true)]
    _delay: Option<f64>,
    #[arg(short = 'm', long = "max-delay", hide = true)]
    _max_delay: Option<f64>,
    #[arg(short = 'b', long = "backoff", hide = true)]
    _backoff: Option<f64>,
}

/// The most workers of a kind other than async.
const MAX_WORKERS: u32 = 1024;
/// The most attempts an async worker runs at once.
const MAX_ASYNC: i64 = 100_000;

/// `-k` values: huey's `greenlet` runs as `async`.
fn worker_kind(s: &str) -> std::result::Result<WorkerKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "thread" => Ok(WorkerKind::Thread),
        "process" => Ok(WorkerKind::Process),
        "async" | "greenlet" => Ok(WorkerKind::Async),
        _ => Err(format!(
            "{s:?}: expected thread, process, async (or greenlet)"
        )),
    }
}

fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite() && v < 1e9) {
        return Err(format!("{s} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// [`seconds`], or 0 (for "never").
fn seconds_or_zero(s: &str) -> std::result::Result<Duration, String> {
    if s.parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    seconds(s).map_err(|e| format!("{e} (or 0)"))
}

impl ConsumerArgs {
    fn config(&self) -> Result<Config> {
        if self.kind != WorkerKind::Async && self.workers > MAX_WORKERS {
            return Err(Error::Config(format!(
                "--workers {} is over {MAX_WORKERS} (only async workers run more)",
                self.workers
            )));
        }
        if self.queues.iter().any(|q| q.trim().is_empty()) {
            return Err(Error::Config(format!(
                "--queue {:?}: a queue name is empty (a stray comma in -Q or HUEY_QUEUE?)",
                self.queues.join(",")
            )));
        }
        if self.kind != WorkerKind::Process && self.concurrency > 1 {
            return Err(Error::Config(
                "--concurrency is for process workers (-k process); -k async runs --workers attempts at once".into(),
            ));
        }
        Ok(Config {
            workers: self.workers as usize,
            kind: self.kind,
            concurrency: self.concurrency as usize,
            queues: self.queues.clone(),
            periodic: !self.no_periodic,
            scheduler_interval: self.scheduler_interval,
            health_check_interval: self.health_check_interval,
            max_tasks: self.max_tasks,
            max_memory_kib: self.max_memory.map(|mb| mb * 1024),
            lease: self.lease,
            max_deliveries: self.max_deliveries,
            flush_locks: self.flush_locks || !self.extra_locks.is_empty(),
            stop_deadline: self.stop_timeout,
            log_tasks: !self.quiet,
            metrics_bind: self.metrics_bind,
            heartbeat: !self.no_heartbeat,
            worker_stall_timeout: Some(self.worker_stall_timeout).filter(|t| !t.is_zero()),
            ..Config::default()
        })
    }

    fn log_level(&self) -> &'static str {
        match (self.verbose, self.quiet) {
            (true, _) => "debug",
            (_, true) => "warn",
            _ => "info",
        }
    }
}

/// Run the consumer until it is stopped. `open` opens the storage and registers the tasks.
pub(super) fn run(c: &ConsumerArgs, open: impl FnOnce() -> Result<Huey>) -> Result<ExitCode> {
    let format = if c.simple {
        crate::logging::LogFormat::Simple
    } else {
        c.log_format
    };
    crate::logging::init_logging(c.logfile.clone(), c.log_level(), format)?;
    if c._delay.is_some() || c._max_delay.is_some() || c._backoff.is_some() {
        tracing::warn!(
            "-d/-m/-b are ignored: dequeue blocks in storage, there is no polling to tune"
        );
    }
    if c.allow_commands {
        // Before any worker starts: process workers inherit it.
        crate::command::allow();
        tracing::warn!("--allow-commands: anyone who can write to the queue can run programs here");
    }
    if c.disable_health_check {
        tracing::info!("-C is ignored: dead workers are always replaced");
    }
    // Flags first: a bad one is refused before the storage is opened (or created).
    let cfg = c.config()?;
    let app = open()?;
    if cfg.kind == WorkerKind::Process && app.storage_url().is_some_and(|u| u.backend() == "memory")
    {
        tracing::warn!("memory storage is private to the supervisor: tasks enqueued by task code in process workers go nowhere");
    }
    if cfg.kind != WorkerKind::Process && cfg.max_memory_kib.is_some() {
        tracing::warn!(
            "--max-memory applies to process workers only: threads and async workers share the supervisor's memory"
        );
    }
    let supervisor = Supervisor::new(app, cfg)?;
    // Written once the storage is open, the flags are valid and the signal handlers are in
    // place, so an init script that waits for it knows the consumer really started (and may
    // stop it gracefully at once).
    let _pid = match &c.pidfile {
        Some(p) => Some(super::pidfile::Pidfile::create(p)?),
        None => None,
    };
    let (stopped, _) = supervisor.run()?;
    Ok(match stopped {
        Stopped::Graceful | Stopped::Interrupted => ExitCode::SUCCESS,
    })
}
