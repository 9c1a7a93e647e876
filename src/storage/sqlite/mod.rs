//! Storage in one SQLite file, in WAL mode: safe for several processes on one host at once.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction. Blocking calls ([`Queue::dequeue`] and
//! [`Results::wait_result`]) wake at once when this handle writes, poll the cheap
//! `PRAGMA data_version` (which changes only when another connection commits) every
//! millisecond or so to notice writes from other processes, and re-check every 50 ms for leases
//! that expire.
//!
//! Parts: opening a file and its schema (`schema.rs`), key-value entries, counters and chord
//! bookkeeping (`kv.rs`), inspection (`inspect.rs`); the queue, schedule and results here.

mod inspect;
mod kv;
mod schema;
mod watch;

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use self::schema::{describe, storage_err};
pub use self::schema::{SqliteOptions, Synchronous};
use super::sql::{expiry, limit, new_token, parse_lease, sql_ms};
use super::*;
use crate::clock::{ms, now_ms};
use crate::error::{Error, Result};

/// How often a blocked call looks for commits by other connections.
const POLL: Duration = Duration::from_millis(1);

/// How often a blocked call re-runs its query regardless (leases expire without a commit).
const RECHECK: Duration = Duration::from_millis(50);

/// Storage in one SQLite file.
pub struct SqliteStorage {
    path: String,
    conn: Mutex<Connection>,
    /// Bumped after every write through this handle, to wake blocked calls at once.
    generation: Mutex<u64>,
    changed: Condvar,
    applied: super::applied::Applied,
}

