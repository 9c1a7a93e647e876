//! Results of a Redis storage: reads, and waits woken by the writer (a waiter registers in the
//! same script as its read, so the write of the result knows to wake it).

use std::time::{Duration, Instant};

use super::{capped_ms, RedisStorage};

/// The place of the index of result ids (by expiry) among the storage's keys.
const RESULTS_INDEX: usize = 9;
use crate::error::Result;
use crate::storage::results::Pending;
use crate::storage::{deadline, Results};

/// How much longer than its wait a result waiter stays registered (`wt:<id>`).
const WAITER_MARGIN: Duration = Duration::from_secs(1);

impl RedisStorage {
    /// Read a result; `wait`: the caller will block up to this long for it if it is not there
    /// (it is then registered as a waiter, for the writer to wake).
    pub(super) fn read_result(
        &self,
        id: &str,
        take: bool,
        pass_on: bool,
        wait: Option<Duration>,
    ) -> Result<Option<Vec<u8>>> {
        let mut inv = self.call(&self.scripts.result);
        let wait_ms = wait.map_or(0, |w| capped_ms(w.saturating_add(WAITER_MARGIN)));
        inv.arg(id).arg(take as u8).arg(pass_on as u8).arg(wait_ms);
        self.invoke(!take, &inv)
    }
}

impl Results for RedisStorage {
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>> {
        self.read_result(id, take, false, None)
    }

    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = deadline(timeout);
        let left = || deadline.saturating_duration_since(Instant::now());
        if let Some(v) = self.read_result(id, take, false, Some(left()))? {
            return Ok(Some(v));
        }
        let wake = format!("{}w:{id}", self.prefix);
        let mut broke = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let block = deadline - now;
            let blpop = self.pool.run_blocking_once(block, |con| {
                ::redis::cmd("BLPOP")
                    .arg(&wake)
                    .arg(block.as_secs_f64().max(0.001))
                    .query(con)
            });
            let woken: Option<(String, String)> = match blpop {
                Ok(woken) => woken,
                // The connection broke (a server restart loses the registration): read and
                // register again on a fresh one (that read's error, if any, is the answer),
                // then block again. Twice in a row: the error is the answer.
                Err(e) if broke => return Err(e),
                Err(_) => {
                    broke = true;
                    match self.read_result(id, take, false, Some(left()))? {
                        Some(v) => return Ok(Some(v)),
                        None => continue,
                    }
                }
            };
            broke = false;
            let v = self.read_result(id, take, woken.is_some(), Some(left()))?;
            if v.is_some() || woken.is_none() {
                return Ok(v);
            }
        }
    }

    fn watch_results(
        &self,
        watcher: &str,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        self.watch(watcher, pending, timeout)
    }

    fn wake_watcher(&self, watcher: &str) -> Result<()> {
        self.wake(watcher)
    }

    /// Reads the index of live result ids and sorts it for each page (results have no id
    /// order in Redis): meant for admin listings, not for hot paths.
    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let now = crate::clock::now_ms();
        let index = &self.keys[RESULTS_INDEX];
        let mut ids: Vec<String> = self.pool.run(true, |con| {
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg(format!("({now}"))
                .arg("+inf")
                .query(con)
        })?;
        ids.retain(|id| id.as_str() > after);
        ids.sort_unstable();
        ids.truncate(limit);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}r:{id}", self.prefix))
            .collect();
        let values: Vec<Option<Vec<u8>>> = self
            .pool
            .run(true, |con| ::redis::cmd("MGET").arg(&keys).query(con))?;
        // A result taken or expired between the two reads is left out.
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, v)| v.map(|v| (id, v)))
            .collect())
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        let mut inv = self.call(&self.scripts.delete_result);
        inv.arg(id);
        let n: i64 = self.invoke(true, &inv)?;
        Ok(n > 0)
    }
}
