//! Storage in one SQLite file, in WAL mode: safe for several processes on one host at once.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction. Blocking calls ([`Storage::dequeue`] and
//! [`Storage::wait_result`]) wake at once when this handle writes, poll the cheap
//! `PRAGMA data_version` (which changes only when another connection commits) every
//! millisecond or so to notice writes from other processes, and re-check every 50 ms for leases
//! that expire.

use std::path::Path;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use rusqlite::{
    params, Connection, DatabaseName, ErrorCode, OpenFlags, OptionalExtension, Transaction,
    TransactionBehavior,
};

use super::*;
use crate::clock::{ms, now_ms};

/// The schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 1;

/// How often a blocked call looks for commits by other connections.
const POLL: Duration = Duration::from_millis(1);

/// How often a blocked call re-runs its query regardless (leases expire without a commit).
const RECHECK: Duration = Duration::from_millis(50);

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
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Off => "OFF",
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Options for opening a SQLite storage.
#[derive(Debug, Clone)]
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

/// Storage in one SQLite file.
pub struct SqliteStorage {
    path: String,
    conn: Mutex<Connection>,
    /// Bumped after every write through this handle, to wake blocked calls at once.
    generation: Mutex<u64>,
    changed: Condvar,
}

fn storage_err(message: String) -> Error {
    Error::Storage {
        backend: "sqlite",
        message,
    }
}

/// A database error as a sentence naming the file.
fn describe(path: &str, e: &rusqlite::Error) -> String {
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

/// Milliseconds as stored (SQLite integers are signed).
fn sql_ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| sql_ms(now_ms().saturating_add(ms(t))))
}

