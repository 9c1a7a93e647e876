//! Completion: record each attempt's outcome (result or error, retry, pipeline continuation,
//! ack) in the pending batch, and write the batch in one storage call per loop turn.
//!
//! A batch that cannot be written (storage down) is kept and retried with backoff; its tasks
//! stay leased, so in the worst case they are redelivered, never lost.

use std::time::{Duration, Instant};

use super::dispatch::Job;
use super::Supervisor;
use crate::events::{Event, EventKind};
use crate::failure::Failure;
use crate::registry::Output;
use crate::storage::Batch;

impl Supervisor {
    /// Record a finished (or failed, timed out, lost) attempt.
    pub(super) fn complete_job(&mut self, job: Job, outcome: Result<Output, Failure>, worker: u32) {
        let elapsed = job.started.elapsed();
        self.pace.record(elapsed);
        let mut events = Vec::new();
        match &outcome {
            Ok(_) => self.stats.completed += 1,
            Err(f) if f.kind.is_retryable() && job.msg.options.retries > 0 => {
                self.stats.retried += 1
            }
            Err(_) => self.stats.failed += 1,
        }
        self.app.complete(
            Some(&job.lease),
            &job.msg,
            outcome,
            &mut self.batch,
            &mut events,
        );
        if self.cfg.log_tasks {
            match &events.last() {
                Some(e) if e.kind == EventKind::Complete => tracing::info!(
                    id = %job.msg.id, task = %job.msg.task, worker, duration = ?elapsed, "task finished"
                ),
                _ => {}
            }
        }
        for e in &mut events {
            e.duration = Some(elapsed);
            e.worker = Some(worker);
        }
        self.log_events(events);
    }

    /// Log events that need attention; pass them to the app's handlers once the outcomes they
    /// describe are written (a handler that reads a result finds it).
    pub(super) fn log_events(&mut self, events: Vec<Event>) {
        for e in events {
            let err = e.error.as_deref().unwrap_or("");
            match e.kind {
                EventKind::Complete
                | EventKind::Executing
                | EventKind::Enqueued
                | EventKind::Scheduled => {}
                EventKind::Retrying => {
                    tracing::warn!(id = %e.id, task = %e.task, attempt = e.attempt, "task failed, will retry: {err}")
                }
                EventKind::Revoked
                | EventKind::Expired
                | EventKind::Canceled
                | EventKind::Interrupted => {
                    tracing::info!(id = %e.id, task = %e.task, "task {}", e.kind)
                }
                EventKind::DeadLettered => {
                    tracing::error!(id = %e.id, task = %e.task, "moved to the dead-letter place: {err}")
                }
                _ => {
                    tracing::error!(id = %e.id, task = %e.task, attempt = e.attempt, worker = e.worker, "task failed ({}): {err}", e.kind)
                }
            }
            self.unsent_events.push(e);
        }
        if self.batch.is_empty() {
            self.send_events();
        }
    }

    fn send_events(&mut self) {
        for e in std::mem::take(&mut self.unsent_events) {
            self.app.emit(&e);
        }
    }

    /// Write the pending batch (if any) in one call; on failure keep it and back off.
    pub(super) fn flush(&mut self) {
        if self.batch.is_empty() || Instant::now() < self.next_flush_retry {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        match self.app.storage().apply(&batch) {
            Ok(()) => {
                self.send_events();
                if self.batch_failures > 0 {
                    tracing::info!("storage is back: pending outcomes written");
                }
                self.batch_failures = 0;
            }
            Err(e) => {
                self.batch_failures += 1;
                let wait = Duration::from_millis(100 << self.batch_failures.min(6));
                tracing::error!(
                    "could not write {} outcomes, retrying in {wait:?}: {e}",
                    batch.ack.len()
                );
                self.next_flush_retry = Instant::now() + wait;
                let newer = std::mem::replace(&mut self.batch, batch);
                merge(&mut self.batch, newer);
            }
        }
    }
}

fn merge(into: &mut Batch, from: Batch) {
    into.ack.extend(from.ack);
    into.enqueue.extend(from.enqueue);
    into.schedule.extend(from.schedule);
    into.results.extend(from.results);
    into.dead.extend(from.dead);
    into.chords.extend(from.chords);
}
