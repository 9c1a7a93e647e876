//! The periodic ticker: enqueues each periodic task once per matching time, at the start of
//! that minute (or second, for six-field schedules), whatever the consumer's start offset. It
//! looks at the current time only, so after a stall it does not enqueue a burst of missed runs.
//! Each run is enqueued in a batch that takes a claim on a key naming the task and the time
//! (written only if the claim is not held, claim and enqueue in one atomic write), so a restart
//! within the same minute does not enqueue it again, several consumers sharing one storage
//! enqueue it once between them, and a storage error cannot claim a run without enqueuing it.
//! The runs due in one second are one storage call; if it fails they are tried again (for up
//! to a minute, after a pause that grows with each failure in a row), which the claims make
//! safe.
//!
//! The schedules kept in the storage (see [`crate::periodic_store`]) run the same way, each
//! claimed under its own name; the ticker reads them again within a second of any change.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::app::Huey;
use crate::clock::now_ms;
use crate::crontab::Crontab;
use crate::error::Result;
use crate::events::{Event, EventKind};
use crate::lifecycle;
use crate::message::Message;
use crate::periodic_store::{RuntimeSchedule, VERSION_KEY};
use crate::storage::{Batch, Claim, DeadPut, Ns};

/// How long a periodic claim is kept. It is needed only while some consumer could still look
/// at that second: this one after a restart, another whose clock is a little behind, or one
/// catching up a short stall (up to five seconds). Ten minutes covers all of them; then the
/// claim expires and the purge deletes it, so a once-a-minute task keeps about ten claims.
const CLAIM_TTL: Duration = Duration::from_secs(10 * 60);

/// How long runs whose write failed are tried again (well within the claim's life).
const RETRY_FOR_SECS: i64 = 60;

/// The pause before runs whose write failed are tried again: this, doubled after each failure
/// in a row up to [`RETRY_PAUSE_MAX_MS`] (a storage that is down is not sent a write, nor an error
/// logged, on every turn of the consumer's loop).
const RETRY_PAUSE_MS: i64 = 100;
const RETRY_PAUSE_MAX_MS: i64 = 3_200;

/// What a periodic run is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A task defined with a periodic schedule in code: its name.
    Task(String),
    /// A schedule kept in the storage: its name.
    Schedule(String),
}

/// Decides which periodic tasks are due; the clock is passed in, so tests can drive it.
pub struct Ticker {
    app: Huey,
    last_second: Option<i64>,
    /// Runs whose write failed, to try again.
    unwritten: Vec<(Run, DateTime<Utc>)>,
    /// Writes failed in a row, and when to try again.
    failures: u32,
    retry_at: Option<DateTime<Utc>>,
    /// The schedules kept in the storage, as last read, and the version they were read at.
    schedules: Vec<(RuntimeSchedule, Crontab)>,
    version: Option<Option<Vec<u8>>>,
}

impl Ticker {
    /// A ticker for an app's periodic tasks.
    pub fn new(app: &Huey) -> Ticker {
        Ticker {
            app: app.clone(),
            last_second: None,
            unwritten: Vec::new(),
            failures: 0,
            retry_at: None,
            schedules: Vec::new(),
            version: None,
        }
    }

