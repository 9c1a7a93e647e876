//! Opening a SQLite file: the schema and its version, the connection settings, and database
//! errors as sentences naming the file.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior, MAIN_DB};

use crate::error::{Error, Result};

/// The schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token INTEGER,
    lease_until INTEGER
);
CREATE INDEX IF NOT EXISTS queue_order ON queue(queue, priority DESC, seq);
CREATE TABLE IF NOT EXISTS schedule(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    eta INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_eta ON schedule(eta, seq);
CREATE TABLE IF NOT EXISTS results(
    id TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires INTEGER
);
CREATE TABLE IF NOT EXISTS kv(
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires INTEGER,
    PRIMARY KEY(ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters(
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Expired rows are found through these by the purge (rows without expiry are left out).
-- Created by every open, so a file made by an older build gains them too.
CREATE INDEX IF NOT EXISTS results_expires ON results(expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// How hard SQLite syncs to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Never sync: fastest, but an OS crash or power loss may corrupt the database.
    Off,
    /// The default. In WAL mode the database never corrupts; a power loss may lose the last
    /// few commits (an application crash loses nothing).
    #[default]
    Normal,
    /// Sync every commit: each ack and enqueue survives power loss, at a cost in latency.
    Full,
}

impl Synchronous {
    pub(super) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Options for opening a SQLite storage.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteOptions {
    /// How hard to sync to disk ([`Synchronous::Normal`] by default).
    pub synchronous: Synchronous,
    /// How long to wait for another connection's write lock before failing (5 s by default).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// How setting up a freshly opened connection ended.
enum Setup {
    Done,
    /// The journal mode could not be set to WAL; it is this.
    NotWal(String),
    /// The file has this schema version, not ours.
    Version(String),
}

pub(super) fn storage_err(message: String) -> Error {
    Error::Storage {
        backend: "sqlite",
        message,
    }
}

/// A database error as a sentence naming the file.
pub(super) fn describe(path: &str, e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("{path} is not a SQLite database"),
        Some(ErrorCode::ReadOnly) => format!(
            "{path} is read-only: the database file and its directory must be writable ({e})"
        ),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => format!(
            "{path} stayed locked by another connection for longer than the busy timeout ({e})"
        ),
        Some(ErrorCode::CannotOpen) => {
            let detail = e.to_string().replace(&format!(": {path}"), "");
            format!(
                "cannot open {path}: {detail} (check that its directory exists and is writable)"
            )
        }
        Some(ErrorCode::PermissionDenied) => format!("{path}: permission denied ({e})"),
        Some(ErrorCode::DiskFull) => format!("{path}: the disk is full ({e})"),
        Some(ErrorCode::DatabaseCorrupt) => format!("{path} is corrupt ({e})"),
        Some(ErrorCode::SystemIoFailure) => format!("{path}: I/O error ({e})"),
        _ => format!("{path}: {e}"),
    }
}

/// Open or create the database at `path`, in WAL mode with the schema in place.
pub(super) fn connect(path: &str, opts: &SqliteOptions) -> Result<Connection> {
    if path.is_empty() {
        return Err(storage_err("the database path is empty".into()));
    }
    let p = Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(storage_err(format!(
                "cannot open {path}: the directory {} does not exist",
                dir.display()
            )));
        }
    }
    if p.is_dir() {
        return Err(storage_err(format!(
            "cannot open {path}: it is a directory, not a database file"
        )));
    }
    let err = |e: rusqlite::Error| storage_err(describe(path, &e));
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(p, flags).map_err(err)?;
    // SQLite's own busy handler sleeps longer the longer it has waited (up to 100 ms between
    // tries), so under steady contention a long waiter tries least often and can lose to
    // newer ones until its timeout. Retrying at a short, even pace keeps every waiter's chance
    // the same.
    let timeout = opts.busy_timeout;
    let mut since = Instant::now();
    conn.busy_handler(Some(move |count: i32| {
        if count == 0 {
            since = Instant::now();
        }
        if since.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
        true
    }))
    .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);
    if conn.is_readonly(MAIN_DB).map_err(err)? {
        return Err(storage_err(format!(
            "{path} is read-only: the database file and its directory must be writable"
        )));
    }
    // Two connections setting up a fresh file at once may see SQLITE_BUSY without the busy
    // handler being called (switching the journal mode): retry within the busy timeout.
    let started = Instant::now();
    let setup = loop {
        match setup(&mut conn, opts.synchronous) {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && started.elapsed() < opts.busy_timeout =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other.map_err(err)?,
        }
    };
    match setup {
        Setup::Done => {}
        Setup::NotWal(mode) => {
            return Err(storage_err(format!(
                "{path}: could not switch to WAL journal mode (it stays {mode:?}); \
                 is it on a file system without shared memory support?"
            )))
        }
        Setup::Version(version) => {
            return Err(storage_err(format!(
                "{path} has schema version {version}, but this build reads version \
                 {SCHEMA_VERSION}; use a matching huey build"
            )))
        }
    }
    Ok(conn)
}

/// Switch to WAL, set the sync level and create the schema in a write transaction (which also
/// proves the file is writable).
fn setup(conn: &mut Connection, sync: Synchronous) -> rusqlite::Result<Setup> {
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(Setup::NotWal(mode));
    }
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', ?1)",
        params![SCHEMA_VERSION.to_string()],
    )?;
    let version: String = tx.query_row(
        "SELECT value FROM meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    if version.parse::<i64>().ok() != Some(SCHEMA_VERSION) {
        return Ok(Setup::Version(version));
    }
    tx.commit()?;
    Ok(Setup::Done)
}
