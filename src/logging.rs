//! Where log lines go: stderr, or a file that SIGUSR1 reopens (for logrotate).
//!
//! The CLI sets logging up once; the supervisor reopens the file when asked. Both reach it
//! here, so the supervisor needs nothing from the CLI.

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
