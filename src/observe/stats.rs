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

/// The counter an event adds to, if any: its index in [`MinuteStats::NAMES`].
pub fn outcome_of(kind: EventKind) -> Option<usize> {
    Some(match kind {
        EventKind::Complete => 0,
        EventKind::Error => 1,
        EventKind::Retrying => 2,
        EventKind::Timeout => 3,
        EventKind::Revoked => 4,
        EventKind::Expired => 5,
        EventKind::WorkerLost => 6,
        EventKind::DeadLettered => 7,
        EventKind::Canceled => 8,
        EventKind::Locked => 9,
        EventKind::RateLimited => 10,
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

const KINDS: usize = MinuteStats::NAMES.len();

/// Counts not yet written: the current minute's in an array (counting is an index and an
/// add), older minutes' in a map.
#[derive(Debug, Default)]
pub struct Pending {
    minute: u64,
    current: [u64; KINDS],
    older: BTreeMap<(u64, usize), u64>,
}

impl Pending {
    /// Count one outcome (an index from [`outcome_of`]) at `at_ms`.
    pub fn add(&mut self, at_ms: u64, outcome: usize) {
        let minute = minute_of(at_ms);
        if minute != self.minute {
            self.close_minute();
            self.minute = minute;
        }
        if let Some(c) = self.current.get_mut(outcome) {
            *c += 1;
        }
    }

    fn close_minute(&mut self) {
        for (i, n) in self.current.iter_mut().enumerate() {
            if *n > 0 {
                *self.older.entry((self.minute, i)).or_default() += *n;
                *n = 0;
            }
        }
    }

    /// Add `other`'s counts to these (counts that could not be written go back).
    pub fn merge(&mut self, mut other: Pending) {
        other.close_minute();
        self.close_minute();
        for (k, n) in other.older {
            *self.older.entry(k).or_default() += n;
        }
    }

    /// Add the counts to the storage, one call per minute and kind; what could not be
    /// written stays.
    pub fn flush(&mut self, storage: &dyn Storage) -> Result<()> {
        self.close_minute();
        while let Some((&(minute, i), &n)) = self.older.iter().next() {
            storage.incr_expiring(&key(minute, MinuteStats::NAMES[i]), n as i64, STATS_HISTORY)?;
            self.older.remove(&(minute, i));
        }
        Ok(())
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.older.is_empty() && self.current.iter().all(|&n| n == 0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Kv, MemoryStorage};

    #[test]
    fn counts_land_in_their_minute_and_unwritten_ones_are_kept() {
        let s = MemoryStorage::new();
        let t0 = minute_of(now_ms());
        let mut p = Pending::default();
        p.add(t0 + 5, 0);
        p.add(t0 + 59_999, 0);
        p.add(t0 + 60_000, 1);
        let mut later = Pending::default();
        later.add(t0 + 60_001, 1);
        p.merge(later);
        p.flush(&s).unwrap();
        assert!(p.is_empty());
        let keys = [key(t0, "complete"), key(t0 + 60_000, "error")];
        assert_eq!(s.read_expiring(&keys, STATS_HISTORY).unwrap(), [2, 2]);
    }

    #[test]
    fn every_outcome_kind_has_a_name() {
        for kind in [
            EventKind::Complete,
            EventKind::Error,
            EventKind::Retrying,
            EventKind::Timeout,
            EventKind::Revoked,
            EventKind::Expired,
            EventKind::WorkerLost,
            EventKind::DeadLettered,
            EventKind::Canceled,
            EventKind::Locked,
            EventKind::RateLimited,
        ] {
            let i = outcome_of(kind).unwrap();
            assert!(MinuteStats::default()
                .field_mut(MinuteStats::NAMES[i])
                .is_some());
        }
        assert_eq!(outcome_of(EventKind::Executing), None);
    }
}