    /// Read the storage's schedules again if they changed since last read. On a storage error
    /// the ones read before are kept.
    fn refresh_schedules(&mut self) {
        let storage = self.app.storage();
        let version = match storage.get(Ns::Data, VERSION_KEY) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("could not read the periodic schedules: {e}");
                return;
            }
        };
        if self.version.as_ref() == Some(&version) {
            return;
        }
        match self.app.periodic().list() {
            Ok(list) => {
                self.schedules = list
                    .into_iter()
                    .filter_map(|s| match s.crontab() {
                        Ok(c) => Some((s, c)),
                        Err(e) => {
                            tracing::error!(schedule = %s.name, "bad periodic schedule: {e}");
                            None
                        }
                    })
                    .collect();
                self.version = Some(version);
            }
            Err(e) => tracing::error!("could not read the periodic schedules: {e}"),
        }
    }

    /// The periodic runs due at `now`: `(task name, the time it is for)`, for the tasks with a
    /// schedule in code and the schedules in storage. Each second is looked at once; a
    /// five-field schedule can only be due in the first second of a minute. Seconds skipped by
    /// a slow loop turn (up to five) are caught up; a longer stall is not.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
        let runs = self.due_runs(now);
        runs.into_iter()
            .map(|(run, at)| match run {
                Run::Task(name) => (name, at),
                Run::Schedule(name) => {
                    let task = self.schedules.iter().find(|(s, _)| s.name == name);
                    (task.map(|(s, _)| s.task.clone()).unwrap_or(name), at)
                }
            })
            .collect()
    }

    /// The runs due at `now` (see [`Ticker::due`]) and what each is of.
    pub fn due_runs(&mut self, now: DateTime<Utc>) -> Vec<(Run, DateTime<Utc>)> {
        let sec = now.timestamp();
        let previous = self.last_second.replace(sec);
        if previous == Some(sec) {
            return Vec::new();
        }
        self.refresh_schedules();
        // Seconds not yet looked at: only a short gap is caught up, never a long stall.
        let from = match previous {
            Some(p) if p < sec && sec - p <= 5 => p + 1,
            _ => sec,
        };
        let defs = self.app.task_defs();
        let code = defs
            .iter()
            .filter_map(|d| Some((Run::Task(d.name.clone()), d.periodic.as_ref()?)));
        let stored = self
            .schedules
            .iter()
            .filter(|(s, _)| !s.paused)
            .map(|(s, c)| (Run::Schedule(s.name.clone()), c));
        let mut out = Vec::new();
        for (run, cron) in code.chain(stored) {
            for s in from..=sec {
                if !cron.has_seconds() && s % 60 != 0 {
                    continue;
                }
                let Some(at) = DateTime::from_timestamp(s, 0) else {
                    continue;
                };
                if cron.matches(at) {
                    out.push((run.clone(), at));
                }
            }
        }
        out
    }

    /// The message of a run and the claim key guarding it; for a stored schedule whose
    /// arguments cannot be encoded, the dead letter saying why instead. `None`: the task or
    /// schedule is gone.
    fn message(
        &self,
        run: &Run,
        at: DateTime<Utc>,
        now: u64,
    ) -> Option<(Message, String, Option<DeadPut>)> {
        match run {
            Run::Task(name) => {
                let def = self.app.task_def(name)?;
                let args = postcard::to_allocvec(&()).unwrap_or_default();
                let msg = Message::new(name.clone(), args, def.options.to_message_options(now));
                Some((msg, format!("periodic:{name}:{}", at.timestamp()), None))
            }
            Run::Schedule(name) => {
                let (s, _) = self.schedules.iter().find(|(s, _)| &s.name == name)?;
                let mut options = self
                    .app
                    .task_def(&s.task)
                    .map(|d| d.options.clone())
                    .unwrap_or_default();
                if let Some(q) = &s.queue {
                    options.queue = q.clone();
                }
                if let Some(p) = s.priority {
                    options.priority = p;
                }
                let opts = options.to_message_options(now);
                let claim = format!("schedule:{name}:{}", at.timestamp());
                match s.encoded_args(&self.app) {
                    Ok(args) => Some((Message::new(s.task.clone(), args, opts), claim, None)),
                    Err(e) => {
                        // Kept whole as a dead letter, its arguments as the JSON given.
                        let args = s.args.to_string().into_bytes();
                        let msg = Message::new(s.task.clone(), args, opts);
                        let dead = DeadPut {
                            id: msg.id.clone(),
                            queue: msg.queue().to_string(),
                            payload: msg.encode().ok()?,
                            error: format!("periodic schedule {name:?}: {e}"),
                        };
                        Some((msg, claim, Some(dead)))
                    }
                }
            }
        }
    }

    /// Claim and enqueue each due run (and those whose write failed before, for up to a
    /// minute) in one storage call; returns the names enqueued by this call. A run that cannot
    /// be encoded is logged and does not keep the others from being enqueued. After a failed
    /// write nothing is sent for a pause that grows with each failure in a row (100 ms doubled
    /// up to 3.2 s): runs due meanwhile wait with the others.
    pub fn enqueue_due(&mut self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let mut runs = std::mem::take(&mut self.unwritten);
        runs.retain(|(_, at)| (now - *at).num_seconds() < RETRY_FOR_SECS);
        runs.extend(self.due_runs(now));
        if self.retry_at.is_some_and(|at| now < at) {
            self.unwritten = runs;
            return Ok(Vec::new());
        }
        let written_at = now_ms();
        let mut batches = Vec::new();
        let mut msgs = Vec::new();
        for (run, at) in runs {
            let Some((msg, key, dead)) = self.message(&run, at, written_at) else {
                continue;
            };
            let mut batch = Batch {
                claim: Some(Claim {
                    key,
                    ttl: CLAIM_TTL,
                }),
                ..Batch::default()
            };
            let pushed = match dead {
                Some(d) => {
                    batch.dead.push(d);
                    Ok(())
                }
                None => lifecycle::push_message(&mut batch, &msg, written_at),
            };
            match pushed {
                Ok(()) => {
                    batches.push(batch);
                    msgs.push((run, at, msg));
                }
                Err(e) => tracing::error!(task = %msg.task, "could not enqueue periodic task: {e}"),
            }
        }
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let written = match self.app.storage().apply_all(&batches) {
            Ok(w) => {
                self.failures = 0;
                self.retry_at = None;
                w
            }
            Err(e) => {
                self.unwritten = msgs.into_iter().map(|(n, at, _)| (n, at)).collect();
                let pause = (RETRY_PAUSE_MS << self.failures.min(5)).min(RETRY_PAUSE_MAX_MS);
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(now + chrono::Duration::milliseconds(pause));
                return Err(e);
            }
        };
        let mut enqueued = Vec::new();
        // Not written: another consumer (or this one before a restart) has the run.
        for (((_, _, msg), w), batch) in msgs.into_iter().zip(written).zip(&batches) {
            if !w {
                continue;
            }
            if let Some(d) = batch.dead.first() {
                tracing::error!(task = %msg.task, "periodic run dead-lettered: {}", d.error);
                let e =
                    Event::for_message(EventKind::DeadLettered, &msg).with_error(d.error.clone());
                self.app.emit(&e);
            } else {
                self.app
                    .emit(&Event::for_message(EventKind::Enqueued, &msg));
                enqueued.push(msg.task);
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
