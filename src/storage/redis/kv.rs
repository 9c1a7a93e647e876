//! Key-value entries and counters of a Redis storage.

use std::time::Duration;

use ::redis::Commands;

use super::scripts::COUNTERS;
use super::{capped_ms, RedisStorage};
use crate::error::Result;
use crate::storage::{Kv, Ns};

impl RedisStorage {
    fn kv_put(
        &self,
        ns: Ns,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        only_if_empty: bool,
    ) -> Result<bool> {
        let mut inv = self.call(&self.scripts.kv_put);
        inv.arg(ns.as_str())
            .arg(key)
            .arg(value)
            .arg(ttl.map(|t| capped_ms(t).to_string()).unwrap_or_default())
            .arg(only_if_empty as u8);
        let written: i64 = self.invoke(!only_if_empty, &inv)?;
        Ok(written == 1)
    }
}

/// Keys per MGET of [`Kv::get_many`] (each chunk one command of a single pipeline).
const MAX_KEYS_PER_MGET: usize = 1000;

impl Kv for RedisStorage {
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let k = format!("{}kv:{}:{key}", self.prefix, ns.as_str());
        self.pool.run(true, |con| con.get(&k))
    }

    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Entries expire with their Redis TTL, as for `get`: an MGET per chunk, all in one
        // pipeline (one round trip).
        let full: Vec<String> = keys
            .iter()
            .map(|k| format!("{}kv:{}:{k}", self.prefix, ns.as_str()))
            .collect();
        let mut pipe = ::redis::pipe();
        for chunk in full.chunks(MAX_KEYS_PER_MGET) {
            pipe.cmd("MGET").arg(chunk);
        }
        let chunks: Vec<Vec<Option<Vec<u8>>>> = self.pool.run(true, |con| pipe.query(con))?;
        let out: Vec<Option<Vec<u8>>> = chunks.into_iter().flatten().collect();
        if out.len() != keys.len() {
            return Err(self.corrupt("get_many"));
        }
        Ok(out)
    }

    fn may_hold_any(&self, ns: Ns) -> Result<bool> {
        // Every entry is in its namespace's index (expired ones until trimmed).
        let index = format!("{}kvi:{}", self.prefix, ns.as_str());
        let n: i64 = self.pool.run(true, |con| con.zcard(&index))?;
        Ok(n > 0)
    }

    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.kv_put(ns, key, value, ttl, false).map(|_| ())
    }

    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        self.kv_put(ns, key, value, ttl, true)
    }

    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool> {
        let mut inv = self.call(&self.scripts.kv_delete_if);
        inv.arg(ns.as_str()).arg(key).arg(value);
        let n: i64 = self.invoke(false, &inv)?;
        Ok(n > 0)
    }

    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut inv = self.call(&self.scripts.kv_renew_if);
        inv.arg(ns.as_str())
            .arg(key)
            .arg(value)
            .arg(capped_ms(ttl).max(1).to_string());
        let n: i64 = self.invoke(false, &inv)?;
        Ok(n > 0)
    }

    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let mut inv = self.call(&self.scripts.kv_take);
        inv.arg(ns.as_str()).arg(key);
        self.invoke(false, &inv)
    }

    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>> {
        let mut inv = self.call(&self.scripts.kv_list);
        inv.arg(ns.as_str());
        let reply: Vec<Vec<u8>> = self.invoke(true, &inv)?;
        let mut out = Vec::with_capacity(reply.len() / 2);
        let mut it = reply.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let k = String::from_utf8(k).map_err(|_| self.corrupt("list"))?;
            out.push((k, v));
        }
        out.sort();
        Ok(out)
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        let counters = &self.keys[COUNTERS];
        self.pool.run(false, |con| con.hincr(counters, key, by))
    }

    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let mut inv = self.call(&self.scripts.incr_expiring);
        inv.arg(key).arg(by).arg(capped_ms(ttl).max(1));
        self.invoke(false, &inv)
    }

    fn read_expiring(&self, keys: &[String], _ttl: Duration) -> Result<Vec<i64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = keys
            .iter()
            .map(|k| format!("{}ctr:{k}", self.prefix))
            .collect();
        let values: Vec<Option<i64>> = self
            .pool
            .run(true, |con| ::redis::cmd("MGET").arg(&names).query(con))?;
        Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
    }
}
