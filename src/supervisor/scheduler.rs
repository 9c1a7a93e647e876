//! The scheduler: moves scheduled tasks whose time has come to their ready queues, once per
//! scheduler interval, and about once a minute deletes expired entries (results, claims,
//! counters, chord bookkeeping) so the storage does not grow with them.

use std::time::{Duration, Instant};

use super::Every;
use crate::app::Huey;
use crate::clock::now_ms;

/// The periodic ticker used to live here; the old path still works.
pub use super::ticker::Ticker;

/// Tasks promoted per storage call (a long backlog takes several).
const PROMOTE_AT_ONCE: usize = 1000;

/// How often expired entries are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Expired entries deleted per storage call (one short write transaction), and calls per
/// turn: a larger backlog is worked off over the next turns, so the loop is never held long.
const PURGE_AT_ONCE: usize = 500;
const PURGE_CALLS_PER_TURN: usize = 10;

pub(super) struct Scheduler {
    every: Every,
    purge: Every,
    /// The last purge stopped at its bound: go on at the next turn.
    purge_more: bool,
}

impl Scheduler {
    /// A scheduler that first runs at `first`, then every `interval`.
    pub(super) fn new(interval: Duration, first: Instant) -> Scheduler {
        Scheduler {
            every: Every::new(interval, first),
            purge: Every::new(PURGE_INTERVAL, first),
            purge_more: false,
        }
    }

    /// Promote the due scheduled tasks, if the interval has passed at `now`.
    pub(super) fn run(&mut self, app: &Huey, now: Instant) {
        // A purge that stopped at its bound goes on every turn until it catches up, so expired
        // entries are deleted as fast as they are written, a bounded amount at a time.
        if std::mem::take(&mut self.purge_more) || self.purge.due(now) {
            self.purge_more = purge(app) == PURGE_AT_ONCE * PURGE_CALLS_PER_TURN;
        }
        if !self.every.due(now) {
            return;
        }
        loop {
            match app.storage().promote_due(now_ms(), PROMOTE_AT_ONCE) {
                Ok(PROMOTE_AT_ONCE) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!("could not move due scheduled tasks: {e}");
                    break;
                }
            }
        }
    }
}

/// Delete expired entries, a bounded number of calls; returns how many were deleted.
fn purge(app: &Huey) -> usize {
    let mut total = 0;
    for _ in 0..PURGE_CALLS_PER_TURN {
        match app.storage().purge_expired(now_ms(), PURGE_AT_ONCE) {
            Ok(n) => {
                total += n;
                if n < PURGE_AT_ONCE {
                    break;
                }
            }
            Err(e) => {
                tracing::error!("could not delete expired entries: {e}");
                break;
            }
        }
    }
    if total > 0 {
        tracing::debug!(deleted = total, "deleted expired entries");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Batch, Ready, Scheduled};

    /// Schedule `n` tasks whose time came a minute ago.
    fn overdue(app: &Huey, n: usize) {
        let schedule = (0..n)
            .map(|i| Scheduled {
                eta_ms: now_ms() - 60_000,
                ready: Ready {
                    id: crate::message::new_id(),
                    queue: "default".into(),
                    priority: 0,
                    payload: vec![i as u8],
                },
            })
            .collect();
        let batch = Batch {
            schedule,
            ..Batch::default()
        };
        app.storage().apply(&batch).unwrap();
    }

    #[test]
    fn promotes_a_long_backlog_once_per_interval() {
        let app = Huey::open("scheduler", "memory:").unwrap();
        let counts = || {
            let c = app.storage().counts().unwrap();
            (c.ready, c.scheduled)
        };
        let backlog = 2 * PROMOTE_AT_ONCE + 1;
        overdue(&app, backlog);
        assert_eq!(counts(), (0, backlog as u64));

        let t0 = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1), t0);
        s.run(&app, t0);
        assert_eq!(counts(), (backlog as u64, 0), "all of it, in several calls");

        overdue(&app, 1);
        s.run(&app, t0 + Duration::from_millis(999));
        assert_eq!(counts().1, 1, "not before the interval has passed");
        s.run(&app, t0 + Duration::from_secs(1));
        assert_eq!(counts().1, 0);
    }

    #[test]
    fn purges_expired_entries_once_a_minute_and_a_backlog_over_the_next_turns() {
        use crate::storage::Ns;
        let app = Huey::open("scheduler", "memory:").unwrap();
        let at_once = PURGE_AT_ONCE * PURGE_CALLS_PER_TURN;
        let expire = |n: usize| {
            for i in 0..n {
                let ttl = Some(Duration::from_millis(1));
                app.storage()
                    .put(Ns::Claims, &format!("{n}:{i}"), b"1", ttl)
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // What is left to delete (counted by deleting it, so only at the end).
        let left = || app.storage().purge_expired(now_ms(), usize::MAX).unwrap();

        let t0 = Instant::now();
        let mut s = Scheduler::new(Duration::from_secs(1), t0);
        expire(at_once + 7);
        s.run(&app, t0);
        // The very next turn goes on with the backlog, though neither the minute nor the
        // scheduler's own interval has passed.
        expire(3);
        s.run(&app, t0 + Duration::from_millis(10));
        expire(5);
        s.run(&app, t0 + Duration::from_secs(2));
        assert_eq!(
            left(),
            5,
            "the backlog done, then nothing before the minute"
        );

        expire(4);
        s.run(&app, t0 + PURGE_INTERVAL);
        assert_eq!(left(), 0);
    }
}
