//! The command line shared by `hueyd` and every per-app binary: the consumer (no subcommand),
//! the admin subcommands, and the hidden worker mode that process workers run in.
//!
//! Raw flags are parsed by clap, then turned into a validated [`Config`] in a second step; the
//! entry point returns an exit code and reports errors only at the edge: 0 success, 1 a
//! failure at run time, 2 bad input (flags, URLs, arguments), 3 a result not ready.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use parking_lot::Mutex;

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::supervisor::{Config, Stopped, Supervisor, WorkerKind};

/// Exit status for bad input.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run the task consumer (default) or administer the queue"
)]
struct Cli {
    /// Storage URL: sqlite:PATH, redis://host:port/db, memory:
    #[arg(
        long,
        env = "HUEY_STORAGE",
        default_value = crate::storage::DEFAULT_URL,
        global = true
    )]
    storage: String,

    #[command(flatten)]
    consumer: ConsumerArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
struct ConsumerArgs {
    /// Number of workers.
    #[arg(short = 'w', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Worker kind: thread, or process for CPU-bound work.
    #[arg(short = 'k', long, value_enum, default_value = "thread")]
    kind: WorkerKind,
    /// Queues to serve, in order (comma-separated).
    #[arg(
        short = 'Q',
        long = "queue",
        value_delimiter = ',',
        default_value = "default"
    )]
    queues: Vec<String>,
    /// Do not enqueue periodic tasks from this consumer.
    #[arg(short = 'n', long)]
    no_periodic: bool,
    /// Seconds between moves of due scheduled tasks to the queue.
    #[arg(short = 's', long, default_value = "1", value_parser = seconds)]
    scheduler_interval: Duration,
    /// Seconds between checks for running tasks revoked since they started (process workers
    /// running one are killed). Dead workers and timeouts are handled at once regardless.
    #[arg(short = 'c', long, default_value = "1", value_parser = seconds)]
    health_check_interval: Duration,
    /// Replace a worker after it has run this many tasks.
    #[arg(short = 'M', long, value_parser = clap::value_parser!(u32).range(1..))]
    max_tasks: Option<u32>,
    /// Replace a process worker whose resident memory exceeds this many MB after a task.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_memory: Option<u64>,
    /// Seconds a dequeued task stays reserved for this consumer without renewal.
    #[arg(long, default_value = "30", value_parser = seconds)]
    lease: Duration,
    /// Deliveries without an acknowledgement before a message is dead-lettered.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: u32,
    /// Clear all locks at start.
    #[arg(short = 'f', long)]
    flush_locks: bool,
    /// Seconds running tasks may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value = "30", value_parser = seconds)]
    stop_timeout: Duration,
    /// Write logs to this file (reopened on SIGUSR1).
    #[arg(short = 'l', long)]
    logfile: Option<PathBuf>,
    /// More logging (debug).
    #[arg(short = 'v', long, conflicts_with = "quiet")]
    verbose: bool,
    /// Less logging: warnings and errors only (no line per task).
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the pid here; refuse to start if a live process holds it.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// huey's polling flags (-d, -m, -b): accepted for compatibility, ignored (dequeue blocks).
    #[arg(short = 'd', long = "delay", hide = true)]
    _delay: Option<f64>,
    #[arg(short = 'm', long = "max-delay", hide = true)]
    _max_delay: Option<f64>,
    #[arg(short = 'b', long = "backoff", hide = true)]
    _backoff: Option<f64>,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a short demonstration on the embedded storage.
    Demo(crate::demo::DemoArgs),
    #[command(flatten)]
    Admin(crate::admin::AdminCommand),
}

impl ConsumerArgs {
    fn config(&self) -> Config {
        Config {
            workers: self.workers as usize,
            kind: self.kind,
            queues: self.queues.clone(),
            periodic: !self.no_periodic,
            scheduler_interval: self.scheduler_interval,
            health_check_interval: self.health_check_interval,
            max_tasks: self.max_tasks,
            max_memory_kib: self.max_memory.map(|mb| mb * 1024),
            lease: self.lease,
            max_deliveries: self.max_deliveries,
            flush_locks: self.flush_locks,
            stop_deadline: self.stop_timeout,
            log_tasks: !self.quiet,
            ..Config::default()
        }
    }
}

/// The entry point of `hueyd` and of every per-app binary.
///
/// `register` registers the app's tasks; it runs in every process of the app (the consumer,
/// each process worker, each admin command), so task names resolve the same everywhere.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     huey::cli::main("my-app", |app| {
///         app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
///         Ok(())
///     })
/// }
/// ```
pub fn main(name: &str, register: impl Fn(&Huey) -> Result<()>) -> ExitCode {
    if crate::worker::process::is_worker() {
        return worker(name, &register);
    }
    let (cli, storage_chosen) = match parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match run(name, cli, storage_chosen, &register) {
        Ok(code) => code,
        Err(e) => {
            let code = match &e {
                Error::StorageUrl { .. }
                | Error::Config(_)
                | Error::UnknownTask(_)
                | Error::BadArguments { .. } => EXIT_USAGE,
                _ => 1,
            };
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(code)
        }
    }
}

