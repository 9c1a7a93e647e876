//! Results of a Redis storage: reads, and waits woken by the writer (a waiter registers in the
//! same script as its read, so the write of the result knows to wake it).

use std::time::{Duration, Instant};

use super::{capped_ms, RedisStorage};

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

    /// Pages through the index of result ids in id order (`ZRANGEBYLEX ... LIMIT`), reading
    /// only as many ids as the page needs (and any ids of results gone meanwhile, which the
    /// script drops from the index on the way).
    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut from = after.to_string();
        while out.len() < limit {
            let want = limit - out.len();
            let mut inv = self.call(&self.scripts.list_results);
            inv.arg(&from)
                .arg(want)
                .arg(want.saturating_add(100).min(5000));
            let reply: Vec<Vec<u8>> = self.invoke(true, &inv)?;
            let mut it = reply.into_iter();
            let next = it.next().unwrap_or_default();
            while let (Some(id), Some(v)) = (it.next(), it.next()) {
                let id = String::from_utf8(id).map_err(|_| self.corrupt("list_results"))?;
                out.push((id, v));
            }
            if next.is_empty() {
                break;
            }
            from = String::from_utf8(next).map_err(|_| self.corrupt("list_results"))?;
        }
        Ok(out)
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        let mut inv = self.call(&self.scripts.delete_result);
        inv.arg(id);
        let n: i64 = self.invoke(true, &inv)?;
        Ok(n > 0)
    }
}
