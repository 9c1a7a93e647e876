//! Inspection of a Postgres storage: counts, listings, dead letters, flushing.

use ::postgres::Row;

use super::{limit, notify, sql_ms, PostgresStorage};
use crate::clock::now_ms;
use crate::error::Result;
use crate::storage::{priority_of, Counts, DeadLetter, Flush, Inspect, Location, Ns, QueueSize};

fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

impl Inspect for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn counts(&self) -> Result<Counts> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            let r = c.query_one(
                "SELECT
                   (SELECT COUNT(*) FROM queue WHERE lease_until IS NULL OR lease_until <= $1),
                   (SELECT COUNT(*) FROM queue WHERE lease_until > $1),
                   (SELECT COUNT(*) FROM schedule),
                   (SELECT COUNT(*) FROM results WHERE expires IS NULL OR expires > $1),
                   (SELECT COUNT(*) FROM dead)",
                &[&now],
            )?;
            Ok(Counts {
                ready: unsigned(r.get(0)),
                in_flight: unsigned(r.get(1)),
                scheduled: unsigned(r.get(2)),
                results: unsigned(r.get(3)),
                dead: unsigned(r.get(4)),
            })
        })
    }

    fn pending(&self, limit_n: usize) -> Result<Vec<Vec<u8>>> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            let rows = c.query(
                "SELECT payload FROM queue WHERE lease_until IS NULL OR lease_until <= $1
                 ORDER BY priority DESC, seq LIMIT $2",
                &[&now, &limit(limit_n)],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn scheduled(&self, limit_n: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.pool.read(|c| {
            let rows = c.query(
                "SELECT eta, payload FROM schedule ORDER BY eta, seq LIMIT $1",
                &[&limit(limit_n)],
            )?;
            Ok(rows
                .iter()
                .map(|r| (unsigned(r.get(0)), r.get(1)))
                .collect())
        })
    }

    fn dead(&self, limit_n: usize) -> Result<Vec<DeadLetter>> {
        self.pool.read(|c| {
            let rows = c.query(
                "SELECT seq, id, queue, payload, error, at FROM dead ORDER BY seq LIMIT $1",
                &[&limit(limit_n)],
            )?;
            Ok(rows
                .iter()
                .map(|r| DeadLetter {
                    key: r.get::<_, i64>(0).to_string(),
                    id: r.get(1),
                    queue: r.get(2),
                    payload: r.get(3),
                    error: r.get(4),
                    at_ms: unsigned(r.get(5)),
                })
                .collect())
        })
    }

    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize> {
        let schema = self.schema().to_string();
        let n = self.pool.tx(|tx| {
            let seqs: Vec<i64> = match keys {
                None => tx
                    .query("SELECT seq FROM dead ORDER BY seq", &[])?
                    .iter()
                    .map(|r| r.get(0))
                    .collect(),
                Some(keys) => keys.iter().filter_map(|k| k.parse().ok()).collect(),
            };
            let mut n = 0;
            for seq in seqs {
                let Some(row) = tx.query_opt(
                    "DELETE FROM dead WHERE seq = $1 RETURNING id, queue, payload",
                    &[&seq],
                )?
                else {
                    continue;
                };
                let (id, queue, payload): (String, String, Vec<u8>) =
                    (row.get(0), row.get(1), row.get(2));
                let priority = priority_of(&payload);
                tx.execute(
                    "INSERT INTO queue(id, queue, priority, payload) VALUES($1, $2, $3, $4)",
                    &[&id, &queue, &priority, &payload],
                )?;
                n += 1;
            }
            if n > 0 {
                notify(tx, &schema)?;
            }
            Ok(n)
        })?;
        if n > 0 {
            self.signal.bump();
        }
        Ok(n)
    }

    fn flush(&self, what: Flush) -> Result<()> {
        self.pool.tx(|tx| {
            // Unique tasks' claims go with their messages (those of the part flushed only).
            for (flushed, table) in [(what.queue, "queue"), (what.schedule, "schedule")] {
                if flushed {
                    tx.execute(
                        &format!(
                            "DELETE FROM kv WHERE ns = $1 AND key IN \
                             (SELECT 'unique:' || id FROM {table})"
                        ),
                        &[&Ns::Claims.as_str()],
                    )?;
                }
            }
            if what.queue {
                tx.execute("DELETE FROM queue", &[])?;
            }
            if what.schedule {
                tx.execute("DELETE FROM schedule", &[])?;
            }
            if what.results {
                tx.execute("DELETE FROM results", &[])?;
            }
            if what.locks {
                tx.execute("DELETE FROM kv WHERE ns = $1", &[&Ns::Locks.as_str()])?;
            }
            if what.kv {
                tx.execute("DELETE FROM kv WHERE ns <> $1", &[&Ns::Locks.as_str()])?;
                tx.execute("DELETE FROM counters", &[])?;
            }
            if what.dead {
                tx.execute("DELETE FROM dead", &[])?;
            }
            Ok(())
        })
    }

    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            let rows = c.query(
                "SELECT queue,
                   COUNT(*) FILTER (WHERE lease_until IS NULL OR lease_until <= $1),
                   COUNT(*) FILTER (WHERE lease_until > $1)
                 FROM queue GROUP BY queue ORDER BY queue COLLATE \"C\"",
                &[&now],
            )?;
            Ok(rows
                .iter()
                .map(|r| QueueSize {
                    queue: r.get(0),
                    ready: unsigned(r.get(1)),
                    in_flight: unsigned(r.get(2)),
                })
                .collect())
        })
    }

    fn locate(&self, id: &str) -> Result<Option<Location>> {
        let now = sql_ms(now_ms());
        self.pool.read(|c| {
            let queued = c.query_opt(
                "SELECT seq, queue, priority, payload, deliveries, lease_owner, lease_until
                 FROM queue WHERE id = $1
                 ORDER BY coalesce(lease_until > $2, false) DESC, seq LIMIT 1",
                &[&id, &now],
            )?;
            if let Some(r) = queued {
                return located(c, &r, now).map(Some);
            }
            let scheduled = c.query_opt(
                "SELECT eta, payload FROM schedule WHERE id = $1 ORDER BY eta LIMIT 1",
                &[&id],
            )?;
            if let Some(r) = scheduled {
                return Ok(Some(Location::Scheduled {
                    eta_ms: unsigned(r.get(0)),
                    payload: r.get(1),
                }));
            }
            Ok(c.query_opt(
                "SELECT queue, error, at FROM dead WHERE id = $1 ORDER BY seq DESC LIMIT 1",
                &[&id],
            )?
            .map(|r| Location::Dead {
                queue: r.get(0),
                error: r.get(1),
                at_ms: unsigned(r.get(2)),
            }))
        })
    }
}

/// Where a queue row is: leased, or ready with how many run before it.
fn located(
    c: &mut ::postgres::Client,
    r: &Row,
    now: i64,
) -> std::result::Result<Location, ::postgres::Error> {
    let (seq, queue, priority, payload, deliveries, owner, until): (
        i64,
        String,
        i32,
        Vec<u8>,
        i32,
        Option<String>,
        Option<i64>,
    ) = (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
    );
    if let Some(until) = until.filter(|&u| u > now) {
        return Ok(Location::Leased {
            queue,
            consumer: owner,
            until_ms: unsigned(until),
            deliveries: u32::try_from(deliveries).unwrap_or(0),
            payload,
        });
    }
    let ahead: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM queue WHERE queue = $1
             AND (priority > $2 OR (priority = $2 AND seq < $3))
             AND (lease_until IS NULL OR lease_until <= $4)",
            &[&queue, &priority, &seq, &now],
        )?
        .get(0);
    Ok(Location::Ready {
        queue,
        priority,
        position: Some(unsigned(ahead)),
        payload,
    })
}
