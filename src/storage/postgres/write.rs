//! Writing one [`Batch`] inside a transaction, fenced by its lease; and the rows an enqueue
//! writes, shared with enqueues made in an application's own transaction.

use std::collections::HashSet;

use ::postgres::types::{ToSql, Type};
use ::postgres::GenericClient;

use super::{expiry, kv, listen, parse_lease, sql_ms, PgResult};
use crate::clock::ms;
use crate::storage::{Batch, Ns, Ready};

/// Tell listeners (at commit) that something may be ready.
pub(crate) fn notify(tx: &mut impl GenericClient, schema: &str) -> PgResult<()> {
    tx.query_typed(NOTIFY, &[(&listen::channel(schema), Type::TEXT)])?;
    Ok(())
}

const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// One statement for a whole batch of ready rows (in `schema`, named explicitly so an
/// application connection with its own search path works too); WITH ORDINALITY keeps their
/// order (FIFO).
fn enqueue_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.queue(id, queue, priority, payload)
         SELECT i, q, p, b FROM unnest($1::text[], $2::text[], $3::int[], $4::bytea[])
         WITH ORDINALITY AS t(i, q, p, b, n) ORDER BY n"
    )
}

fn schedule_sql(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.schedule(id, queue, priority, eta, payload)
         VALUES($1, $2, $3, $4, $5)"
    )
}

/// The columns of ready rows, as the arrays `enqueue_sql` takes.
struct Columns<'a> {
    ids: Vec<&'a str>,
    queues: Vec<&'a str>,
    prios: Vec<i32>,
    payloads: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(rows: impl IntoIterator<Item = &'a Ready>) -> Columns<'a> {
        let mut c = Columns {
            ids: Vec::new(),
            queues: Vec::new(),
            prios: Vec::new(),
            payloads: Vec::new(),
        };
        for r in rows {
            c.ids.push(r.id.as_str());
            c.queues.push(r.queue.as_str());
            c.prios.push(r.priority);
            c.payloads.push(r.payload.as_slice());
        }
        c
    }
}

impl Columns<'_> {
    /// The parameters of [`enqueue_notify_sql`]: the columns, then the channel to notify.
    fn params<'p>(&'p self, channel: &'p String) -> [(&'p (dyn ToSql + Sync), Type); 5] {
        [
            (&self.ids, Type::TEXT_ARRAY),
            (&self.queues, Type::TEXT_ARRAY),
            (&self.prios, Type::INT4_ARRAY),
            (&self.payloads, Type::BYTEA_ARRAY),
            (channel, Type::TEXT),
        ]
    }
}

/// The parameters of [`schedule_sql`] for a row due at `eta` (milliseconds, as stored).
fn schedule_params<'p>(r: &'p Ready, eta: &'p i64) -> [(&'p (dyn ToSql + Sync), Type); 5] {
    [
        (&r.id, Type::TEXT),
        (&r.queue, Type::TEXT),
        (&r.priority, Type::INT4),
        (eta, Type::INT8),
        (&r.payload, Type::BYTEA),
    ]
}

/// Insert ready rows and notify listeners in one statement of its own (committed with its
/// implicit transaction): a producer's enqueue is one round trip.
pub(super) fn enqueue_alone(
    c: &mut ::postgres::Client,
    schema: &str,
    rows: &[&Ready],
) -> PgResult<()> {
    enqueue_rows(c, schema, rows.iter().copied())
}

/// [`enqueue_sql`] and the notification of listeners (delivered at commit) as one statement.
fn enqueue_notify_sql(schema: &str) -> String {
    format!(
        "WITH ins AS ({} RETURNING 1) SELECT pg_notify($5, '') WHERE EXISTS (SELECT 1 FROM ins)",
        enqueue_sql(schema)
    )
}

/// Whether a batch only enqueues ready messages (a producer's usual write).
pub(super) fn only_enqueues(b: &Batch) -> bool {
    b.lease.is_none()
        && b.claim.is_none()
        && !b.enqueue.is_empty()
        && b.schedule.is_empty()
        && b.results.is_empty()
        && b.dead.is_empty()
        && b.chords.is_empty()
        && b.release.is_empty()
}

/// Insert ready rows and notify listeners; the caller's transaction makes them visible.
pub(crate) fn enqueue_rows<'a>(
    tx: &mut impl GenericClient,
    schema: &str,
    rows: impl IntoIterator<Item = &'a Ready>,
) -> PgResult<()> {
    let c = Columns::of(rows);
    if c.ids.is_empty() {
        return Ok(());
    }
    let channel = listen::channel(schema);
    tx.query_typed(&enqueue_notify_sql(schema), &c.params(&channel))?;
    Ok(())
}

/// Write the enqueues and schedule entries of `batch` (the parts a producer writes) in an
/// application's own transaction, in `schema`; listeners are told at its commit.
pub(crate) fn producer_rows(
    tx: &mut impl GenericClient,
    schema: &str,
    batch: &Batch,
) -> PgResult<()> {
    enqueue_rows(tx, schema, &batch.enqueue)?;
    for s in &batch.schedule {
        let r = &s.ready;
        let eta = sql_ms(s.eta_ms);
        tx.query_typed(&schedule_sql(schema), &schedule_params(r, &eta))?;
    }
    Ok(())
}

