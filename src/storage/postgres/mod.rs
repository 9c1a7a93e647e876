//! Storage in PostgreSQL, in a schema of its own (`huey` unless the URL says `?schema=`):
//! safe for any number of processes on any number of hosts.
//!
//! Every write is one transaction; [`Queue::apply_all`] writes all its batches in one. Dequeue
//! takes rows with `FOR UPDATE SKIP LOCKED`, so consumers never wait for each other's locks.
//! Blocking calls ([`Queue::dequeue`], [`Results::wait_result`]) are woken by `LISTEN/NOTIFY`
//! (see `listen.rs`) and re-check every 100 ms for leases that expire.
//!
//! Parts: the URL, connections and schema (`schema.rs`), wake-ups (`listen.rs`), key-value
//! entries, counters and chord bookkeeping (`kv.rs`), inspection (`inspect.rs`), writing
//! batches (`write.rs`); the queue, schedule and results here.

mod inspect;
mod kv;
mod listen;
mod schema;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::types::Type;

use self::listen::Signal;
pub(crate) use self::schema::schema_exists;
use self::schema::{migrate, Pool};
pub use self::schema::{with_schema, PgTarget, DEFAULT_SCHEMA};
pub(crate) use self::write::notify;
use super::sql::{expiry, limit, new_token, parse_lease, sql_ms};
use super::*;
use crate::clock::{ms, now_ms};
use crate::error::Result;

/// Storage in a PostgreSQL database.
pub struct PostgresStorage {
    pool: Pool,
    signal: Arc<Signal>,
    /// Started by the first call that blocks: a handle that never waits (a process worker's,
    /// a producer's) holds no listener connection.
    listening: std::sync::Once,
    applied: super::applied::Applied,
}

type PgResult<T> = std::result::Result<T, ::postgres::Error>;

impl PostgresStorage {
    /// Connect to the database a `postgres://` URL names, creating (or checking the version
    /// of) the schema on first use.
    pub fn open(url: &str) -> Result<PostgresStorage> {
        let target = PgTarget::parse(url).map_err(|reason| crate::error::Error::StorageUrl {
            url: url.to_string(),
            reason,
        })?;
        PostgresStorage::connect(target)
    }

    /// Connect with a parsed target.
    pub fn connect(target: PgTarget) -> Result<PostgresStorage> {
        let pool = Pool::new(target);
        migrate(&pool)?;
        Ok(PostgresStorage {
            pool,
            signal: Arc::new(Signal::default()),
            listening: std::sync::Once::new(),
            applied: Default::default(),
        })
    }

    /// The schema the storage lives in.
    pub fn schema(&self) -> &str {
        &self.pool.target.schema
    }

    /// Block until woken (see `listen.rs`), starting the listener the first time. A call that
    /// starts it is woken once it listens, and looks again for what was written before.
    fn wait(&self, generation: u64, deadline: Instant) {
        self.listening
            .call_once(|| listen::start(self.pool.target.clone(), &self.signal));
        self.signal.wait(generation, deadline);
    }

    /// Read a live result, deleting it when `take`. A take is a read and then a delete of the
    /// row version read (`xmin`): both are safe to send again when the server's goodbye was read
    /// as the answer (a `DELETE … RETURNING` is not: its reply can arrive together with that
    /// goodbye, and the client is told only of the goodbye, so the result would be deleted and
    /// lost). A result stored again for the same id meanwhile is a new row version, and stays.
    /// With `until` (a wait's deadline), an unreachable or restarting server is tried again
    /// until then (see [`Pool::read_until`]).
    fn read_result(&self, id: &str, take: bool, until: Option<Instant>) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        let found = self.pool.read_until(until, |c| {
            Ok(c.query_typed_opt(
                "SELECT value, xmin::text FROM results \
                 WHERE id = $1 AND (expires IS NULL OR expires > $2)",
                &[(&id, Type::TEXT), (&now, Type::INT8)],
            )?
            .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, String>(1))))
        })?;
        let Some((value, version)) = found else {
            return Ok(None);
        };
        if take {
            self.pool.read_until(until, |c| {
                c.execute_typed(
                    "DELETE FROM results WHERE id = $1 AND xmin = $2::xid",
                    &[(&id, Type::TEXT), (&version, Type::TEXT)],
                )
            })?;
        }
        Ok(Some(value))
    }
}

/// Write the producer's part of `batch` (enqueues, schedule entries) in an application's own
/// transaction, into the storage in `schema`: written if and only if that transaction commits.
pub(crate) fn write_in_transaction(
    tx: &mut ::postgres::Transaction<'_>,
    schema: &str,
    batch: &Batch,
) -> Result<()> {
    write::producer_rows(tx, schema, batch).map_err(|e| app_tx_err(schema, &e))
}

/// [`write_in_transaction`] in an application's async (`tokio-postgres`) transaction.
#[cfg(feature = "async")]
pub(crate) async fn write_in_transaction_async(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    batch: &Batch,
) -> Result<()> {
    write::producer_rows_async(tx, schema, batch)
        .await
        .map_err(|e| app_tx_err(schema, &e))
}

