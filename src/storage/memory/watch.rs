//! Watching many results at once, woken by every write (see
//! [`Results::watch_results`](crate::storage::Results::watch_results)).

use std::time::Duration;

use super::{MemoryStorage, State};
use crate::clock::now_ms;
use crate::error::Result;
use crate::storage::results::Pending;

impl MemoryStorage {
    /// Reads `pending` and returns the ids with a live result; when there is none, first waits
    /// for the next write or `timeout`. The check and the wait are under the storage's lock, so
    /// no write falls between them.
    pub(super) fn watch(&self, pending: Pending, timeout: Duration) -> Result<Vec<String>> {
        let mut st = self.state.lock();
        let now = now_ms();
        let ready: Vec<String> = pending()
            .into_iter()
            .filter(|id| State::live(st.results.get(id), now).is_some())
            .collect();
        if ready.is_empty() {
            self.changed.wait_for(&mut st, timeout);
        }
        Ok(ready)
    }
}