fn parse_lease(l: &Lease) -> Option<(i64, i64)> {
    let (a, b) = l.0.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// When a wait of `wait` from now ends (waits too long to represent end in a century).
fn deadline(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn new_token() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64
}

fn dead_error(deliveries: i64) -> String {
    format!(
        "delivered {deliveries} times without being acknowledged (its worker or consumer was lost each time)"
    )
}

fn limit(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

impl SqliteStorage {
    /// Open or create the database at `path`.
    ///
    /// Fails with a clear error when the file is not a SQLite database, when it (or its
    /// directory) is not writable, or when its directory does not exist.
    pub fn open(path: &str, opts: SqliteOptions) -> Result<SqliteStorage> {
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
        conn.busy_timeout(opts.busy_timeout).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(64);
        if conn.is_readonly(DatabaseName::Main).map_err(err)? {
            return Err(storage_err(format!(
                "{path} is read-only: the database file and its directory must be writable"
            )));
        }
        // Two connections setting up a fresh file at once may see SQLITE_BUSY without the busy
        // handler being called (switching the journal mode): retry within the busy timeout.
        let started = Instant::now();
        let setup = loop {
            match Self::setup(&mut conn, opts.synchronous) {
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
        Ok(SqliteStorage {
            path: path.to_string(),
            conn: Mutex::new(conn),
            generation: Mutex::new(0),
            changed: Condvar::new(),
        })
    }

    /// Switch to WAL, set the sync level and create the schema in a write transaction (which
    /// also proves the file is writable).
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

    /// The database file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        storage_err(describe(&self.path, &e))
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction and commit it.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let v = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// Run `f` in one read transaction (a consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| self.err(e))?;
        let v = f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(v)
    }

    /// Wake calls blocked on this handle.
    fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
        conn.prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))
    }

    /// Block until this handle writes, another connection commits, the re-check interval
    /// passes or `deadline` comes. Never holds the connection while sleeping.
    fn wait_change(&self, generation: u64, data_version: i64, deadline: Instant) -> Result<()> {
        let until = deadline.min(Instant::now() + RECHECK);
        loop {
            {
                let mut g = self.generation.lock();
                if *g != generation {
                    return Ok(());
                }
                let now = Instant::now();
                if now >= until {
                    return Ok(());
                }
                self.changed.wait_for(&mut g, (until - now).min(POLL));
                if *g != generation {
                    return Ok(());
                }
            }
            let dv = Self::data_version(&self.conn.lock()).map_err(|e| self.err(e))?;
            if dv != data_version {
                return Ok(());
            }
        }
    }

    /// One attempt at leasing; also returns the data version seen before it.
    fn try_dequeue(&self, req: &DequeueRequest) -> Result<(Vec<Delivery>, i64)> {
        let mut conn = self.conn.lock();
        let now = sql_ms(now_ms());
        let dv = Self::data_version(&conn).map_err(|e| self.err(e))?;
        // A cheap read first, so idle consumers never take the write lock.
        let any = (|| -> rusqlite::Result<bool> {
            let mut st = conn.prepare_cached(
                "SELECT 1 FROM queue WHERE queue = ?1
                 AND (lease_until IS NULL OR lease_until <= ?2) LIMIT 1",
            )?;
            for q in &req.queues {
                if st.exists(params![q, now])? {
                    return Ok(true);
                }
            }
            Ok(false)
        })()
        .map_err(|e| self.err(e))?;
        if !any {
            return Ok((Vec::new(), dv));
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let out = Self::lease_ready(&tx, req).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((out, dv))
    }

    fn lease_ready(tx: &Transaction<'_>, req: &DequeueRequest) -> rusqlite::Result<Vec<Delivery>> {
        let now_u = now_ms();
        let now = sql_ms(now_u);
        let until = sql_ms(now_u.saturating_add(ms(req.lease)));
        let mut out = Vec::new();
        let mut select = tx.prepare_cached(
            "SELECT seq, payload, deliveries FROM queue WHERE queue = ?1
             AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY priority DESC, seq LIMIT ?3",
        )?;
        let mut bury = tx.prepare_cached(
            "INSERT INTO dead(id, queue, payload, error, at)
             SELECT id, queue, payload, ?2, ?3 FROM queue WHERE seq = ?1",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")?;
        let mut lease = tx.prepare_cached(
            "UPDATE queue SET lease_owner = ?2, lease_token = ?3, lease_until = ?4,
             deliveries = deliveries + 1 WHERE seq = ?1",
        )?;
        for q in &req.queues {
            while out.len() < req.max {
                let want = req.max - out.len();
                let rows = select
                    .query_map(params![q, now, limit(want)], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, Vec<u8>>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let got = rows.len();
                for (seq, payload, deliveries) in rows {
                    if deliveries >= i64::from(req.max_deliveries) {
                        bury.execute(params![seq, dead_error(deliveries), now])?;
                        delete.execute(params![seq])?;
                        continue;
                    }
                    let token = new_token();
                    lease.execute(params![seq, req.consumer, token, until])?;
                    out.push(Delivery {
                        lease: Lease(format!("{seq}:{token}")),
                        queue: q.clone(),
                        payload,
                        deliveries: u32::try_from(deliveries + 1).unwrap_or(u32::MAX),
                    });
                }
                if got < want {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Read a live result, deleting it when `take`.
    fn read_result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        if !take {
            let conn = self.conn.lock();
            return conn
                .prepare_cached(
                    "SELECT value FROM results WHERE id = ?1
                     AND (expires IS NULL OR expires > ?2)",
                )
                .and_then(|mut st| st.query_row(params![id, now], |r| r.get(0)).optional())
                .map_err(|e| self.err(e));
        }
        self.write(|tx| {
            let row: Option<(Vec<u8>, Option<i64>)> = tx
                .prepare_cached("DELETE FROM results WHERE id = ?1 RETURNING value, expires")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.and_then(|(v, exp)| exp.is_none_or(|e| e > now).then_some(v)))
        })
    }
}

impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = sql_ms(now_ms());
        self.write(|tx| {
            if !batch.ack.is_empty() {
                let mut st =
                    tx.prepare_cached("DELETE FROM queue WHERE seq = ?1 AND lease_token = ?2")?;
                for (seq, token) in batch.ack.iter().filter_map(parse_lease) {
                    st.execute(params![seq, token])?;
                }
            }
            if !batch.enqueue.is_empty() {
                let mut st = tx.prepare_cached(
                    "INSERT INTO queue(id, queue, priority, payload) VALUES(?1, ?2, ?3, ?4)",
                )?;
                for r in &batch.enqueue {
                    st.execute(params![r.id, r.queue, r.priority, r.payload])?;
                }
            }
            if !batch.schedule.is_empty() {
                let mut st = tx.prepare_cached(
                    "INSERT INTO schedule(id, queue, priority, eta, payload)
                     VALUES(?1, ?2, ?3, ?4, ?5)",
                )?;
                for s in &batch.schedule {
                    let r = &s.ready;
                    st.execute(params![
                        r.id,
                        r.queue,
                        r.priority,
                        sql_ms(s.eta_ms),
                        r.payload
                    ])?;
                }
            }
            if !batch.results.is_empty() {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO results(id, value, expires) VALUES(?1, ?2, ?3)",
                )?;
                for r in &batch.results {
                    st.execute(params![r.id, r.value, expiry(r.ttl)])?;
                }
            }
            if !batch.dead.is_empty() {
                let mut st = tx.prepare_cached(
                    "INSERT INTO dead(id, queue, payload, error, at) VALUES(?1, ?2, ?3, ?4, ?5)",
                )?;
                for d in &batch.dead {
                    st.execute(params![d.id, d.queue, d.payload, d.error, now])?;
                }
            }
            Ok(())
        })?;
        self.notify();
        Ok(())
    }

    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = deadline(req.wait);
        loop {
            let generation = self.generation();
            let (out, dv) = self.try_dequeue(req)?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            self.wait_change(generation, dv, deadline)?;
        }
    }

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let until = sql_ms(now_ms().saturating_add(ms(lease)));
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE queue SET lease_until = ?3 WHERE seq = ?1 AND lease_token = ?2",
            )?;
            for (seq, token) in leases.iter().filter_map(parse_lease) {
                st.execute(params![seq, token, until])?;
            }
            Ok(())
        })
    }

    fn release(&self, leases: &[Lease]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE queue SET lease_owner = NULL, lease_token = NULL, lease_until = NULL
                 WHERE seq = ?1 AND lease_token = ?2",
            )?;
            for (seq, token) in leases.iter().filter_map(parse_lease) {
                st.execute(params![seq, token])?;
            }
            Ok(())
        })?;
        self.notify();
        Ok(())
    }

    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let now = sql_ms(now_ms);
        let n = self.write(|tx| {
            // Inserted in eta order, so the queue's sequence keeps FIFO by eta.
            let n = tx
                .prepare_cached(
                    "INSERT INTO queue(id, queue, priority, payload)
                     SELECT id, queue, priority, payload FROM schedule
                     WHERE eta <= ?1 ORDER BY eta, seq LIMIT ?2",
                )?
                .execute(params![now, limit(max)])?;
            tx.prepare_cached(
                "DELETE FROM schedule WHERE seq IN
                 (SELECT seq FROM schedule WHERE eta <= ?1 ORDER BY eta, seq LIMIT ?2)",
            )?
            .execute(params![now, limit(max)])?;
            Ok(n)
        })?;
        if n > 0 {
            self.notify();
        }
        Ok(n)
    }

    fn next_eta(&self) -> Result<Option<u64>> {
        let conn = self.conn.lock();
        conn.prepare_cached("SELECT MIN(eta) FROM schedule")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, Option<i64>>(0)))
            .map(|v| v.map(|e| e.max(0) as u64))
            .map_err(|e| self.err(e))
    }

    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>> {
        self.read_result(id, take)
    }

    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = deadline(timeout);
        loop {
            let generation = self.generation();
            let dv = Self::data_version(&self.conn.lock()).map_err(|e| self.err(e))?;
            // Look first, so a missing result never takes the write lock.
            if let Some(v) = self.read_result(id, false)? {
                if !take {
                    return Ok(Some(v));
                }
                if let Some(v) = self.read_result(id, true)? {
                    return Ok(Some(v));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.wait_change(generation, dv, deadline)?;
        }
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM results WHERE id = ?1")?
                .execute(params![id])
                .map(|n| n > 0)
        })
    }

    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        let conn = self.conn.lock();
        conn.prepare_cached(
            "SELECT value FROM kv WHERE ns = ?1 AND key = ?2
             AND (expires IS NULL OR expires > ?3)",
        )
        .and_then(|mut st| {
            st.query_row(params![ns.as_str(), key, now], |r| r.get(0))
                .optional()
        })
        .map_err(|e| self.err(e))
    }

    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO kv(ns, key, value, expires) VALUES(?1, ?2, ?3, ?4)",
            )?
            .execute(params![ns.as_str(), key, value, expiry(ttl)])?;
            Ok(())
        })
    }

    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO kv(ns, key, value, expires) VALUES(?1, ?2, ?3, ?4)
                 ON CONFLICT(ns, key) DO UPDATE
                 SET value = excluded.value, expires = excluded.expires
                 WHERE kv.expires IS NOT NULL AND kv.expires <= ?5",
            )?
            .execute(params![ns.as_str(), key, value, expiry(ttl), now])
            .map(|n| n > 0)
        })
    }

    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        self.write(|tx| {
            let row: Option<(Vec<u8>, Option<i64>)> = tx
                .prepare_cached(
                    "DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING value, expires",
                )?
                .query_row(params![ns.as_str(), key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.and_then(|(v, exp)| exp.is_none_or(|e| e > now).then_some(v)))
        })
    }

    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND value = ?3
                 AND (expires IS NULL OR expires > ?4)",
            )?
            .execute(params![ns.as_str(), key, value, now])
            .map(|n| n > 0)
        })
    }

    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>> {
        let now = sql_ms(now_ms());
        let conn = self.conn.lock();
        conn.prepare_cached(
            "SELECT key, value FROM kv WHERE ns = ?1
             AND (expires IS NULL OR expires > ?2) ORDER BY key",
        )
        .and_then(|mut st| {
            st.query_map(params![ns.as_str(), now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(|e| self.err(e))
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO counters(key, value) VALUES(?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = value + excluded.value
                 RETURNING value",
            )?
            .query_row(params![key, by], |r| r.get(0))
        })
    }

    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        // Kept in the kv table under a namespace of its own, so expiry and flushing come free.
        let now = sql_ms(now_ms());
        self.write(|tx| {
            tx.prepare_cached(
                "DELETE FROM kv WHERE ns = 'counter' AND key = ?1 AND expires <= ?2",
            )?
            .execute(params![key, now])?;
            tx.prepare_cached(
                "INSERT INTO kv(ns, key, value, expires) VALUES('counter', ?1, ?2, ?3)
                 ON CONFLICT(ns, key) DO UPDATE SET value = CAST(kv.value AS INTEGER) + ?2
                 RETURNING CAST(value AS INTEGER)",
            )?
            .query_row(params![key, by, expiry(Some(ttl))], |r| r.get(0))
        })
    }

    fn counts(&self) -> Result<Counts> {
        let now = sql_ms(now_ms());
        self.read(|tx| {
            let count = |sql: &str, now: Option<i64>| -> rusqlite::Result<u64> {
                let mut st = tx.prepare_cached(sql)?;
                let n: i64 = match now {
                    Some(now) => st.query_row(params![now], |r| r.get(0))?,
                    None => st.query_row([], |r| r.get(0))?,
                };
                Ok(n.max(0) as u64)
            };
            Ok(Counts {
                ready: count(
                    "SELECT COUNT(*) FROM queue WHERE lease_until IS NULL OR lease_until <= ?1",
                    Some(now),
                )?,
                in_flight: count(
                    "SELECT COUNT(*) FROM queue WHERE lease_until > ?1",
                    Some(now),
                )?,
                scheduled: count("SELECT COUNT(*) FROM schedule", None)?,
                results: count(
                    "SELECT COUNT(*) FROM results WHERE expires IS NULL OR expires > ?1",
                    Some(now),
                )?,
                dead: count("SELECT COUNT(*) FROM dead", None)?,
            })
        })
    }

    fn pending(&self, limit_n: usize) -> Result<Vec<Vec<u8>>> {
        let now = sql_ms(now_ms());
        let conn = self.conn.lock();
        conn.prepare_cached(
            "SELECT payload FROM queue WHERE lease_until IS NULL OR lease_until <= ?1
             ORDER BY priority DESC, seq LIMIT ?2",
        )
        .and_then(|mut st| {
            st.query_map(params![now, limit(limit_n)], |r| r.get(0))?
                .collect()
        })
        .map_err(|e| self.err(e))
    }

    fn scheduled(&self, limit_n: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let conn = self.conn.lock();
        conn.prepare_cached("SELECT eta, payload FROM schedule ORDER BY eta, seq LIMIT ?1")
            .and_then(|mut st| {
                st.query_map(params![limit(limit_n)], |r| {
                    Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?))
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    fn dead(&self, limit_n: usize) -> Result<Vec<DeadLetter>> {
        let conn = self.conn.lock();
        conn.prepare_cached(
            "SELECT seq, id, queue, payload, error, at FROM dead ORDER BY seq LIMIT ?1",
        )
        .and_then(|mut st| {
            st.query_map(params![limit(limit_n)], |r| {
                Ok(DeadLetter {
                    key: r.get::<_, i64>(0)?.to_string(),
                    id: r.get(1)?,
                    queue: r.get(2)?,
                    payload: r.get(3)?,
                    error: r.get(4)?,
                    at_ms: r.get::<_, i64>(5)?.max(0) as u64,
                })
            })?
            .collect()
        })
        .map_err(|e| self.err(e))
    }

    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize> {
        let n = self.write(|tx| {
            let seqs: Vec<i64> = match keys {
                None => tx
                    .prepare_cached("SELECT seq FROM dead ORDER BY seq")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                Some(keys) => keys.iter().filter_map(|k| k.parse().ok()).collect(),
            };
            let mut select =
                tx.prepare_cached("SELECT id, queue, payload FROM dead WHERE seq = ?1")?;
            let mut delete = tx.prepare_cached("DELETE FROM dead WHERE seq = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO queue(id, queue, priority, payload) VALUES(?1, ?2, ?3, ?4)",
            )?;
            let mut n = 0;
            for seq in seqs {
                let row: Option<(String, String, Vec<u8>)> = select
                    .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let Some((id, queue, payload)) = row else {
                    continue;
                };
                let priority = crate::message::Message::decode(&payload)
                    .map(|m| m.priority())
                    .unwrap_or(0);
                insert.execute(params![id, queue, priority, payload])?;
                delete.execute(params![seq])?;
                n += 1;
            }
            Ok(n)
        })?;
        if n > 0 {
            self.notify();
        }
        Ok(n)
    }

    fn flush(&self, what: Flush) -> Result<()> {
        self.write(|tx| {
            if what.queue {
                tx.execute("DELETE FROM queue", [])?;
            }
            if what.schedule {
                tx.execute("DELETE FROM schedule", [])?;
            }
            if what.results {
                tx.execute("DELETE FROM results", [])?;
            }
            if what.locks {
                tx.execute("DELETE FROM kv WHERE ns = ?1", params![Ns::Locks.as_str()])?;
            }
            if what.kv {
                tx.execute("DELETE FROM kv WHERE ns <> ?1", params![Ns::Locks.as_str()])?;
                tx.execute("DELETE FROM counters", [])?;
            }
            if what.dead {
                tx.execute("DELETE FROM dead", [])?;
            }
            Ok(())
        })
    }
}