fn app_tx_err(schema: &str, e: &::postgres::Error) -> crate::error::Error {
    schema::storage_err(schema::describe(
        &format!("the application's transaction (schema {schema})"),
        e,
    ))
}

/// Lease up to `want` ready rows of queue `q` in one statement (one round trip, no explicit
/// transaction): the oldest rows of the highest priority are locked with `SKIP LOCKED` and
/// given this lease. Returns (seq, payload, deliveries before this one, id, priority).
///
/// Safe to repeat on another connection when the first was found closed: rows leased by a
/// statement whose answer was lost come back when that lease expires.
const LEASE: &str = "WITH picked AS (
     SELECT seq FROM queue WHERE queue = $1 AND (lease_until IS NULL OR lease_until <= $2)
     ORDER BY priority DESC, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
 UPDATE queue q SET lease_owner = $4, lease_token = $5, lease_until = $6,
     deliveries = q.deliveries + 1
 FROM picked WHERE q.seq = picked.seq
 RETURNING q.seq, q.payload, q.deliveries - 1, q.id, q.priority,
     EXISTS(SELECT 1 FROM kv WHERE ns = 'revoked')";

/// Rows leased by [`LEASE`], in dequeue order; the last column says whether any revocation is
/// stored (`Ns::Revoked`), read in the same statement (an init plan: once, not per row).
type Leased = Vec<(i64, Vec<u8>, i32, String, i32, bool)>;

impl PostgresStorage {
    /// Lease up to `req.max` ready rows, burying those delivered too often; and whether any
    /// revocation is stored, as the statements that leased rows saw it (`None`: none leased).
    fn lease_ready(&self, req: &DequeueRequest) -> Result<(Vec<Delivery>, Option<bool>)> {
        let now_u = now_ms();
        let now = sql_ms(now_u);
        let until = sql_ms(now_u.saturating_add(ms(req.lease)));
        let token = new_token();
        let max_deliveries = i32::try_from(req.max_deliveries).unwrap_or(i32::MAX);
        let mut out = Vec::new();
        let mut revoked: Option<bool> = None;
        for q in &req.queues {
            while out.len() < req.max {
                let want = limit(req.max - out.len());
                let mut rows: Leased = self.pool.read(|c| {
                    Ok(c.query_typed(
                        LEASE,
                        &[
                            (q, Type::TEXT),
                            (&now, Type::INT8),
                            (&want, Type::INT8),
                            (&req.consumer, Type::TEXT),
                            (&token, Type::INT8),
                            (&until, Type::INT8),
                        ],
                    )?
                    .into_iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                    .collect())
                })?;
                if let Some(row) = rows.first() {
                    revoked = Some(revoked.unwrap_or(false) || row.5);
                }
                let got = rows.len();
                rows.sort_by_key(|r| (std::cmp::Reverse(r.4), r.0));
                let mut overdue = Vec::new();
                for (seq, payload, deliveries, id, _, _) in rows {
                    if deliveries >= max_deliveries {
                        overdue.push((seq, payload, deliveries, id));
                        continue;
                    }
                    out.push(Delivery {
                        lease: Lease(format!("{seq}:{token}")),
                        queue: q.clone(),
                        payload,
                        deliveries: u32::try_from(deliveries + 1).unwrap_or(u32::MAX),
                    });
                }
                if !overdue.is_empty() {
                    self.bury(q, &overdue, token, now_u)?;
                }
                if (got as i64) < want {
                    break;
                }
            }
        }
        Ok((out, revoked))
    }

    /// Dead-letter rows this call leased that were delivered too often (and count each in its
    /// chord as a failed member), fenced by the lease just taken: a row whose lease was lost
    /// meanwhile is left to whoever holds it now.
    fn bury(
        &self,
        q: &str,
        rows: &[(i64, Vec<u8>, i32, String)],
        token: i64,
        now_u: u64,
    ) -> Result<()> {
        let schema = self.schema().to_string();
        let now = sql_ms(now_u);
        self.pool.tx(|tx| {
            for (seq, payload, deliveries, id) in rows {
                let deleted = tx.execute(
                    "DELETE FROM queue WHERE seq = $1 AND lease_token = $2",
                    &[seq, &token],
                )?;
                if deleted > 0 {
                    let d = u32::try_from(*deliveries).unwrap_or(0);
                    let buried = chord::overdue(id, q, payload, d, now_u);
                    write::apply_one(tx, &buried, now, &schema)?;
                }
            }
            Ok(())
        })
    }
}

