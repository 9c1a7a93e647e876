//! Noticing an attempt that blocks its runtime thread.
//!
//! A future that does not return from `poll` (a busy loop, `std::thread::sleep`, a blocking
//! client between two `.await`s) holds its runtime thread, and every future waiting to run on
//! that thread waits with it; it cannot be cancelled either, since cancellation happens at an
//! `.await`. Nothing else in the consumer sees this happen: the supervisor's loop and its
//! watchdog pings go on while the runtime stalls. So each attempt records when its current
//! `poll` began, and a thread of the runner's own looks every [`CHECK`]: an attempt inside one
//! `poll` for [`STALL`] or more is named in a warning (once), and its end is logged too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long one `poll` may run before it is reported.
pub(super) const STALL: Duration = Duration::from_secs(1);

/// How often the runner's attempts are looked at.
const CHECK: Duration = Duration::from_millis(250);

/// Where one attempt is: inside a `poll` since when (or not).
pub(super) struct Polling {
    pub(super) task: String,
    pub(super) id: String,
    /// Milliseconds since the runner's epoch, plus 1, at which the current `poll` began; 0
    /// when the attempt is not being polled.
    since: AtomicU64,
}

impl Polling {
    pub(super) fn new(task: &str, id: &str) -> Polling {
        Polling {
            task: task.to_string(),
            id: id.to_string(),
            since: AtomicU64::new(0),
        }
    }
}

/// Every running attempt's [`Polling`], by job, and the epoch their times count from.
pub(super) struct Polls {
    epoch: Instant,
    pub(super) attempts: Mutex<HashMap<u64, Arc<Polling>>>,
}

impl Polls {
    /// A record of the attempts of one runner, watched by a thread that ends with it.
    pub(super) fn start(name: &str) -> std::io::Result<Arc<Polls>> {
        let polls = Arc::new(Polls {
            epoch: Instant::now(),
            attempts: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&polls);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || watch(&weak))?;
        Ok(polls)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// `fut`, recording when each of its polls begins and ends.
    pub(super) async fn track<F: Future>(self: Arc<Self>, p: Arc<Polling>, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            p.since.store(self.now_ms(), Ordering::Relaxed);
            let _out = Leave(&p.since);
            fut.as_mut().poll(cx)
        })
        .await
    }
}

/// Marks the end of a poll, however it ends.
struct Leave<'a>(&'a AtomicU64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The watcher thread: report attempts stuck in one `poll`, once each, and when they move on.
fn watch(polls: &Weak<Polls>) {
    // Stuck attempts already reported: job → when the stuck poll began, and the attempt.
    let mut reported: HashMap<u64, (u64, Arc<Polling>)> = HashMap::new();
    loop {
        std::thread::sleep(CHECK);
        let Some(polls) = polls.upgrade() else {
            return;
        };
        let now = polls.now_ms();
        let stall = STALL.as_millis() as u64;
        let attempts = polls.attempts.lock();
        reported.retain(|_, (since, p)| {
            let still = p.since.load(Ordering::Relaxed) == *since;
            if !still {
                let ms = now.saturating_sub(*since);
                tracing::warn!(id = %p.id, task = %p.task, "task {} gave its runtime thread back after {ms} ms", p.task);
            }
            still
        });
        for (&job, p) in attempts.iter() {
            let since = p.since.load(Ordering::Relaxed);
            if since == 0 || now.saturating_sub(since) < stall || reported.contains_key(&job) {
                continue;
            }
            reported.insert(job, (since, p.clone()));
            tracing::warn!(
                id = %p.id,
                task = %p.task,
                job,
                "task {} has run {} ms without yielding: it blocks a runtime thread, and the \
                 futures waiting for that thread, and it cannot be cancelled until it yields \
                 (move blocking code to tokio::task::spawn_blocking, or register the task as a \
                 sync task)",
                p.task,
                now.saturating_sub(since)
            );
        }
    }
}
