//! Watching many results at once (see
//! [`Results::watch_results`](crate::storage::Results::watch_results)): one
//! `PRAGMA data_version` poll and one query per change for every waiter of a process, instead
//! of one each.

use std::time::Duration;

use rusqlite::params_from_iter;

use super::{sql_ms, SqliteStorage};
use crate::clock::now_ms;
use crate::error::Result;
use crate::storage::deadline;
use crate::storage::results::Pending;

/// Ids per query (SQLite allows 32,766 parameters; smaller statements stay cached).
const CHUNK: usize = 500;

impl SqliteStorage {
    /// Notes the current state, reads `pending`, returns the ids with a live result; when there
    /// is none, first waits for a write by this handle, a commit by another connection, the
    /// re-check interval or `timeout`, whichever comes first.
    pub(super) fn watch(&self, pending: Pending, timeout: Duration) -> Result<Vec<String>> {
        let deadline = deadline(timeout);
        let generation = self.generation();
        let dv = Self::data_version(&self.conn.lock()).map_err(|e| self.err(e))?;
        let ids = pending();
        let ready = self.with_results(&ids)?;
        if ready.is_empty() {
            self.wait_change(generation, dv, deadline)?;
        }
        Ok(ready)
    }

    /// The ids among `ids` that have a live result.
    fn with_results(&self, ids: &[String]) -> Result<Vec<String>> {
        let now = sql_ms(now_ms());
        let mut ready = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT id FROM results WHERE (expires IS NULL OR expires > {now}) \
                 AND id IN ({marks})"
            );
            self.read(|tx| {
                let mut st = tx.prepare(&sql)?;
                let rows = st.query_map(params_from_iter(chunk), |r| r.get::<_, String>(0))?;
                for id in rows {
                    ready.push(id?);
                }
                Ok(())
            })?;
        }
        Ok(ready)
    }
}
