//! Key-value entries and counters of the in-memory storage.

use std::time::Duration;

use super::{expiry, MemoryStorage, State};
use crate::clock::now_ms;
use crate::error::Result;
use crate::storage::{Kv, Ns};

impl Kv for MemoryStorage {
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let st = self.state.lock();
        Ok(State::live(st.kv.get(&(ns, key.to_string())), now_ms()).cloned())
    }

    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let st = self.state.lock();
        let now = now_ms();
        Ok(keys
            .iter()
            .map(|k| State::live(st.kv.get(&(ns, k.to_string())), now).cloned())
            .collect())
    }

    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.state
            .lock()
            .kv
            .insert((ns, key.to_string()), (value.to_vec(), expiry(ttl)));
        Ok(())
    }

    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let mut st = self.state.lock();
        let k = (ns, key.to_string());
        if State::live(st.kv.get(&k), now_ms()).is_some() {
            return Ok(false);
        }
        st.kv.insert(k, (value.to_vec(), expiry(ttl)));
        Ok(true)
    }

    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool> {
        let mut st = self.state.lock();
        let k = (ns, key.to_string());
        if State::live(st.kv.get(&k), now_ms()).is_some_and(|v| v == value) {
            st.kv.remove(&k);
            return Ok(true);
        }
        Ok(false)
    }

    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut st = self.state.lock();
        let k = (ns, key.to_string());
        if State::live(st.kv.get(&k), now_ms()).is_some_and(|v| v == value) {
            st.kv.insert(k, (value.to_vec(), expiry(Some(ttl))));
            return Ok(true);
        }
        Ok(false)
    }

    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        let mut st = self.state.lock();
        let now = now_ms();
        Ok(st
            .kv
            .remove(&(ns, key.to_string()))
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(v, _)| v))
    }

    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>> {
        let st = self.state.lock();
        let now = now_ms();
        let mut out: Vec<_> = st
            .kv
            .iter()
            .filter(|((n, _), (_, exp))| *n == ns && exp.is_none_or(|e| e > now))
            .map(|((_, k), (v, _))| (k.clone(), v.clone()))
            .collect();
        out.sort();
        Ok(out)
    }

    fn incr(&self, key: &str, by: i64) -> Result<i64> {
        let mut st = self.state.lock();
        let c = st.counters.entry(key.to_string()).or_insert(0);
        *c += by;
        Ok(*c)
    }

    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let mut st = self.state.lock();
        let now = now_ms();
        st.expiring.retain(|_, (_, exp)| *exp > now);
        let until = expiry(Some(ttl)).unwrap_or(u64::MAX);
        let c = st.expiring.entry(key.to_string()).or_insert((0, until));
        c.0 += by;
        Ok(c.0)
    }
}
