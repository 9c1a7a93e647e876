//! Where log lines go: stderr, or a file that SIGUSR1 reopens (for logrotate), as text or as
//! JSON lines.
//!
//! The CLI sets logging up once; the supervisor reopens the file when asked. Both reach it
//! here, so the supervisor needs nothing from the CLI. Process workers get the same settings
//! through their environment ([`child_env`]) and set up the same logging in the child
//! ([`init_worker_logging`]), so task code's `tracing` lines reach the consumer's log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The log file, when there is one, shared by every writer the subscriber makes.
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum LogFormat {
    /// One line of text per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
    /// `HH:MM:SS message`, as huey's `-S/--simple`.
    Simple,
}

/// The clock of the simple format: UTC `HH:MM:SS`.
struct ShortTime;

impl tracing_subscriber::fmt::time::FormatTime for ShortTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", chrono::Utc::now().format("%H:%M:%S"))
    }
}

/// The settings process workers inherit (see [`child_env`]).
static CHILD: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();

const ENV_FILE: &str = "HUEY_LOG_FILE";
const ENV_LEVEL: &str = "HUEY_LOG_LEVEL";
const ENV_FORMAT: &str = "HUEY_LOG_FORMAT";

/// The environment a process worker needs to log as its consumer does.
pub fn child_env() -> Vec<(&'static str, String)> {
    CHILD.get().cloned().unwrap_or_default()
}

/// In a process worker: log as the consumer that started it asked ([`child_env`]); nothing
/// when it asked for nothing.
pub fn init_worker_logging() {
    let Ok(level) = std::env::var(ENV_LEVEL) else {
        return;
    };
    let file = std::env::var_os(ENV_FILE).map(PathBuf::from);
    let format = match std::env::var(ENV_FORMAT).as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("simple") => LogFormat::Simple,
        _ => LogFormat::Text,
    };
    if let Err(e) = init_logging(file, &level, format) {
        eprintln!("huey worker {}: {e}", std::process::id());
    }
}

/// Send log lines to stderr or a file. Idempotent: the first call wins.
/// `level` is a default filter ("info", "warn", "off"...); `HUEY_LOG` overrides it.
pub fn init_logging(logfile: Option<PathBuf>, level: &str, format: LogFormat) -> Result<()> {
    let mut env = vec![(ENV_LEVEL, level.to_string())];
    if let Some(p) = &logfile {
        env.push((ENV_FILE, p.display().to_string()));
    }
    match format {
        LogFormat::Json => env.push((ENV_FORMAT, "json".to_string())),
        LogFormat::Simple => env.push((ENV_FORMAT, "simple".to_string())),
        LogFormat::Text => {}
    }
    let _ = CHILD.set(env);
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
    let writer = move || LogWriter(t.file.as_ref().map(|(_, f)| f.clone()));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => fmt.try_init(),
        LogFormat::Json => fmt.json().flatten_event(true).try_init(),
        LogFormat::Simple => fmt
            .with_timer(ShortTime)
            .with_level(false)
            .compact()
            .try_init(),
    };
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
