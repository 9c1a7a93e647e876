//! Per-minute outcome counters: kept in memory by each consumer, added to the storage's
//! expiring counters in one write per outcome kind and minute, read back by
//! [`Huey::throughput`].

use std::collections::BTreeMap;

use super::{MinuteStats, STATS_HISTORY};
use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::Result;
use crate::events::EventKind;
use crate::storage::Storage;

const MINUTE_MS: u64 = 60_000;

/// The counter an event adds to, if any.
pub fn outcome_of(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::Complete => "complete",
        EventKind::Error => "error",
        EventKind::Retrying => "retry",
        EventKind::Timeout => "timeout",
        EventKind::Revoked => "revoked",
        EventKind::Expired => "expired",
        EventKind::WorkerLost => "worker_lost",
        EventKind::DeadLettered => "dead",
        EventKind::Canceled => "canceled",
        EventKind::Locked => "locked",
        EventKind::RateLimited => "rate_limited",
        EventKind::Enqueued
        | EventKind::Scheduled
        | EventKind::Executing
        | EventKind::Interrupted => return None,
    })
}

fn key(minute_ms: u64, name: &str) -> String {
    format!("stats:{minute_ms}:{name}")
}

/// The start of the minute of `ms`.
pub fn minute_of(ms: u64) -> u64 {
    ms - ms % MINUTE_MS
}

/// Counts not yet written: (minute, outcome) → count.
#[derive(Debug, Default)]
pub struct Pending(pub BTreeMap<(u64, &'static str), u64>);

impl Pending {
    pub fn add(&mut self, at_ms: u64, outcome: &'static str) {
        *self.0.entry((minute_of(at_ms), outcome)).or_default() += 1;
    }

    /// Add the counts to the storage; what could not be written stays for the next time.
    pub fn flush(&mut self, storage: &dyn Storage) -> Result<()> {
        while let Some((&(minute, name), &n)) = self.0.iter().next() {
            storage.incr_expiring(&key(minute, name), n as i64, STATS_HISTORY)?;
            self.0.remove(&(minute, name));
        }
        Ok(())
    }
}

impl Huey {
    /// Outcomes per minute over the last `minutes` minutes (the current one included), oldest
    /// first, as counted by every consumer of the app. Kept for a day.
    pub fn throughput(&self, minutes: u32) -> Result<Vec<MinuteStats>> {
        let storage = self.storage();
        let now = minute_of(now_ms());
        let minutes = u64::from(minutes.min((STATS_HISTORY.as_secs() / 60) as u32));
        let starts: Vec<u64> = (0..minutes)
            .rev()
            .map(|back| now.saturating_sub(back * MINUTE_MS))
            .collect();
        let keys: Vec<String> = starts
            .iter()
            .flat_map(|&m| MinuteStats::NAMES.iter().map(move |n| key(m, n)))
            .collect();
        let values = storage.read_expiring(&keys, STATS_HISTORY)?;
        let mut values = values.into_iter();
        let mut out = Vec::with_capacity(starts.len());
        for minute_ms in starts {
            let mut m = MinuteStats {
                minute_ms,
                ..MinuteStats::default()
            };
            for name in MinuteStats::NAMES {
                let n = values.next().unwrap_or(0);
                if let Some(f) = m.field_mut(name) {
                    *f = n.max(0) as u64;
                }
            }
            out.push(m);
        }
        Ok(out)
    }
}
