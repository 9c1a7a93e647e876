//! The results role: reading results written by a [`super::Batch`], and waiting for them.

use std::time::Duration;

use crate::error::Result;

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

    /// Delete a result; returns whether there was a live one.
    ///
    /// The default takes it; backends override it to skip reading the value.
    fn delete_result(&self, id: &str) -> Result<bool> {
        Ok(self.result(id, true)?.is_some())
    }
}
