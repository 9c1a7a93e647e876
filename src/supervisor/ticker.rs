//! The periodic ticker: enqueues each periodic task once per matching time, at the start of
//! that minute (or second, for six-field schedules), whatever the consumer's start offset. It
//! looks at the current time only, so after a stall it does not enqueue a burst of missed runs.
//! Each run is enqueued in a batch that takes a claim on a key naming the task and the time
//! (written only if the claim is not held, claim and enqueue in one atomic write), so a restart
//! within the same minute does not enqueue it again, several consumers sharing one storage
//! enqueue it once between them, and a storage error cannot claim a run without enqueuing it.
//! The runs due in one second are one storage call; if it fails they are tried again on the
//! next turns (for up to a minute), which the claims make safe.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::lifecycle;
use crate::message::Message;
use crate::storage::{Batch, Claim};

/// How long a periodic claim is kept. It is needed only while some consumer could still look
/// at that second: this one after a restart, another whose clock is a little behind, or one
/// catching up a short stall (up to five seconds). Ten minutes covers all of them; then the
/// claim expires and the purge deletes it, so a once-a-minute task keeps about ten claims.
const CLAIM_TTL: Duration = Duration::from_secs(10 * 60);

/// How long runs whose write failed are tried again (well within the claim's life).
const RETRY_FOR_SECS: i64 = 60;

/// Decides which periodic tasks are due; the clock is passed in, so tests can drive it.
pub struct Ticker {
    app: Huey,
    last_second: Option<i64>,
    /// Runs whose write failed, to try again.
    unwritten: Vec<(String, DateTime<Utc>)>,
}

impl Ticker {
    /// A ticker for an app's periodic tasks.
    pub fn new(app: &Huey) -> Ticker {
        Ticker {
            app: app.clone(),
            last_second: None,
            unwritten: Vec::new(),
        }
    }

    /// The periodic runs due at `now`: `(task name, the time it is for)`. Each second is
    /// looked at once; a five-field schedule can only be due in the first second of a minute.
    /// Seconds skipped by a slow loop turn (up to five) are caught up; a longer stall is not.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        let sec = now.timestamp();
        let previous = self.last_second.replace(sec);
        if previous == Some(sec) {
            return Vec::new();
        }
        // Seconds not yet looked at: only a short gap is caught up, never a long stall.
        let from = match previous {
            Some(p) if p < sec && sec - p <= 5 => p + 1,
            _ => sec,
        };
        let mut out = Vec::new();
        for def in self.app.task_defs() {
            let Some(cron) = &def.periodic else { continue };
            for s in from..=sec {
                if !cron.has_seconds() && s % 60 != 0 {
                    continue;
                }
                let Some(at) = DateTime::from_timestamp(s, 0) else {
                    continue;
                };
                if cron.matches(at) {
                    out.push((def.name.clone(), at));
                }
            }
        }
        out
    }

    /// Claim and enqueue each due run (and those whose write failed before, for up to a
    /// minute) in one storage call; returns the names enqueued by this call. A run that cannot
    /// be encoded is logged and does not keep the others from being enqueued.
    pub fn enqueue_due(&mut self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut runs = std::mem::take(&mut self.unwritten);
        runs.retain(|(_, at)| (now - *at).num_seconds() < RETRY_FOR_SECS);
        runs.extend(self.due(now));
        let written_at = now_ms();
        let mut batches = Vec::new();
        let mut msgs = Vec::new();
        for (name, at) in runs {
            let Some(def) = self.app.task_def(&name) else {
                continue;
            };
            let args = postcard::to_allocvec(&()).unwrap_or_default();
            let opts = def.options.to_message_options(written_at);
            let msg = Message::new(name.clone(), args, opts);
            let mut batch = Batch {
                claim: Some(Claim {
                    key: format!("periodic:{name}:{}", at.timestamp()),
                    ttl: CLAIM_TTL,
                }),
                ..Batch::default()
            };
            match lifecycle::push_message(&mut batch, &msg, written_at) {
                Ok(()) => {
                    batches.push(batch);
                    msgs.push((name, at, msg));
                }
                Err(e) => tracing::error!(task = %name, "could not enqueue periodic task: {e}"),
            }
        }
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let written = match self.app.storage().apply_all(&batches) {
            Ok(w) => w,
            Err(e) => {
                self.unwritten = msgs.into_iter().map(|(n, at, _)| (n, at)).collect();
                return Err(e);
            }
        };
        let mut enqueued = Vec::new();
        // Not written: another consumer (or this one before a restart) has the run.
        for ((name, _, msg), w) in msgs.into_iter().zip(written) {
            if w {
                self.app
                    .emit(&Event::for_message(EventKind::Enqueued, &msg));
                enqueued.push(name);
            }
        }
        Ok(enqueued)
    }

    /// Enqueue what is due at `now`, logging what was enqueued and any storage error (the
    /// supervisor calls it every loop turn).
    pub(crate) fn tick(&mut self, now: DateTime<Utc>) {
        match self.enqueue_due(now) {
            Ok(names) => {
                for n in names {
                    tracing::info!(task = %n, "enqueued periodic task");
                }
            }
            Err(e) => tracing::error!("could not enqueue periodic tasks: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Crontab;
    use chrono::TimeZone;

    const BASE: i64 = 1_800_000_000;

    fn every_second() -> Huey {
        let app = Huey::open("ticker", "memory:").unwrap();
        app.task("tick")
            .periodic(Crontab::parse("* * * * * *").unwrap())
            .register(|(): ()| Ok::<_, String>(()))
            .unwrap();
        app
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(BASE + s, 0).unwrap()
    }

    /// The seconds (from `BASE`) due at `now`.
    fn due(t: &mut Ticker, now: i64) -> Vec<i64> {
        t.due(at(now))
            .into_iter()
            .map(|(_, when)| when.timestamp() - BASE)
            .collect()
    }

    #[test]
    fn gaps_of_up_to_five_seconds_are_caught_up_longer_ones_are_not() {
        let app = every_second();
        let mut t = Ticker::new(&app);
        assert_eq!(due(&mut t, 0), [0]);
        assert_eq!(due(&mut t, 0), [] as [i64; 0], "a second is looked at once");
        assert_eq!(due(&mut t, 5), [1, 2, 3, 4, 5]);
        assert_eq!(due(&mut t, 11), [11], "six seconds: a stall, not replayed");
    }

    #[test]
    fn a_clock_set_back_looks_at_the_current_second_only() {
        let app = every_second();
        let mut t = Ticker::new(&app);
        assert_eq!(due(&mut t, 10), [10]);
        assert_eq!(due(&mut t, 7), [7]);
        assert_eq!(due(&mut t, 9), [8, 9]);
    }

    #[test]
    fn tick_enqueues_each_run_once_even_across_a_restart() {
        let app = every_second();
        let mut t = Ticker::new(&app);
        t.tick(at(0));
        t.tick(at(0));
        Ticker::new(&app).tick(at(0));
        assert_eq!(app.storage().counts().unwrap().ready, 1);
        t.tick(at(2));
        assert_eq!(app.storage().counts().unwrap().ready, 3);
    }
}