/// [`producer_rows`] in an application's async (`tokio-postgres`) transaction.
#[cfg(feature = "async")]
pub(crate) async fn producer_rows_async(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    batch: &Batch,
) -> PgResult<()> {
    if !batch.enqueue.is_empty() {
        let c = Columns::of(&batch.enqueue);
        let channel = listen::channel(schema);
        tx.query_typed(&enqueue_notify_sql(schema), &c.params(&channel))
            .await?;
    }
    for s in &batch.schedule {
        let r = &s.ready;
        let eta = sql_ms(s.eta_ms);
        tx.query_typed(&schedule_sql(schema), &schedule_params(r, &eta))
            .await?;
    }
    Ok(())
}

/// Acknowledge leases and store the results of those acknowledged, in one statement: `$1`,
/// `$2` the leases (seq, token); `$3`..`$6` the results (the seq of the batch storing it, id,
/// value, expiry). The last of two results for one id wins, as when written one by one.
/// Returns the seqs acknowledged.
const ACK_AND_STORE: &str = "WITH acked AS (
     DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[]) AS t(seq, token)
     WHERE q.seq = t.seq AND q.lease_token = t.token RETURNING q.seq),
 stored AS (
     INSERT INTO results(id, value, expires)
     SELECT DISTINCT ON (r.id) r.id, r.value, r.expires
     FROM unnest($3::bigint[], $4::text[], $5::bytea[], $6::bigint[])
         WITH ORDINALITY AS r(seq, id, value, expires, n)
     WHERE r.seq IN (SELECT seq FROM acked)
     ORDER BY r.id, r.n DESC
     ON CONFLICT(id) DO UPDATE SET value = excluded.value, expires = excluded.expires)
 SELECT seq FROM acked
 UNION ALL
 SELECT NULL FROM (
     SELECT pg_notify($7, '') WHERE EXISTS (SELECT 1 FROM acked WHERE seq = ANY($3::bigint[]))
 ) AS woken";

/// Whether a batch only acknowledges its lease and stores results (a task's usual outcome).
pub(super) fn only_acks(b: &Batch) -> bool {
    b.lease.as_ref().and_then(parse_lease).is_some()
        && b.claim.is_none()
        && b.enqueue.is_empty()
        && b.schedule.is_empty()
        && b.dead.is_empty()
        && b.chords.is_empty()
        && b.release.is_empty()
}

/// Acknowledge the leases of the [`only_acks`] batches among `batches` and store the results
/// of those acknowledged, in one statement, which also tells listeners (at commit) when a
/// result was stored. Returns the seqs acknowledged.
pub(super) fn ack_and_store(
    c: &mut impl GenericClient,
    batches: &[&Batch],
    schema: &str,
) -> PgResult<HashSet<i64>> {
    let (mut seqs, mut tokens) = (Vec::new(), Vec::new());
    let (mut r_seqs, mut r_ids, mut r_values, mut r_expires) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in batches.iter().filter(|b| only_acks(b)) {
        if let Some((seq, token)) = b.lease.as_ref().and_then(parse_lease) {
            seqs.push(seq);
            tokens.push(token);
            for r in &b.results {
                r_seqs.push(seq);
                r_ids.push(r.id.as_str());
                r_values.push(r.value.as_slice());
                r_expires.push(expiry(r.ttl));
            }
        }
    }
    let mut acked = HashSet::new();
    if seqs.is_empty() {
        return Ok(acked);
    }
    for r in c.query_typed(
        ACK_AND_STORE,
        &[
            (&seqs, Type::INT8_ARRAY),
            (&tokens, Type::INT8_ARRAY),
            (&r_seqs, Type::INT8_ARRAY),
            (&r_ids, Type::TEXT_ARRAY),
            (&r_values, Type::BYTEA_ARRAY),
            (&r_expires, Type::INT8_ARRAY),
            (&listen::channel(schema), Type::TEXT),
        ],
    )? {
        if let Some(seq) = r.get::<_, Option<i64>>(0) {
            acked.insert(seq);
        }
    }
    Ok(acked)
}

/// Per batch, whether it was written, for batches that are all [`only_acks`].
pub(super) fn acked_each(batches: &[&Batch], acked: &HashSet<i64>) -> Vec<bool> {
    batches
        .iter()
        .map(|b| {
            let seq = b.lease.as_ref().and_then(parse_lease).map(|l| l.0);
            seq.is_some_and(|s| acked.contains(&s))
        })
        .collect()
}

