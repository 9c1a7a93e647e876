//! Writing one [`Batch`] inside a transaction, fenced by its lease; and the rows an enqueue
//! writes, shared with enqueues made in an application's own transaction.

use std::collections::HashSet;

use ::postgres::GenericClient;

use super::{expiry, kv, listen, parse_lease, sql_ms, PgResult};
use crate::clock::ms;
use crate::storage::{Batch, Ns, Ready};

/// Tell listeners (at commit) that something may be ready.
pub(crate) fn notify(tx: &mut impl GenericClient, schema: &str) -> PgResult<()> {
    tx.execute(NOTIFY, &[&listen::channel(schema)])?;
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
    fn of(rows: &'a [Ready]) -> Columns<'a> {
        Columns {
            ids: rows.iter().map(|r| r.id.as_str()).collect(),
            queues: rows.iter().map(|r| r.queue.as_str()).collect(),
            prios: rows.iter().map(|r| r.priority).collect(),
            payloads: rows.iter().map(|r| r.payload.as_slice()).collect(),
        }
    }
}

/// Insert ready rows and notify listeners; the caller's transaction makes them visible.
pub(crate) fn enqueue_rows(
    tx: &mut impl GenericClient,
    schema: &str,
    rows: &[Ready],
) -> PgResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = Columns::of(rows);
    tx.execute(
        &enqueue_sql(schema),
        &[&c.ids, &c.queues, &c.prios, &c.payloads],
    )?;
    notify(tx, schema)
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
        tx.execute(
            &schedule_sql(schema),
            &[&r.id, &r.queue, &r.priority, &sql_ms(s.eta_ms), &r.payload],
        )?;
    }
    Ok(())
}

/// [`producer_rows`] in an application's async (`tokio-postgres`) transaction.
pub(crate) async fn producer_rows_async(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    batch: &Batch,
) -> PgResult<()> {
    if !batch.enqueue.is_empty() {
        let c = Columns::of(&batch.enqueue);
        tx.execute(
            &enqueue_sql(schema),
            &[&c.ids, &c.queues, &c.prios, &c.payloads],
        )
        .await?;
        tx.execute(NOTIFY, &[&listen::channel(schema)]).await?;
    }
    for s in &batch.schedule {
        let r = &s.ready;
        tx.execute(
            &schedule_sql(schema),
            &[&r.id, &r.queue, &r.priority, &sql_ms(s.eta_ms), &r.payload],
        )
        .await?;
    }
    Ok(())
}

/// Write `batches` in `tx`: those that only acknowledge (the usual outcome of a task whose
/// result is not stored) in one statement, the others one by one in order. Per batch, whether
/// it was written.
pub(super) fn apply_batches(
    tx: &mut ::postgres::Transaction<'_>,
    batches: &[&Batch],
    now: i64,
    schema: &str,
) -> PgResult<Vec<bool>> {
    let ack_only = |b: &Batch| {
        b.lease.is_some()
            && b.claim.is_none()
            && b.enqueue.is_empty()
            && b.schedule.is_empty()
            && b.results.is_empty()
            && b.dead.is_empty()
            && b.chords.is_empty()
            && b.release.is_empty()
    };
    lock_claims(tx, batches, schema)?;
    let mut seqs = Vec::new();
    let mut tokens = Vec::new();
    for b in batches.iter().filter(|b| ack_only(b)) {
        if let Some((seq, token)) = b.lease.as_ref().and_then(parse_lease) {
            seqs.push(seq);
            tokens.push(token);
        }
    }
    let mut acked = HashSet::new();
    if !seqs.is_empty() {
        for r in tx.query(
            "DELETE FROM queue q USING unnest($1::bigint[], $2::bigint[]) AS t(seq, token)
             WHERE q.seq = t.seq AND q.lease_token = t.token RETURNING q.seq",
            &[&seqs, &tokens],
        )? {
            acked.insert(r.get::<_, i64>(0));
        }
    }
    batches
        .iter()
        .map(|b| {
            if ack_only(b) {
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