impl Queue for PostgresStorage {
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(vec![true; batches.len()]);
        }
        let schema = self.schema().to_string();
        self.applied.apply_all(batches, |batches| {
            if batches.iter().all(|b| write::only_enqueues(b)) {
                let rows: Vec<_> = batches.iter().flat_map(|b| &b.enqueue).collect();
                self.pool
                    .once(|c| write::enqueue_alone(c, &schema, &rows))?;
                self.signal.bump();
                return Ok(vec![true; batches.len()]);
            }
            if batches.iter().all(|b| write::only_acks(b)) {
                let acked = self
                    .pool
                    .once(|c| write::ack_and_store(c, batches, &schema))?;
                self.signal.bump();
                return Ok(write::acked_each(batches, &acked));
            }
            let now = sql_ms(now_ms());
            let written = self
                .pool
                .tx(|tx| write::apply_batches(tx, batches, now, &schema))?;
            self.signal.bump();
            Ok(written)
        })
    }

    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>> {
        Ok(self.dequeue_seeing_revocations(req)?.0)
    }

    fn dequeue_seeing_revocations(
        &self,
        req: &DequeueRequest,
    ) -> Result<(Vec<Delivery>, Option<bool>)> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok((Vec::new(), None));
        }
        let deadline = deadline(req.wait);
        loop {
            let generation = self.signal.generation();
            let (out, revoked) = self.lease_ready(req)?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok((out, revoked));
            }
            self.wait(generation, deadline);
        }
    }

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let until = sql_ms(now_ms().saturating_add(ms(lease)));
        self.pool.tx(|tx| {
            leases
                .iter()
                .map(|l| match parse_lease(l) {
                    Some((seq, token)) => Ok(tx.execute(
                        "UPDATE queue SET lease_until = $3 WHERE seq = $1 AND lease_token = $2",
                        &[&seq, &token, &until],
                    )? > 0),
                    None => Ok(false),
                })
                .collect()
        })
    }

    fn release(&self, leases: &[Lease], started: bool) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let schema = self.schema().to_string();
        self.pool.tx(|tx| {
            for (seq, token) in leases.iter().filter_map(parse_lease) {
                tx.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_token = NULL, lease_until = NULL,
                     deliveries = CASE WHEN $3 THEN deliveries ELSE greatest(deliveries - 1, 0) END
                     WHERE seq = $1 AND lease_token = $2",
                    &[&seq, &token, &started],
                )?;
            }
            notify(tx, &schema)
        })?;
        self.signal.bump();
        Ok(())
    }
}

impl Schedule for PostgresStorage {
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let now = sql_ms(now_ms);
        let schema = self.schema().to_string();
        let n = self.pool.tx(|tx| {
            // Taken in eta order and inserted in that order, so the queue keeps FIFO by eta;
            // SKIP LOCKED lets consumers promote at once without waiting for each other.
            let n = tx.execute(
                "WITH due AS (
                     DELETE FROM schedule WHERE seq IN (
                         SELECT seq FROM schedule WHERE eta <= $1 ORDER BY eta, seq
                         LIMIT $2 FOR UPDATE SKIP LOCKED)
                     RETURNING seq, id, queue, priority, eta, payload)
                 INSERT INTO queue(id, queue, priority, payload)
                 SELECT id, queue, priority, payload FROM due ORDER BY eta, seq",
                &[&now, &limit(max)],
            )?;
            if n > 0 {
                notify(tx, &schema)?;
            }
            Ok(n as usize)
        })?;
        if n > 0 {
            self.signal.bump();
        }
        Ok(n)
    }

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let now = sql_ms(now_ms);
        // Both found through the partial indexes on `expires`: the work is the rows deleted.
        self.pool.tx(|tx| {
            let mut n = tx.execute(
                "DELETE FROM results WHERE id IN
                 (SELECT id FROM results WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&now, &limit(max)],
            )? as usize;
            if n < max {
                n += tx.execute(
                    "DELETE FROM kv WHERE (ns, key) IN
                     (SELECT ns, key FROM kv WHERE expires <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                    &[&now, &limit(max - n)],
                )? as usize;
            }
            Ok(n)
        })
    }
}

impl Results for PostgresStorage {
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>> {
        self.read_result(id, take, None)
    }

    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = deadline(timeout);
        loop {
            let generation = self.signal.generation();
            if let Some(v) = self.read_result(id, take, Some(deadline))? {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.wait(generation, deadline);
        }
    }

    fn watch_results(&self, _: &str, pending: Pending, timeout: Duration) -> Result<Vec<String>> {
        let deadline = deadline(timeout);
        let generation = self.signal.generation();
        let ids = pending();
        let now = sql_ms(now_ms());
        let ready = self.pool.read_until(Some(deadline), |c| {
            let rows = c.query(
                "SELECT id FROM results WHERE id = ANY($1) AND (expires IS NULL OR expires > $2)",
                &[&ids, &now],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect::<Vec<String>>())
        })?;
        if ready.is_empty() {
            self.wait(generation, deadline);
        }
        Ok(ready)
    }

    fn wake_watcher(&self, _: &str) -> Result<()> {
        self.signal.bump();
        Ok(())
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        self.pool
            .tx(|tx| Ok(tx.execute("DELETE FROM results WHERE id = $1", &[&id])? > 0))
    }

    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let now = sql_ms(now_ms());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.read(|c| {
            Ok(c.query(
                "SELECT id, value FROM results WHERE id COLLATE \"C\" > $1
                 AND (expires IS NULL OR expires > $2) ORDER BY id COLLATE \"C\" LIMIT $3",
                &[&after, &now, &limit],
            )?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }
}
