//! Progress reports from running tasks (huey #326, Celery's `update_state`).
//!
//! Task code calls [`crate::TaskContext::progress`]`(done, total, message)`; producers read the
//! last report with [`crate::TaskResult::progress`] and `hueyd inspect` shows it. A report is a
//! small JSON record in the storage's `Data` namespace under the reserved key prefix
//! `huey.progress:` (the task id follows), written with a TTL that each report renews, so it
//! stays readable while the task runs and for [`PROGRESS_TTL`] after the last report (past the
//! result). Reports are throttled: at most one write per [`MIN_INTERVAL`] per attempt, except
//! that a report with `done >= total` is always written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::storage::{Ns, Storage};

/// The reserved key prefix in `Ns::Data`.
pub const KEY_PREFIX: &str = "huey.progress:";

/// How long a report is kept after the last one.
pub const PROGRESS_TTL: Duration = Duration::from_secs(24 * 3600);

/// The least time between two written reports of one attempt.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// The longest message kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A task's last progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units of work done.
    pub done: u64,
    /// Units of work in all (0 when unknown).
    pub total: u64,
    /// What the task says it is doing.
    pub message: String,
    /// When it was reported (ms since the epoch).
    pub at_ms: u64,
}

impl Progress {
    /// `done / total` in `[0, 1]`, or `None` when the total is unknown (0).
    pub fn fraction(&self) -> Option<f64> {
        (self.total > 0).then(|| (self.done as f64 / self.total as f64).min(1.0))
    }
}

/// The throttle of one attempt's reports.
/// (Clones of a task's context share it.)
#[derive(Debug, Default, Clone)]
pub(crate) struct Throttle(Arc<Mutex<Option<Instant>>>);

fn key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

fn cut(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

/// Write a report unless the throttle holds it back; returns whether it was written.
pub(crate) fn report(
    storage: &dyn Storage,
    throttle: &Throttle,
    id: &str,
    done: u64,
    total: u64,
    message: &str,
) -> Result<bool> {
    let now = Instant::now();
    {
        let mut last = throttle.0.lock();
        let finished = total > 0 && done >= total;
        if !finished && last.is_some_and(|t| now.duration_since(t) < MIN_INTERVAL) {
            return Ok(false);
        }
        *last = Some(now);
    }
    let p = Progress {
        done,
        total,
        message: cut(message),
        at_ms: crate::clock::now_ms(),
    };
    let bytes = serde_json::to_vec(&p).unwrap_or_default();
    storage.put(Ns::Data, &key(id), &bytes, Some(PROGRESS_TTL))?;
    Ok(true)
}

/// The last report of task `id`, if any (a record that does not decode counts as none).
pub fn read(storage: &dyn Storage, id: &str) -> Result<Option<Progress>> {
    Ok(storage
        .get(Ns::Data, &key(id))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let c = cut(&long);
        assert!(c.len() <= MAX_MESSAGE_BYTES && c.chars().all(|ch| ch == 'é'));
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn fraction() {
        let p = |done, total| Progress {
            done,
            total,
            message: String::new(),
            at_ms: 0,
        };
        assert_eq!(p(1, 4).fraction(), Some(0.25));
        assert_eq!(p(9, 4).fraction(), Some(1.0));
        assert_eq!(p(3, 0).fraction(), None);
    }
}
