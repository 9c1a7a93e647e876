//! Key-value entries and counters of a SQLite storage, and chord bookkeeping, all in the `kv`
//! table (expiring counters and chord entries under namespaces of their own, which apps cannot
//! name) and the `counters` table.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::{params, params_from_iter, OptionalExtension, ToSql, Transaction};

use super::{expiry, sql_ms, SqliteStorage};
use crate::clock::{ms, now_ms};
use crate::error::Result;
use crate::storage::{ChordCount, Kv, Ns, Ready};

/// Keys asked for in one statement by [`Kv::get_many`] (SQLite allows 32,766 parameters; a
/// few hundred keep each statement's plan cached and cheap).
const MAX_KEYS_PER_QUERY: usize = 500;

impl Kv for SqliteStorage {
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

    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = sql_ms(now_ms());
        let ns = ns.as_str();
        let mut found: HashMap<String, Vec<u8>> = HashMap::new();
        self.read(|tx| {
            for chunk in keys.chunks(MAX_KEYS_PER_QUERY) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT key, value FROM kv WHERE ns = ? AND key IN ({marks})
                     AND (expires IS NULL OR expires > ?)"
                );
                let mut st = tx.prepare_cached(&sql)?;
                let args = std::iter::once(&ns as &dyn ToSql)
                    .chain(chunk.iter().map(|k| k as &dyn ToSql))
                    .chain(std::iter::once(&now as &dyn ToSql));
                let mut rows = st.query(params_from_iter(args))?;
                while let Some(r) = rows.next()? {
                    found.insert(r.get(0)?, r.get(1)?);
                }
            }
            Ok(())
        })?;
        Ok(keys.iter().map(|k| found.get(*k).cloned()).collect())
    }

    fn may_hold_any(&self, ns: Ns) -> Result<bool> {
        // Rows of a namespace are in key order: the first row is found by the primary key
        // (expired rows count until the purge deletes them: "may").
        let conn = self.conn.lock();
        conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM kv WHERE ns = ?1)")
            .and_then(|mut st| st.query_row(params![ns.as_str()], |r| r.get(0)))
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

    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let now = sql_ms(now_ms());
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE kv SET expires = ?5 WHERE ns = ?1 AND key = ?2 AND value = ?3
                 AND (expires IS NULL OR expires > ?4)",
            )?
            .execute(params![ns.as_str(), key, value, now, expiry(Some(ttl))])
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

    fn read_expiring(&self, keys: &[String], _ttl: Duration) -> Result<Vec<i64>> {
        let now = sql_ms(now_ms());
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT CAST(value AS INTEGER) FROM kv WHERE ns = 'counter' AND key = ?1
                 AND (expires IS NULL OR expires > ?2)",
            )?;
            keys.iter()
                .map(|k| {
                    Ok(st
                        .query_row(params![k, now], |r| r.get(0))
                        .optional()?
                        .unwrap_or(0))
                })
                .collect()
        })
    }
}

/// The `kv` namespaces of chord bookkeeping: members counted, their items, the counts.
const CHORD_MARK: &str = "chord:mark";
const CHORD_ITEM: &str = "chord:item";
const CHORD_COUNT: &str = "chord:count";

/// Count one chord member in the batch's transaction (see [`ChordCount`]); returns the callback
/// to enqueue when it was the last one.
pub(super) fn count_chord(
    tx: &Transaction<'_>,
    c: &ChordCount,
    now: i64,
) -> rusqlite::Result<Option<Ready>> {
    let member = |i: u32| format!("{}:{i}", c.chord);
    let expires = now.saturating_add(sql_ms(ms(c.ttl)));
    let marked = tx
        .prepare_cached(
            "INSERT INTO kv(ns, key, value, expires) VALUES(?1, ?2, x'', ?3)
             ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value, expires = excluded.expires
             WHERE kv.expires <= ?4",
        )?
        .execute(params![CHORD_MARK, member(c.index), expires, now])?;
    if marked == 0 {
        return Ok(None); // counted before: it ran twice
    }
    tx.prepare_cached("INSERT OR REPLACE INTO kv(ns, key, value, expires) VALUES(?1, ?2, ?3, ?4)")?
        .execute(params![CHORD_ITEM, member(c.index), c.outcome, expires])?;
    // A count that expired starts over; a live one keeps the expiry it was created with.
    tx.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND expires <= ?3")?
        .execute(params![CHORD_COUNT, c.chord, now])?;
    let count: i64 = tx
        .prepare_cached(
            "INSERT INTO kv(ns, key, value, expires) VALUES(?1, ?2, 1, ?3)
             ON CONFLICT(ns, key) DO UPDATE SET value = CAST(kv.value AS INTEGER) + 1
             RETURNING CAST(value AS INTEGER)",
        )?
        .query_row(params![CHORD_COUNT, c.chord, expires], |r| r.get(0))?;
    if count != i64::from(c.size) {
        return Ok(None);
    }
    let mut read =
        tx.prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND expires > ?3")?;
    let items = (0..c.size)
        .map(|i| {
            read.query_row(params![CHORD_ITEM, member(i), now], |r| r.get(0))
                .optional()
        })
        .collect::<rusqlite::Result<Vec<Option<Vec<u8>>>>>()?;
    let ready = c.callback.ready(items.iter().map(|i| i.as_deref()));
    let mut delete = tx.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?;
    for i in 0..c.size {
        delete.execute(params![CHORD_ITEM, member(i)])?;
    }
    delete.execute(params![CHORD_COUNT, c.chord])?;
    // Marks stay until they expire, so a member that runs again is not counted again; expired
    // ones go with the consumer's purge (indexed by expiry), never by a scan here.
    Ok(Some(ready))
}
