//! The outbox: each attempt's outcome (result or error, retry, pipeline continuation, ack) is
//! one batch fenced by its lease; the pending batches are written in one storage call; the
//! events about those outcomes go to the app's handlers once the write has succeeded (a
//! handler that reads a result finds it).
//!
//! The writes happen on a thread of their own ([`OutboxWriter`]), so the main loop hands freed
//! workers their next task without waiting for a write: outcomes that end while one write is
//! under way are written together by the next, in the order they ended.
//!
//! Batches that cannot be written (storage down, or a lost reply) are kept and sent again with
//! backoff; their tasks stay leased, so in the worst case they are redelivered, never lost. An
//! outcome the storage had written although its reply was lost is not written twice: the
//! resend reports it written (and writes nothing), so its events are told exactly once.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pool::Ended;
use crate::app::Huey;
use crate::clock::now_ms;
use crate::events::{Event, EventKind};
use crate::lifecycle::{self, Effects};
#[cfg(feature = "metrics")]
use crate::observe::Metrics;
use crate::storage::Batch;

/// What the main loop hands the writer thread, in order.
enum ToWriter {
    /// The attempts that ended in one turn of the main loop, in order.
    Complete(Vec<Ended>),
    Add(Box<Effects>),
    Tap(EventTap),
    #[cfg(feature = "metrics")]
    Metrics(Arc<Metrics>),
    /// Write everything handed over before (trying a few times), then say so.
    Drain(Sender<()>),
}

/// The main loop's handle on the outbox, which lives on its writer thread: outcomes and
/// effects handed over here are written in the order given, each write taking all that
/// arrived meanwhile. Dropping it writes what is left (as [`Outbox::drain`]) and ends the
/// thread.
pub(super) struct OutboxWriter {
    tx: Option<Sender<ToWriter>>,
    thread: Option<JoinHandle<()>>,
}