/// Write `batches` in `tx`: those that only acknowledge and store results (the usual outcome
/// of a task) in one statement, the others one by one in order. Per batch, whether it was
/// written.
pub(super) fn apply_batches(
    tx: &mut ::postgres::Transaction<'_>,
    batches: &[&Batch],
    now: i64,
    schema: &str,
) -> PgResult<Vec<bool>> {
    lock_claims(tx, batches, schema)?;
    let acked = ack_and_store(tx, batches, schema)?;
    batches
        .iter()
        .map(|b| {
            if only_acks(b) {
                let seq = b.lease.as_ref().and_then(parse_lease).map(|l| l.0);
                Ok(seq.is_some_and(|s| acked.contains(&s)))
            } else {
                apply_one(tx, b, now, schema)
            }
        })
        .collect()
}

/// Writers that take or release several claims (unique tasks' ids) in one transaction would
/// take their rows in different orders and deadlock one another (a producer enqueuing a few
/// unique calls while another enqueues them in another order, or a consumer releasing them):
/// such a transaction first takes a transaction-scoped advisory lock per claim, all in one
/// order. One claim alone cannot close a cycle, so it takes none.
fn lock_claims(
    tx: &mut ::postgres::Transaction<'_>,
    batches: &[&Batch],
    schema: &str,
) -> PgResult<()> {
    let mut keys: Vec<&str> = batches
        .iter()
        .flat_map(|b| {
            let claim = b.claim.iter().map(|c| c.key.as_str());
            claim.chain(b.release.iter().map(String::as_str))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() < 2 {
        return Ok(());
    }
    // The locks are taken after the sort (a volatile function in the select list).
    tx.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (
           SELECT DISTINCT hashtext('huey claim ' || $2 || ' ' || k) AS h
           FROM unnest($1::text[]) AS k
         ) AS s ORDER BY h",
        &[&keys, &schema],
    )?;
    Ok(())
}

/// Write one batch in `tx` if its lease (if any) is held: the ack is the fence, so a batch
/// whose lease is gone writes nothing. Returns whether it was written.
pub(super) fn apply_one(
    tx: &mut ::postgres::Transaction<'_>,
    batch: &Batch,
    now: i64,
    schema: &str,
) -> PgResult<bool> {
    if batch.claim.is_some() && batch.lease.is_some() {
        // The claim is taken before the lease is checked: a savepoint undoes it when the
        // lease turns out gone, so a fenced batch writes nothing.
        let mut sp = tx.transaction()?;
        let written = apply_fenced(&mut sp, batch, now, schema)?;
        if written {
            sp.commit()?;
        }
        return Ok(written);
    }
    apply_fenced(tx, batch, now, schema)
}

fn apply_fenced(
    tx: &mut ::postgres::Transaction<'_>,
    batch: &Batch,
    now: i64,
    schema: &str,
) -> PgResult<bool> {
    if let Some(c) = &batch.claim {
        // Taken only if not held (an expired one is not): two writers of one claim, the
        // second waits for the first's row lock, then finds it held and writes nothing.
        let taken = tx.execute(
            "INSERT INTO kv(ns, key, value, expires) VALUES($1, $2, '\\x31', $3)
             ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value, expires = excluded.expires
             WHERE kv.expires IS NOT NULL AND kv.expires <= $4",
            &[
                &Ns::Claims.as_str(),
                &c.key,
                &now.saturating_add(sql_ms(ms(c.ttl))),
                &now,
            ],
        )?;
        if taken == 0 {
            return Ok(false);
        }
    }
    if let Some(l) = &batch.lease {
        let Some((seq, token)) = parse_lease(l) else {
            return Ok(false);
        };
        let acked = tx.execute(
            "DELETE FROM queue WHERE seq = $1 AND lease_token = $2",
            &[&seq, &token],
        )?;
        if acked == 0 {
            return Ok(false);
        }
    }
    enqueue_rows(tx, schema, &batch.enqueue)?;
    for s in &batch.schedule {
        let r = &s.ready;
        tx.execute(
            "INSERT INTO schedule(id, queue, priority, eta, payload) VALUES($1, $2, $3, $4, $5)",
            &[&r.id, &r.queue, &r.priority, &sql_ms(s.eta_ms), &r.payload],
        )?;
    }
    for r in &batch.results {
        tx.execute(
            "INSERT INTO results(id, value, expires) VALUES($1, $2, $3)
             ON CONFLICT(id) DO UPDATE SET value = excluded.value, expires = excluded.expires",
            &[&r.id, &r.value, &expiry(r.ttl)],
        )?;
    }
    if !batch.results.is_empty() {
        super::write::notify(tx, schema)?;
    }
    for d in &batch.dead {
        tx.execute(
            "INSERT INTO dead(id, queue, payload, error, at) VALUES($1, $2, $3, $4, $5)",
            &[&d.id, &d.queue, &d.payload, &d.error, &now],
        )?;
    }
    for c in &batch.chords {
        if let Some(r) = kv::count_chord(tx, c, now)? {
            enqueue_rows(tx, schema, std::slice::from_ref(&r))?;
        }
    }
    if !batch.release.is_empty() {
        tx.execute(
            "DELETE FROM kv WHERE ns = $1 AND key = ANY($2)",
            &[&Ns::Claims.as_str(), &batch.release],
        )?;
    }
    Ok(true)
}
