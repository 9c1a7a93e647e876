//! Inspection of a SQLite storage: counts, listings, dead letters, flushing.

use rusqlite::{params, OptionalExtension};

use super::{limit, sql_ms, SqliteStorage};
use crate::clock::now_ms;
use crate::error::Result;
use crate::storage::{priority_of, Counts, DeadLetter, Flush, Inspect, Location, Ns, QueueSize};

impl Inspect for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
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
                let priority = priority_of(&payload);
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
            // Unique tasks' claims go with their messages (those of the part flushed only).
            for (flushed, table) in [(what.queue, "queue"), (what.schedule, "schedule")] {
                if flushed {
                    tx.execute(
                        &format!(
                            "DELETE FROM kv WHERE ns = ?1 AND key IN \
                             (SELECT 'unique:' || id FROM {table})"
                        ),
                        params![Ns::Claims.as_str()],
                    )?;
                }
            }
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

    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        let now = sql_ms(now_ms());
        self.read(|tx| {
            tx.prepare_cached(
                "SELECT queue, SUM(lease_until IS NULL OR lease_until <= ?1), SUM(lease_until > ?1)
                 FROM queue GROUP BY queue ORDER BY queue",
            )?
            .query_map(params![now], |r| {
                Ok(QueueSize {
                    queue: r.get(0)?,
                    ready: r.get::<_, i64>(1)?.max(0) as u64,
                    in_flight: r.get::<_, Option<i64>>(2)?.unwrap_or(0).max(0) as u64,
                })
            })?
            .collect()
        })
    }

    fn locate(&self, id: &str) -> Result<Option<Location>> {
        let now = sql_ms(now_ms());
        self.read(|tx| {
            let queued = tx
                .prepare_cached(
                    "SELECT seq, queue, priority, payload, deliveries, lease_owner, lease_until
                     FROM queue WHERE id = ?1 ORDER BY lease_until > ?2 DESC, seq LIMIT 1",
                )?
                .query_row(params![id, now], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i32>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<i64>>(6)?,
                    ))
                })
                .optional()?;
            if let Some((seq, queue, priority, payload, deliveries, owner, until)) = queued {
                return match until.filter(|&u| u > now) {
                    Some(until) => Ok(Some(Location::Leased {
                        queue,
                        consumer: owner,
                        until_ms: until.max(0) as u64,
                        deliveries: deliveries.clamp(0, u32::MAX as i64) as u32,
                        payload,
                    })),
                    None => {
                        let ahead: i64 = tx
                            .prepare_cached(
                                "SELECT COUNT(*) FROM queue WHERE queue = ?1
                                 AND (priority > ?2 OR (priority = ?2 AND seq < ?3))
                                 AND (lease_until IS NULL OR lease_until <= ?4)",
                            )?
                            .query_row(params![queue, priority, seq, now], |r| r.get(0))?;
                        Ok(Some(Location::Ready {
                            queue,
                            priority,
                            position: Some(ahead.max(0) as u64),
                            payload,
                        }))
                    }
                };
            }
            let scheduled = tx
                .prepare_cached(
                    "SELECT eta, payload FROM schedule WHERE id = ?1 ORDER BY eta LIMIT 1",
                )?
                .query_row(params![id], |r| {
                    Ok(Location::Scheduled {
                        eta_ms: r.get::<_, i64>(0)?.max(0) as u64,
                        payload: r.get(1)?,
                    })
                })
                .optional()?;
            if scheduled.is_some() {
                return Ok(scheduled);
            }
            tx.prepare_cached(
                "SELECT queue, error, at FROM dead WHERE id = ?1 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![id], |r| {
                Ok(Location::Dead {
                    queue: r.get(0)?,
                    error: r.get(1)?,
                    at_ms: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .optional()
        })
    }
}
