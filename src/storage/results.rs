//! The results role: reading results written by a [`super::Batch`], and waiting for them.

use std::time::Duration;

use crate::error::Result;

/// The ids a [`Results::watch_results`] call watches, read once per call.
pub type Pending<'a> = &'a dyn Fn() -> Vec<String>;

/// Stored results (and stored errors), by task id.
pub trait Results {
    /// Read a result; `take` deletes it in the same step.
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>>;

    /// Like [`Results::result`], but wait up to `timeout` for it to be written.
    ///
    /// The default polls, starting at once and backing off to every 50 ms; backends that can
    /// be woken by the write override it.
    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = super::deadline(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(v) = self.result(id, take)? {
                return Ok(Some(v));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Wait for the results of many ids at once, for a shared waiter (the thread behind
    /// `TaskResult::wait_async`, which calls it in a loop).
    ///
    /// Calls `pending` once for the ids to watch, then blocks up to `timeout` until one of them
    /// has a result, something else changes in the storage, or [`Results::wake_watcher`] is
    /// called for `watcher`; returns the ids among them that have a (live) result, possibly
    /// none. An id added after `pending` ran is still covered when its adder reads the result
    /// itself after adding it, then calls `wake_watcher`.
    ///
    /// The default polls every id every 50 ms; backends that can be woken by writes override it.
    fn watch_results(
        &self,
        watcher: &str,
        pending: Pending,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let _ = watcher;
        let mut ready = Vec::new();
        for id in pending() {
            if self.result(&id, false)?.is_some() {
                ready.push(id);
            }
        }
        if ready.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_millis(50)));
        }
        Ok(ready)
    }

    /// Make a [`Results::watch_results`] call of `watcher` that is blocked return soon (its
    /// ids changed). The default does nothing: backends whose watch returns on any change need
    /// nothing more.
    fn wake_watcher(&self, watcher: &str) -> Result<()> {
        let _ = watcher;
        Ok(())
    }

    /// Up to `limit` live results whose ids sort after `after` ("" for the first page), in id
    /// order, without consuming them: page through all results by passing the last id seen
    /// (huey's `all_results()`, bounded). The default lists nothing; every backend overrides
    /// it.
    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// Delete a result; returns whether there was a live one.
    ///
    /// The default takes it; backends override it to skip reading the value.
    fn delete_result(&self, id: &str) -> Result<bool> {
        Ok(self.result(id, true)?.is_some())
    }
}