impl OutboxWriter {
    pub fn start(app: &Huey, log_tasks: bool) -> std::io::Result<OutboxWriter> {
        let (tx, rx) = mpsc::channel();
        let app = app.clone();
        let thread = std::thread::Builder::new()
            .name("huey-outbox".into())
            .spawn(move || write_loop(&app, Outbox::new(log_tasks), &rx))?;
        Ok(OutboxWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&self, m: ToWriter) {
        if let Some(tx) = &self.tx {
            // The thread ends only when this handle is dropped.
            let _ = tx.send(m);
        }
    }

    /// Record finished (or failed, timed out, lost) attempts, in the order they ended: the
    /// main loop hands over a turn's worth at once (one message, one wake-up of the writer).
    pub fn complete(&self, ended: Vec<Ended>) {
        if !ended.is_empty() {
            self.send(ToWriter::Complete(ended));
        }
    }

    /// Outcomes decided elsewhere (see [`Outbox::add`]).
    pub fn add(&self, fx: Effects) {
        self.send(ToWriter::Add(Box::new(fx)));
    }

    /// Tell `tap` every event too.
    pub fn set_tap(&self, tap: EventTap) {
        self.send(ToWriter::Tap(tap));
    }

    /// Time each write in these metrics.
    #[cfg(feature = "metrics")]
    pub fn set_metrics(&self, m: Arc<Metrics>) {
        self.send(ToWriter::Metrics(m));
    }

    /// Wait until everything handed over so far is written (or given up on after a few
    /// tries: those tasks are redelivered when their leases expire).
    pub fn drain(&self) {
        let (ack, done) = mpsc::channel();
        self.send(ToWriter::Drain(ack));
        let _ = done.recv();
    }
}

impl Drop for OutboxWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread: take what the loop hands over, as much as has arrived, then write it in
/// one call; after a failed write, wait for the backoff (taking what arrives meanwhile).
fn write_loop(app: &Huey, mut outbox: Outbox, rx: &Receiver<ToWriter>) {
    #[cfg(feature = "metrics")]
    let mut metrics: Option<Arc<Metrics>> = None;
    loop {
        let first = if outbox.pending.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(outbox.retry_at.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    outbox.drain(app);
                    return;
                }
            }
        };
        let mut next = first;
        while let Some(m) = next {
            match m {
                ToWriter::Complete(ended) => {
                    for e in ended {
                        outbox.complete(app, e);
                    }
                }
                ToWriter::Add(fx) => outbox.add(app, *fx),
                ToWriter::Tap(tap) => outbox.set_tap(tap),
                #[cfg(feature = "metrics")]
                ToWriter::Metrics(m) => metrics = Some(m),
                ToWriter::Drain(ack) => {
                    outbox.drain(app);
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        #[cfg(feature = "metrics")]
        let (pending, failures) = (outbox.pending_len(), outbox.failures());
        let started = Instant::now();
        outbox.write(app, started);
        #[cfg(feature = "metrics")]
        if let Some(m) = metrics.as_ref().filter(|_| pending > 0) {
            let ok = outbox.pending_len() == 0;
            if ok || outbox.failures() != failures {
                m.storage_write("outcomes", started.elapsed(), ok);
            }
        }
    }
}

pub(super) struct Outbox {
    /// Outcomes not yet written, one fenced batch each.
    pending: Vec<Batch>,
    /// Events not yet told, each with the index in `pending` of the outcome it is about.
    unsent: Vec<(Option<usize>, Event)>,
    /// Failed writes in a row.
    failures: u32,
    /// No write before this (backoff after a failure).
    retry_at: Instant,
    log_tasks: bool,
    /// Also told every event, before the app's handlers (the observer's counting).
    tap: Option<EventTap>,
}

/// A function told every event the outbox tells the app.
pub(super) type EventTap = std::sync::Arc<dyn Fn(&Event) + Send + Sync>;

impl Outbox {
    pub fn new(log_tasks: bool) -> Outbox {
        Outbox {
            pending: Vec::new(),
            unsent: Vec::new(),
            failures: 0,
            retry_at: Instant::now(),
            log_tasks,
            tap: None,
        }
    }

    /// Tell `tap` every event too.
    pub fn set_tap(&mut self, tap: EventTap) {
        self.tap = Some(tap);
    }

    /// Outcomes decided elsewhere (e.g. a message found revoked when it was fetched): their
    /// writes join the pending batches, their events wait for them.
    pub fn add(&mut self, app: &Huey, fx: Effects) {
        let at = self.push(fx.batch);
        self.add_events(app, at, fx.events);
    }

    /// Record a finished (or failed, timed out, lost) attempt.
    pub fn complete(&mut self, app: &Huey, ended: Ended) {
        let Ended {
            job,
            outcome,
            worker,
            elapsed,
            ..
        } = ended;
        let mut fx = Effects::default();
        lifecycle::complete(
            Some(&job.lease),
            &job.msg,
            outcome,
            now_ms(),
            app.policy(),
            &mut fx,
        );
        let at = self.push(fx.batch);
        let mut events = fx.events;
        if self.log_tasks {
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
        self.add_events(app, at, events);
    }

    /// How many outcomes wait to be written.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Failed writes in a row.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Keep a batch for the next write; its index, if it writes anything.
    fn push(&mut self, batch: Batch) -> Option<usize> {
        if batch.is_empty() {
            return None;
        }
        self.pending.push(batch);
        Some(self.pending.len() - 1)
    }

    /// Log events that need attention; pass them to the app's handlers once the outcome they
    /// describe (`at` in the pending batches) is written (at once if nothing waits).
    fn add_events(&mut self, app: &Huey, at: Option<usize>, events: Vec<Event>) {
        for e in events {
            log_event(&e);
            self.unsent.push((at, e));
        }
        if self.pending.is_empty() {
            self.send_events(app, &[]);
        }
    }

    /// Tell the events whose outcome was written (`written[i]` for the pending batch `i`); the
    /// events of an outcome that was fenced off are dropped with it.
    fn send_events(&mut self, app: &Huey, written: &[bool]) {
        for (at, e) in std::mem::take(&mut self.unsent) {
            if at.is_none_or(|i| written.get(i).copied().unwrap_or(false)) {
                if let Some(tap) = &self.tap {
                    tap(&e);
                }
                app.emit(&e);
            }
        }
    }

    /// Write the pending batches (if any, and not backing off at `now`) in one call; on failure
    /// keep them and back off. Re-sending after a failure is safe: a batch that was written
    /// although its reply was lost writes nothing the second time, and is reported written.
    pub fn write(&mut self, app: &Huey, now: Instant) {
        if self.pending.is_empty() || now < self.retry_at {
            return;
        }
        match app.storage().apply_all(&self.pending) {
            Ok(written) => {
                let stale = written.iter().filter(|w| !**w).count();
                if stale > 0 {
                    tracing::warn!(
                        stale,
                        "outcomes not written: their leases had expired (the tasks went to \
                         another consumer)"
                    );
                }
                self.send_events(app, &written);
                self.pending.clear();
                if self.failures > 0 {
                    tracing::info!("storage is back: pending outcomes written");
                }
                self.failures = 0;
            }
            Err(e) => {
                self.failures += 1;
                let wait = Duration::from_millis(100 << self.failures.min(6));
                tracing::error!(
                    "could not write {} outcomes, retrying in {wait:?}: {e}",
                    self.pending.len()
                );
                // Counted from the end of the failed write: a locked database can take its
                // whole busy timeout to fail.
                self.retry_at = now.max(Instant::now()) + wait;
            }
        }
    }

    /// At shutdown: try a few more times to write what is pending, waiting a little longer
    /// each time.
    pub fn drain(&mut self, app: &Huey) {
        for attempt in 0..5 {
            self.write(app, self.retry_at.max(Instant::now()));
            if self.pending.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
        }
        if !self.pending.is_empty() {
            tracing::error!(
                outcomes = self.pending.len(),
                "could not write the last outcomes: those tasks will be redelivered when their leases expire"
            );
        }
    }
}

fn log_event(e: &Event) {
    let err = e.error.as_deref().unwrap_or("");
    match e.kind {
        EventKind::Complete | EventKind::Executing | EventKind::Enqueued | EventKind::Scheduled => {
        }
        EventKind::Retrying => {
            tracing::warn!(id = %e.id, task = %e.task, attempt = e.attempt, "task failed, will retry: {err}")
        }
        EventKind::Revoked | EventKind::Expired | EventKind::Canceled | EventKind::Interrupted => {
            tracing::info!(id = %e.id, task = %e.task, "task {}", e.kind)
        }
        EventKind::DeadLettered => {
            tracing::error!(id = %e.id, task = %e.task, "moved to the dead-letter place: {err}")
        }
        _ => {
            tracing::error!(id = %e.id, task = %e.task, attempt = e.attempt, worker = e.worker, "task failed ({}): {err}", e.kind)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::message::Message;
    use crate::storage::DequeueRequest;
    use crate::supervisor::dispatcher::Job;

    /// Lease the one ready message and run it, as a worker would.
    fn run_one(app: &Huey) -> Ended {
        let req = DequeueRequest {
            consumer: "test".into(),
            queues: vec![crate::message::DEFAULT_QUEUE.into()],
            max: 1,
            lease: Duration::from_secs(60),
            wait: Duration::ZERO,
            max_deliveries: 5,
        };
        let d = app
            .storage()
            .dequeue(&req)
            .unwrap()
            .pop()
            .expect("a message");
        let msg = Message::decode(&d.payload).unwrap();
        let outcome = app.run_attempt(&msg);
        let job = Job {
            id: 1,
            lease: d.lease,
            msg,
            payload: d.payload,
            started: Instant::now(),
            deadline: None,
            lease_until: Instant::now(),
        };
        Ended {
            job: Box::new(job),
            outcome,
            worker: 1,
            elapsed: Duration::from_millis(1),
            lost: false,
        }
    }

    #[test]
    fn the_writer_thread_writes_outcomes_in_the_order_they_ended_and_tells_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("writer.db").display());
        let app = Huey::open("outbox", &url).unwrap();
        let add = app
            .task("add")
            .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
            .unwrap();
        let handles: Vec<_> = (0..20).map(|i| add.enqueue((i, 1)).unwrap()).collect();
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let seen = emitted.clone();
        app.on_event(move |e| {
            if e.kind == EventKind::Complete {
                seen.lock().unwrap().push(e.id.clone());
            }
        });
        let ended: Vec<Ended> = (0..20).map(|_| run_one(&app)).collect();
        let order: Vec<String> = ended.iter().map(|e| e.job.msg.id.clone()).collect();
        let writer = OutboxWriter::start(&app, false).unwrap();
        // Handed over in turns of different sizes, as the main loop does.
        let mut ended = ended.into_iter();
        for size in [1, 3, 0, 7, 9] {
            writer.complete(ended.by_ref().take(size).collect());
        }
        writer.drain();
        assert_eq!(*emitted.lock().unwrap(), order, "each told once, in order");
        for (i, h) in handles.iter().enumerate() {
            assert_eq!(h.get().unwrap(), Some(i as i64 + 1));
        }
        assert_eq!(app.storage().counts().unwrap().in_flight, 0, "acked");
    }

    #[test]
    fn a_batch_that_cannot_be_written_is_kept_and_retried_and_its_events_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let url = format!("sqlite:{}?busy_timeout=0", path.display());
        let app = Huey::open("outbox", &url).unwrap();
        let add = app
            .task("add")
            .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
            .unwrap();
        let sum = add.enqueue((2, 3)).unwrap();
        let later = add.enqueue((4, 5)).unwrap();
        let emitted = Arc::new(Mutex::new(Vec::new()));
        let seen = emitted.clone();
        app.on_event(move |e| seen.lock().unwrap().push(e.kind));
        let ended = run_one(&app);
        let ended_later = run_one(&app);

        // Another connection holds the write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut outbox = Outbox::new(false);
        outbox.complete(&app, ended);
        let t0 = Instant::now();
        outbox.write(&app, t0);
        assert_eq!(outbox.failures, 1);
        assert_eq!(outbox.pending.len(), 1, "the outcome is kept");
        assert!(
            emitted.lock().unwrap().is_empty(),
            "no event before its outcome is written"
        );
        let first_retry = outbox.retry_at;
        assert!(first_retry >= t0 + Duration::from_millis(200));

        outbox.write(&app, first_retry - Duration::from_millis(1));
        assert_eq!(outbox.failures, 1, "no write before the backoff has passed");
        outbox.complete(&app, ended_later);
        outbox.write(&app, first_retry);
        assert_eq!(outbox.failures, 2, "tried again, still locked");
        assert!(
            outbox.retry_at >= first_retry + Duration::from_millis(400),
            "backing off further"
        );
        assert_eq!(
            outbox.pending.len(),
            2,
            "the kept outcome and the newer one, each once"
        );

        other.execute_batch("COMMIT").unwrap();
        outbox.write(&app, outbox.retry_at);
        assert_eq!(outbox.failures, 0);
        assert!(outbox.pending.is_empty(), "written");
        assert!(
            emitted.lock().unwrap().contains(&EventKind::Complete),
            "events follow the write: {:?}",
            emitted.lock().unwrap()
        );
        assert_eq!(sum.wait(Duration::from_secs(10)).unwrap(), 5);
        assert_eq!(later.wait(Duration::from_secs(10)).unwrap(), 9);
        assert_eq!(app.storage().counts().unwrap().in_flight, 0, "acked");
    }
}
