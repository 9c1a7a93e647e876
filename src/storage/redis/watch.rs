//! Watching many results at once (see
//! [`Results::watch_results`](crate::storage::Results::watch_results)): one `BLPOP` on the
//! wake-up lists of every watched id plus the watcher's own list, on one connection, instead of
//! one blocked connection per waiter.

use std::time::Duration;

use super::RedisStorage;
use crate::error::Result;
use crate::storage::results::Pending;

/// How long a watcher's wake-up list lives without being read.
const WAKE_TTL_MS: u64 = 60_000;

impl RedisStorage {
    fn watcher_key(&self, watcher: &str) -> String {
        format!("{}aw:{watcher}", self.prefix)
    }

    /// Blocks until a result writer pushes to `w:<id>` for one of the ids of `pending`, or
    /// [`RedisStorage::wake`] pushes to the watcher's list, or `timeout` passes. A token pushed
    /// before the `BLPOP` is found at once (writers' tokens live 10 s), so nothing written
    /// between the waiter's own read and this call is missed.
    pub(super) fn watch(
        &self,
        watcher: &str,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let own = self.watcher_key(watcher);
        let wake_prefix = format!("{}w:", self.prefix);
        let mut keys = vec![own.clone()];
        keys.extend(pending().iter().map(|id| format!("{wake_prefix}{id}")));
        let secs = timeout.as_secs_f64().max(0.001);
        let popped: Option<(String, String)> = self.pool.run_blocking(timeout, |con| {
            ::redis::cmd("BLPOP").arg(&keys).arg(secs).query(con)
        })?;
        let Some(id) =
            popped.and_then(|(key, _)| key.strip_prefix(&wake_prefix).map(str::to_owned))
        else {
            return Ok(Vec::new());
        };
        // Pass the wake-up on to other waiters of the same id (other processes' `wait_result`)
        // when the result is still there, as a woken `wait_result` does.
        Ok(match self.read_result(&id, false, true)? {
            Some(_) => vec![id],
            None => Vec::new(),
        })
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