impl SqliteStorage {
    /// Open or create the database at `path`.
    ///
    /// Fails with a clear error when the file is not a SQLite database, when it (or its
    /// directory) is not writable, or when its directory does not exist.
    pub fn open(path: &str, opts: SqliteOptions) -> Result<SqliteStorage> {
        Ok(SqliteStorage {
            path: path.to_string(),
            conn: Mutex::new(schema::connect(path, &opts)?),
            generation: Mutex::new(0),
            changed: Condvar::new(),
            applied: Default::default(),
        })
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
            "SELECT seq, payload, deliveries, id FROM queue WHERE queue = ?1
             AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY priority DESC, seq LIMIT ?3",
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
                            r.get::<_, String>(3)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let got = rows.len();
                for (seq, payload, deliveries, id) in rows {
                    if deliveries >= i64::from(req.max_deliveries) {
                        // Dead-lettered, and counted in its chord as a failed member, in this
                        // same transaction.
                        let d = u32::try_from(deliveries).unwrap_or(u32::MAX);
                        let buried = chord::overdue(&id, q, &payload, d, now_u);
                        delete.execute(params![seq])?;
                        apply_one(tx, &buried, now)?;
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

/// Write one batch in the transaction `tx` if its lease (if any) is held: the ack is the
/// fence, so a batch whose lease is gone writes nothing. Returns whether it was written.
fn apply_one(tx: &Transaction<'_>, batch: &Batch, now: i64) -> rusqlite::Result<bool> {
    if let Some(c) = &batch.claim {
        let held = tx
            .prepare_cached(
                "SELECT 1 FROM kv WHERE ns = ?1 AND key = ?2
                 AND (expires IS NULL OR expires > ?3)",
            )?
            .exists(params![Ns::Claims.as_str(), c.key, now])?;
        if held {
            return Ok(false);
        }
    }
    if let Some(l) = &batch.lease {
        let Some((seq, token)) = parse_lease(l) else {
            return Ok(false);
        };
        let acked = tx
            .prepare_cached("DELETE FROM queue WHERE seq = ?1 AND lease_token = ?2")?
            .execute(params![seq, token])?;
        if acked == 0 {
            return Ok(false);
        }
    }
    if let Some(c) = &batch.claim {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO kv(ns, key, value, expires) VALUES(?1, ?2, x'31', ?3)",
        )?
        .execute(params![
            Ns::Claims.as_str(),
            c.key,
            now.saturating_add(sql_ms(ms(c.ttl)))
        ])?;
    }
    const INSERT: &str = "INSERT INTO queue(id, queue, priority, payload) VALUES(?1, ?2, ?3, ?4)";
    // Statements are taken from the cache only when the batch has rows for them: most batches
    // are a bare ack, and each lookup hashes its SQL text.
    if !batch.enqueue.is_empty() {
        let mut insert = tx.prepare_cached(INSERT)?;
        for r in &batch.enqueue {
            insert.execute(params![r.id, r.queue, r.priority, r.payload])?;
        }
    }
    if !batch.schedule.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO schedule(id, queue, priority, eta, payload) VALUES(?1, ?2, ?3, ?4, ?5)",
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
    for c in &batch.chords {
        if let Some(r) = kv::count_chord(tx, c, now)? {
            tx.prepare_cached(INSERT)?
                .execute(params![r.id, r.queue, r.priority, r.payload])?;
        }
    }
    if !batch.release.is_empty() {
        let mut st = tx.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?;
        for key in &batch.release {
            st.execute(params![Ns::Claims.as_str(), key])?;
        }
    }
    Ok(true)
}

impl Queue for SqliteStorage {
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(vec![true; batches.len()]);
        }
        self.applied.apply_all(batches, |batches| {
            let now = sql_ms(now_ms());
            let written = self.write(|tx| {
                batches
                    .iter()
                    .map(|b| apply_one(tx, b, now))
                    .collect::<rusqlite::Result<Vec<bool>>>()
            })?;
            self.notify();
            Ok(written)
        })
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

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let until = sql_ms(now_ms().saturating_add(ms(lease)));
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE queue SET lease_until = ?3 WHERE seq = ?1 AND lease_token = ?2",
            )?;
            leases
                .iter()
                .map(|l| match parse_lease(l) {
                    Some((seq, token)) => Ok(st.execute(params![seq, token, until])? > 0),
                    None => Ok(false),
                })
                .collect()
        })
    }

    fn release(&self, leases: &[Lease], started: bool) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut st = tx.prepare_cached(
                "UPDATE queue SET lease_owner = NULL, lease_token = NULL, lease_until = NULL,
                 deliveries = CASE WHEN ?3 THEN deliveries ELSE max(deliveries - 1, 0) END
                 WHERE seq = ?1 AND lease_token = ?2",
            )?;
            for (seq, token) in leases.iter().filter_map(parse_lease) {
                st.execute(params![seq, token, started])?;
            }
            Ok(())
        })?;
        self.notify();
        Ok(())
    }
}

impl Schedule for SqliteStorage {
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

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let now = sql_ms(now_ms);
        // Both found through the partial indexes on `expires`: the work is the rows deleted.
        self.write(|tx| {
            let mut n = tx
                .prepare_cached(
                    "DELETE FROM results WHERE rowid IN
                     (SELECT rowid FROM results WHERE expires <= ?1 LIMIT ?2)",
                )?
                .execute(params![now, limit(max)])?;
            if n < max {
                n += tx
                    .prepare_cached(
                        "DELETE FROM kv WHERE (ns, key) IN
                         (SELECT ns, key FROM kv WHERE expires <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![now, limit(max - n)])?;
            }
            Ok(n)
        })
    }
}

impl Results for SqliteStorage {
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

    fn watch_results(&self, _: &str, pending: Pending, timeout: Duration) -> Result<Vec<String>> {
        self.watch(pending, timeout)
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM results WHERE id = ?1")?
                .execute(params![id])
                .map(|n| n > 0)
        })
    }

    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let now = sql_ms(now_ms());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|tx| {
            tx.prepare_cached(
                "SELECT id, value FROM results WHERE id > ?1
                 AND (expires IS NULL OR expires > ?2) ORDER BY id LIMIT ?3",
            )?
            .query_map(params![after, now, limit], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }
}
