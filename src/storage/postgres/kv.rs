//! Key-value entries and counters of a Postgres storage, and chord bookkeeping, all in the `kv`
//! table (expiring counters and chord entries under namespaces of their own, which apps cannot
//! name; their numbers stored as decimal text) and the `counters` table.

use std::collections::HashMap;
use std::time::Duration;

use ::postgres::types::Type;
use ::postgres::Transaction;

use super::{expiry, sql_ms, PgResult, PostgresStorage};
use crate::clock::{ms, now_ms};
use crate::error::Result;
use crate::storage::{ChordCount, Kv, Ns, Ready};

/// Adds `$2` to a kv row holding a decimal number, or creates it at `$2` expiring at `$3`.
const ADD: &str = "INSERT INTO kv(ns, key, value, expires)
     VALUES($4, $1, convert_to($2::bigint::text, 'UTF8'), $3)
     ON CONFLICT(ns, key) DO UPDATE
     SET value = convert_to((convert_from(kv.value, 'UTF8')::bigint + $2::bigint)::text, 'UTF8')
     RETURNING convert_from(value, 'UTF8')::bigint";

impl Kv for PostgresStorage {
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            Ok(c.query_opt(
                "SELECT value FROM kv WHERE ns = $1 AND key = $2
                 AND (expires IS NULL OR expires > $3)",
                &[&ns.as_str(), &key, &now],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = sql_ms(now_ms());
        let found: HashMap<String, Vec<u8>> = self.pool.read(|c| {
            let rows = c.query(
                "SELECT key, value FROM kv WHERE ns = $1 AND key = ANY($2)
                 AND (expires IS NULL OR expires > $3)",
                &[&ns.as_str(), &keys, &now],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn may_hold_any(&self, ns: Ns) -> Result<bool> {
        self.pool.read(|c| {
            Ok(c.query_typed_one(
                "SELECT EXISTS(SELECT 1 FROM kv WHERE ns = $1)",
                &[(&ns.as_str(), Type::TEXT)],
            )?
            .get(0))
        })
    }

    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.pool.tx(|tx| {
            tx.execute(
                "INSERT INTO kv(ns, key, value, expires) VALUES($1, $2, $3, $4)
                 ON CONFLICT(ns, key) DO UPDATE
                 SET value = excluded.value, expires = excluded.expires",
                &[&ns.as_str(), &key, &value, &expiry(ttl)],
            )?;
            Ok(())
        })
    }

    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.pool.tx(|tx| {
            Ok(tx.execute(
                "INSERT INTO kv(ns, key, value, expires) VALUES($1, $2, $3, $4)
                 ON CONFLICT(ns, key) DO UPDATE
                 SET value = excluded.value, expires = excluded.expires
                 WHERE kv.expires IS NOT NULL AND kv.expires <= $5",
                &[&ns.as_str(), &key, &value, &expiry(ttl), &now],
            )? > 0)
        })
    }

    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.pool.tx(|tx| {
            Ok(tx.execute(
                "DELETE FROM kv WHERE ns = $1 AND key = $2 AND value = $3
                 AND (expires IS NULL OR expires > $4)",
                &[&ns.as_str(), &key, &value, &now],
            )? > 0)
        })
    }

    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.pool.tx(|tx| {
            Ok(tx.execute(
                "UPDATE kv SET expires = $5 WHERE ns = $1 AND key = $2 AND value = $3
                 AND (expires IS NULL OR expires > $4)",
                &[&ns.as_str(), &key, &value, &now, &expiry(Some(ttl))],
            )? > 0)
        })
    }

    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let now = sql_ms(now_ms());
        self.pool.tx(|tx| {
            let row = tx.query_opt(
                "DELETE FROM kv WHERE ns = $1 AND key = $2 RETURNING value, expires",
                &[&ns.as_str(), &key],
            )?;
            Ok(row.and_then(|r| {
                let exp: Option<i64> = r.get(1);
                exp.is_none_or(|e| e > now).then(|| r.get(0))
            }))
        })
    }

    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            let rows = c.query(
                "SELECT key, value FROM kv WHERE ns = $1
                 AND (expires IS NULL OR expires > $2) ORDER BY key COLLATE \"C\"",
                &[&ns.as_str(), &now],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        self.pool.tx(|tx| {
            Ok(tx
                .query_typed_one(
                    "INSERT INTO counters(key, value) VALUES($1, $2)
                     ON CONFLICT(key) DO UPDATE SET value = counters.value + excluded.value
                     RETURNING value",
                    &[(&key, Type::TEXT), (&by, Type::INT8)],
                )?
                .get(0))
        })
    }

    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let now = sql_ms(now_ms());
        self.pool.tx(|tx| {
            tx.execute(
                "DELETE FROM kv WHERE ns = 'counter' AND key = $1 AND expires <= $2",
                &[&key, &now],
            )?;
            Ok(tx
                .query_one(ADD, &[&key, &by, &expiry(Some(ttl)), &"counter"])?
                .get(0))
        })
    }

    fn read_expiring(&self, keys: &[String], _ttl: Duration) -> Result<Vec<i64>> {
        let now = sql_ms(now_ms());
        let found: HashMap<String, i64> = self.pool.read(|c| {
            let rows = c.query(
                "SELECT key, convert_from(value, 'UTF8')::bigint FROM kv
                 WHERE ns = 'counter' AND key = ANY($1) AND (expires IS NULL OR expires > $2)",
                &[&keys, &now],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        Ok(keys
            .iter()
            .map(|k| found.get(k).copied().unwrap_or(0))
            .collect())
    }
}

/// The `kv` namespaces of chord bookkeeping: members counted, their items, the counts.
const CHORD_MARK: &str = "chord:mark";
const CHORD_ITEM: &str = "chord:item";
const CHORD_COUNT: &str = "chord:count";

/// Count one chord member in the batch's transaction (see [`ChordCount`]); returns the callback
/// to enqueue when it was the last one.
pub(super) fn count_chord(
    tx: &mut Transaction<'_>,
    c: &ChordCount,
    now: i64,
) -> PgResult<Option<Ready>> {
    let member = |i: u32| format!("{}:{i}", c.chord);
    let expires = now.saturating_add(sql_ms(ms(c.ttl)));
    let marked = tx.execute(
        "INSERT INTO kv(ns, key, value, expires) VALUES($1, $2, '', $3)
         ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value, expires = excluded.expires
         WHERE kv.expires <= $4",
        &[&CHORD_MARK, &member(c.index), &expires, &now],
    )?;
    if marked == 0 {
        return Ok(None); // counted before: it ran twice
    }
    tx.execute(
        "INSERT INTO kv(ns, key, value, expires) VALUES($1, $2, $3, $4)
         ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
        &[&CHORD_ITEM, &member(c.index), &c.outcome, &expires],
    )?;
    // A count that expired starts over; a live one keeps the expiry it was created with.
    tx.execute(
        "DELETE FROM kv WHERE ns = $1 AND key = $2 AND expires <= $3",
        &[&CHORD_COUNT, &c.chord, &now],
    )?;
    let count: i64 = tx
        .query_one(ADD, &[&c.chord, &1i64, &Some(expires), &CHORD_COUNT])?
        .get(0);
    if count != i64::from(c.size) {
        return Ok(None);
    }
    let keys: Vec<String> = (0..c.size).map(member).collect();
    let rows = tx.query(
        "SELECT key, value FROM kv WHERE ns = $1 AND key = ANY($2) AND expires > $3",
        &[&CHORD_ITEM, &keys, &now],
    )?;
    let found: HashMap<String, Vec<u8>> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let ready = c
        .callback
        .ready(keys.iter().map(|k| found.get(k).map(Vec::as_slice)));
    tx.execute(
        "DELETE FROM kv WHERE ns = $1 AND key = ANY($2)",
        &[&CHORD_ITEM, &keys],
    )?;
    tx.execute(
        "DELETE FROM kv WHERE ns = $1 AND key = $2",
        &[&CHORD_COUNT, &c.chord],
    )?;
    // Marks stay until they expire, so a member that runs again is not counted again; expired
    // ones go with the consumer's purge (indexed by expiry), never by a scan here.
    Ok(Some(ready))
}