/// Parse the command line. Consumer flags and subcommands exclude each other, except the global
/// `--storage`, which may come before or after the subcommand.
/// Parse the command line; also says whether `--storage` (or `HUEY_STORAGE`) was given, since
/// the demo uses a temporary database otherwise.
fn parse() -> std::result::Result<(Cli, bool), clap::Error> {
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some((sub, _)) = matches.subcommand() {
        if let Some(flag) = consumer_flag_given(&cmd, &matches) {
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} runs the consumer; it cannot be used with the subcommand '{sub}'"),
            ));
        }
    }
    let storage_chosen = matches.value_source("storage") != Some(ValueSource::DefaultValue);
    Ok((cli, storage_chosen))
}

/// The first consumer flag given on the command line, as the user would write it.
fn consumer_flag_given(cmd: &clap::Command, m: &ArgMatches) -> Option<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "help" && a.get_id() != "version")
        .find(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| match (a.get_long(), a.get_short()) {
            (Some(l), _) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => a.get_id().to_string(),
        })
}

fn open_app(name: &str, url: &str, register: &dyn Fn(&Huey) -> Result<()>) -> Result<Huey> {
    let app = Huey::open(name, url)?;
    register(&app)?;
    Ok(app)
}

fn run(
    name: &str,
    cli: Cli,
    storage_chosen: bool,
    register: &dyn Fn(&Huey) -> Result<()>,
) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Demo(args)) => {
            // The demo prints its own lines; logs only when asked for with HUEY_LOG.
            init_logging(None, "off")?;
            let url = storage_chosen.then_some(cli.storage);
            crate::demo::run(name, url, args, register)
        }
        Some(Command::Admin(cmd)) => {
            let app = open_app(name, &cli.storage, register)?;
            crate::admin::run(&app, cmd)
        }
        None => {
            let c = &cli.consumer;
            let level = match (c.verbose, c.quiet) {
                (true, _) => "debug",
                (_, true) => "warn",
                _ => "info",
            };
            init_logging(c.logfile.clone(), level)?;
            if c._delay.is_some() || c._max_delay.is_some() || c._backoff.is_some() {
                tracing::warn!(
                    "-d/-m/-b are ignored: dequeue blocks in storage, there is no polling to tune"
                );
            }
            let app = open_app(name, &cli.storage, register)?;
            // Written once the storage is open and the flags are valid, so an init script
            // that waits for it knows the consumer really started.
            let _pid = match &c.pidfile {
                Some(p) => Some(Pidfile::create(p)?),
                None => None,
            };
            let cfg = c.config();
            if cfg.kind == WorkerKind::Process
                && app.storage_url().is_some_and(|u| u.backend() == "memory")
            {
                tracing::warn!("memory storage is private to the supervisor: tasks enqueued by task code in process workers go nowhere");
            }
            if cfg.kind == WorkerKind::Thread && cfg.max_memory_kib.is_some() {
                tracing::warn!("--max-memory applies to process workers only: threads share the supervisor's memory");
            }
            let (stopped, _) = Supervisor::new(app, cfg)?.run()?;
            Ok(match stopped {
                Stopped::Graceful | Stopped::Interrupted => ExitCode::SUCCESS,
            })
        }
    }
}

fn worker(name: &str, register: &dyn Fn(&Huey) -> Result<()>) -> ExitCode {
    ExitCode::from(crate::worker::process::worker_main(|url| {
        // The supervisor checked the storage; here it is opened only if task code uses it.
        let app = Huey::open_lazy(name, url);
        register(&app)?;
        Ok(app)
    }) as u8)
}

// ----- logging ------------------------------------------------------------------------------

/// Where log lines go: stderr, or a file that SIGUSR1 reopens (for logrotate).
#[derive(Clone)]
struct LogTarget {
    file: Option<(PathBuf, Arc<Mutex<std::fs::File>>)>,
}

static LOG: OnceLock<LogTarget> = OnceLock::new();

struct LogWriter(Option<Arc<Mutex<std::fs::File>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(f) => f.lock().write(buf),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(f) => f.lock().flush(),
            None => std::io::stderr().flush(),
        }
    }
}

fn open_log(path: &PathBuf) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Config(format!("cannot open log file {}: {e}", path.display())))
}

/// Send log lines to stderr or a file. Idempotent: the first call wins.
/// `level` is a default filter ("info", "warn", "off"...); `HUEY_LOG` overrides it.
pub fn init_logging(logfile: Option<PathBuf>, level: &str) -> Result<()> {
    let file = match logfile {
        Some(p) => {
            let f = open_log(&p)?;
            Some((p, Arc::new(Mutex::new(f))))
        }
        None => None,
    };
    let target = LOG.get_or_init(|| LogTarget { file });
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let t = target.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(move || LogWriter(t.file.as_ref().map(|(_, f)| f.clone())))
        .try_init();
    Ok(())
}

/// Reopen the log file (after logrotate moved it).
pub fn reopen_log() {
    if let Some(LogTarget {
        file: Some((path, f)),
    }) = LOG.get()
    {
        match open_log(path) {
            Ok(new) => {
                *f.lock() = new;
                tracing::info!("log file reopened");
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
}

// ----- pidfile ------------------------------------------------------------------------------

/// A pidfile removed on drop.
struct Pidfile(PathBuf);

impl Pidfile {
    fn create(path: &PathBuf) -> Result<Pidfile> {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
                if alive && pid != std::process::id() as i32 {
                    return Err(Error::Config(format!(
                        "{} holds pid {pid}, which is running: is another consumer running?",
                        path.display()
                    )));
                }
            }
            tracing::info!("removing stale pidfile {}", path.display());
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| Error::Config(format!("cannot write pidfile {}: {e}", path.display())))?;
        Ok(Pidfile(path.clone()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
