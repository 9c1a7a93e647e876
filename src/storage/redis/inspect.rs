//! Inspection of a Redis storage: counts, listings, dead letters, flushing.

use ::redis::Value;
use serde::Deserialize;

use super::scripts::DEAD_BODY;
use super::{bytes, string, RedisStorage};
use crate::error::Result;
use crate::storage::{priority_of, Counts, DeadLetter, Flush, Inspect, Location, QueueSize};

#[derive(Deserialize)]
struct DeadInfo {
    #[serde(default)]
    id: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    error: String,
}

impl RedisStorage {
    fn dead_entries(&self, limit: i64) -> Result<Vec<DeadLetter>> {
        let mut inv = self.call(&self.scripts.dead);
        inv.arg(limit);
        let reply: Vec<Value> = self.invoke(true, &inv)?;
        let mut out = Vec::new();
        let mut it = reply.into_iter();
        while let Some(key) = it.next() {
            let (Some(key), Some(at), Some(info), Some(payload)) = (
                string(key),
                it.next().and_then(string),
                it.next().and_then(bytes),
                it.next().and_then(bytes),
            ) else {
                return Err(self.corrupt("dead"));
            };
            let info: DeadInfo = serde_json::from_slice(&info).map_err(|_| self.corrupt("dead"))?;
            out.push(DeadLetter {
                key,
                id: info.id,
                queue: info.queue,
                payload,
                error: info.error,
                at_ms: at.parse::<f64>().map(|f| f as u64).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

impl Inspect for RedisStorage {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn counts(&self) -> Result<Counts> {
        let inv = self.call(&self.scripts.counts);
        let c: Vec<i64> = self.invoke(true, &inv)?;
        let [ready, scheduled, in_flight, results, dead] = c[..] else {
            return Err(self.corrupt("counts"));
        };
        let n = |v: i64| v.max(0) as u64;
        Ok(Counts {
            ready: n(ready),
            scheduled: n(scheduled),
            in_flight: n(in_flight),
            results: n(results),
            dead: n(dead),
        })
    }

    fn pending(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.call(&self.scripts.pending);
        inv.arg(lua_limit(limit));
        self.invoke(true, &inv)
    }

    fn scheduled(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.call(&self.scripts.scheduled);
        inv.arg(lua_limit(limit));
        let reply: Vec<Value> = self.invoke(true, &inv)?;
        let mut out = Vec::new();
        let mut it = reply.into_iter();
        while let (Some(eta), Some(payload)) = (it.next(), it.next()) {
            let eta = string(eta)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| self.corrupt("scheduled"))?;
            let payload = bytes(payload).ok_or_else(|| self.corrupt("scheduled"))?;
            out.push((eta as u64, payload));
        }
        Ok(out)
    }

    fn dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.dead_entries(lua_limit(limit))
    }

    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize> {
        // The priority is inside the payload, which only Rust can decode: read, then move.
        let chosen: Vec<(String, i32)> = match keys {
            None => self
                .dead_entries(-1)?
                .into_iter()
                .map(|d| {
                    let p = priority_of(&d.payload);
                    (d.key, p)
                })
                .collect(),
            Some(keys) => {
                if keys.is_empty() {
                    return Ok(0);
                }
                let body = &self.keys[DEAD_BODY];
                let payloads: Vec<Option<Vec<u8>>> = self.pool.run(true, |con| {
                    ::redis::cmd("HMGET").arg(body).arg(keys).query(con)
                })?;
                keys.iter()
                    .zip(payloads)
                    .filter_map(|(k, p)| p.map(|p| (k.clone(), priority_of(&p))))
                    .collect()
            }
        };
        if chosen.is_empty() {
            return Ok(0);
        }
        // A script call per chunk: one call moving 100 000 letters would hold the server (and
        // every consumer and producer on it) for seconds.
        let mut moved = 0;
        for chunk in chosen.chunks(RETRY_CHUNK) {
            let mut inv = self.call(&self.scripts.retry_dead);
            for (k, p) in chunk {
                inv.arg(k).arg(*p);
            }
            let n: i64 = self.invoke(false, &inv)?;
            moved += n.max(0) as usize;
        }
        Ok(moved)
    }

    fn locate(&self, id: &str) -> Result<Option<Location>> {
        self.locate_id(id)
    }

    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        self.sizes()
    }

    fn flush(&self, what: Flush) -> Result<()> {
        let mut inv = self.call(&self.scripts.flush);
        for part in [
            what.queue,
            what.schedule,
            what.results,
            what.locks,
            what.dead,
            what.kv,
        ] {
            inv.arg(part as u8);
        }
        let _: i64 = self.invoke(true, &inv)?;
        Ok(())
    }
}

/// Dead letters put back per script call.
const RETRY_CHUNK: usize = 500;

/// A listing limit as Lua scripts can use it: numbers above 2^53 lose precision as Lua floats,
/// and `ZRANGE` refuses a float, so "everything" is capped well below that.
fn lua_limit(limit: usize) -> i64 {
    const MOST: usize = 1 << 40;
    limit.min(MOST) as i64
}
