//! Watching many results at once (see
//! [`Results::watch_results`](crate::storage::Results::watch_results)): one `BLPOP` on the
//! wake-up lists of every watched id plus the watcher's own list, on one connection, instead of
//! one blocked connection per waiter.
//!
//! A result's writer wakes only registered waiters (`wt:<id>`, see `results.rs`), so the
//! watcher registers each id it watches, in the same script as a read of it: a result written
//! before the registration is found by that read, one written after it wakes the `BLPOP`. An id
//! is registered once for [`REGISTRATION`] and again only when that runs low, so a call costs
//! one script per new id, not one per watched id.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::RedisStorage;
use crate::error::Result;
use crate::storage::results::Pending;

/// How long a watcher's wake-up list lives without being read.
const WAKE_TTL_MS: u64 = 60_000;

/// How long the watcher registers as an id's waiter at a time.
const REGISTRATION: Duration = Duration::from_secs(60);

thread_local! {
    /// Ids this thread is registered as a waiter of (prefixed key → registered until). Only the
    /// watcher thread of a storage calls `watch`, so a thread-local map is its own.
    static REGISTERED: RefCell<HashMap<String, Instant>> = RefCell::new(HashMap::new());
}

impl RedisStorage {
    fn watcher_key(&self, watcher: &str) -> String {
        format!("{}aw:{watcher}", self.prefix)
    }

    /// Register as a waiter of each id of `ids` not registered for at least `timeout` more;
    /// returns the ids whose result is already there.
    fn register_waiters(&self, ids: &[String], timeout: Duration) -> Result<Vec<String>> {
        let now = Instant::now();
        let due: Vec<&String> = REGISTERED.with(|r| {
            let mut r = r.borrow_mut();
            // Forget ids nobody watches any more (ours were for the ids of this storage's
            // prefix only, and a stale entry only costs a registration again).
            let watched: std::collections::HashSet<String> = ids
                .iter()
                .map(|id| format!("{}{id}", self.prefix))
                .collect();
            r.retain(|k, _| !k.starts_with(&self.prefix) || watched.contains(k));
            ids.iter()
                .filter(|id| {
                    r.get(&format!("{}{id}", self.prefix))
                        .is_none_or(|until| *until < now + timeout)
                })
                .collect()
        });
        let mut ready = Vec::new();
        for id in due {
            if self
                .read_result(id, false, false, Some(REGISTRATION))?
                .is_some()
            {
                ready.push(id.clone());
            }
            REGISTERED.with(|r| {
                r.borrow_mut()
                    .insert(format!("{}{id}", self.prefix), now + REGISTRATION)
            });
        }
        Ok(ready)
    }

    /// Blocks until a result writer pushes to `w:<id>` for one of the ids of `pending`, or
    /// [`RedisStorage::wake`] pushes to the watcher's list, or `timeout` passes.
    pub(super) fn watch(
        &self,
        watcher: &str,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let out = self.watch_once(watcher, pending, timeout);
        if out.is_err() {
            // The server may have restarted and lost the registrations (`wt:<id>`): register
            // every id again on the next call.
            REGISTERED.with(|r| r.borrow_mut().retain(|k, _| !k.starts_with(&self.prefix)));
        }
        out
    }

    fn watch_once(
        &self,
        watcher: &str,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let ids = pending();
        let ready = self.register_waiters(&ids, timeout)?;
        if !ready.is_empty() {
            return Ok(ready);
        }
        let own = self.watcher_key(watcher);
        let wake_prefix = format!("{}w:", self.prefix);
        let mut keys = vec![own.clone()];
        keys.extend(ids.iter().map(|id| format!("{wake_prefix}{id}")));
        let secs = timeout.as_secs_f64().max(0.001);
        let popped: Option<(String, String)> = self.pool.run_blocking_once(timeout, |con| {
            ::redis::cmd("BLPOP").arg(&keys).arg(secs).query(con)
        })?;
        let Some((key, _)) = popped else {
            return Ok(Vec::new());
        };
        // `BLPOP` takes one token; take every other one already there in the same turn, so a
        // burst of results costs one `BLPOP` over the watched ids, not one each (with
        // thousands of ids each of those is slow, and a token left waiting behind them long
        // enough expires: its waiter would then wait for the next registration).
        let mut woken: Vec<String> = self.take_tokens(&keys[1..], &key)?;
        woken.extend(key.strip_prefix(&wake_prefix).map(str::to_owned));
        let mut ready = Vec::new();
        for id in woken {
            // Pass the wake-up on to other waiters of the same id (other processes'
            // `wait_result`) when the result is still there, as a woken `wait_result` does.
            if self
                .read_result(&id, false, true, Some(REGISTRATION))?
                .is_some()
            {
                ready.push(id);
            }
        }
        Ok(ready)
    }

    /// Pop a token from each of the wake-up lists `keys` (but `popped`, already taken) in one
    /// round trip; returns the ids whose list had one.
    fn take_tokens(&self, keys: &[String], popped: &str) -> Result<Vec<String>> {
        let keys: Vec<&String> = keys.iter().filter(|k| k.as_str() != popped).collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<Option<String>> = self.pool.run(false, |con| {
            let mut pipe = ::redis::pipe();
            for k in &keys {
                pipe.cmd("LPOP").arg(*k);
            }
            pipe.query(con)
        })?;
        let wake_prefix = format!("{}w:", self.prefix);
        Ok(keys
            .iter()
            .zip(tokens)
            .filter(|(_, t)| t.is_some())
            .filter_map(|(k, _)| k.strip_prefix(&wake_prefix).map(str::to_owned))
            .collect())
    }

    /// Make the watcher's blocked `BLPOP` return.
    pub(super) fn wake(&self, watcher: &str) -> Result<()> {
        let key = self.watcher_key(watcher);
        self.pool.run(true, |con| {
            ::redis::pipe()
                .atomic()
                .cmd("LPUSH")
                .arg(&key)
                .arg("1")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(WAKE_TTL_MS)
                .ignore()
                .query::<()>(con)
        })
    }
}
