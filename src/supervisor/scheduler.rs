//! The scheduler: moves scheduled tasks whose time has come to their ready queues, once per
//! scheduler interval.

use std::time::{Duration, Instant};

use super::Every;
use crate::app::Huey;
use crate::clock::now_ms;

/// The periodic ticker used to live here; the old path still works.
pub use super::ticker::Ticker;

/// Tasks promoted per storage call (a long backlog takes several).
const PROMOTE_AT_ONCE: usize = 1000;

pub(super) struct Scheduler {
    every: Every,
}

impl Scheduler {
    /// A scheduler that first runs at `first`, then every `interval`.
    pub(super) fn new(interval: Duration, first: Instant) -> Scheduler {
        Scheduler {
            every: Every::new(interval, first),
        }
    }

    /// Promote the due scheduled tasks, if the interval has passed at `now`.
    pub(super) fn run(&mut self, app: &Huey, now: Instant) {
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
}
