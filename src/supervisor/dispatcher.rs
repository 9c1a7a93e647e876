//! The dispatcher: a fetcher thread leases messages from storage (blocking there, so an idle
//! consumer reacts at once), and the main loop hands them to the pool's idle workers.
//!
//! The fetcher asks for what the workers will start soon: room for one job per idle worker,
//! plus, when tasks are fast (judged by the recent [`Pace`]), a few more queued in each
//! worker's pipe and a buffer in the parent worth [`SOON`] of work — so storage round trips
//! carry batches, and a lease never runs out while a message waits. Leases of waiting and
//! running tasks are renewed every third of the lease period anyway; a waiting job whose lease
//! turns out lost (this consumer was stalled and another took the message over) is dropped, and
//! one whose lease may have run out is checked in storage before it goes to a worker.
//!
//! The fetcher decodes what it leased and reads, in the same turn, the revocations that could
//! apply to it (by id and task name, one storage call), so the main loop reads nothing for a
//! fetch (it only takes a revoke-once entry that applies).

use std::collections::VecDeque;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use super::inbox::Post;
use super::outbox::OutboxWriter;
use super::pool::Pool;
use super::{Config, Every, Input};
use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::lifecycle::{self, Effects};
use crate::message::Message;
use crate::revoke::Revocations;
use crate::storage::{Delivery, DequeueRequest, Lease};

/// Messages may wait in the parent only as long as the workers take to start them at the recent
/// pace: far below any lease, which is renewed for them anyway.
const SOON: Duration = Duration::from_millis(50);
/// The most messages buffered per worker, however fast tasks run.
const MAX_BUFFER_PER_WORKER: usize = 64;
/// Work queued in a worker's pipe behind its running task, at the recent pace.
const PIPE_AHEAD: Duration = Duration::from_millis(2);
/// The most messages one fetch asks for: a pool of thousands of async lanes fills in a few
/// round trips rather than one, so no single storage call or decoded batch is that large.
const MAX_FETCH: usize = 1000;
/// The most jobs handed to one worker at once.
const MAX_DEPTH: usize = 8;
/// The most bytes of jobs queued in a worker's pipe behind its running one: well under a
/// pipe's capacity (64 KiB on Linux), so a hand-over seldom meets a full pipe, and a large
/// message goes only to a worker that starts it at once.
pub(super) const PIPE_BYTES: usize = 32 << 10;

/// The recent average time a worker spends per task (an exponentially weighted mean), for
/// sizing the buffer. Starts pessimistic: no buffer until tasks show they are fast.
pub(super) struct Pace {
    mean_ns: f64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { mean_ns: 1e9 }
    }
}

impl Pace {
    pub fn record(&mut self, took: Duration) {
        self.mean_ns = 0.9 * self.mean_ns + 0.1 * took.as_nanos() as f64;
    }

    pub fn average(&self) -> Duration {
        Duration::from_nanos(self.mean_ns as u64)
    }

    /// How many jobs each worker is handed at once: one, unless tasks are fast, when a few
    /// more wait in its pipe so it never idles waiting for the parent ([`PIPE_AHEAD`] of work).
    pub fn depth(&self) -> usize {
        let per_task = self.average().max(Duration::from_micros(1));
        ((PIPE_AHEAD.as_nanos() / per_task.as_nanos()) as usize).clamp(1, MAX_DEPTH)
    }

    /// How many jobs an async worker of `concurrency` lanes holds beyond them, to start itself
    /// as lanes free up: what its lanes start within [`SOON`] at the recent pace, at most one
    /// more lane's worth each (tasks that end together, as a batch started together does, are
    /// then all replaced at once, without waiting for the supervisor).
    pub fn ahead(&self, concurrency: usize) -> usize {
        let per_task = self.average().max(Duration::from_micros(1));
        let soon = concurrency as u128 * SOON.as_nanos() / per_task.as_nanos();
        (soon as usize).min(concurrency)
    }

    /// How many dequeued messages may wait in the parent beyond the idle workers of a pool of
    /// `workers`: what they start within [`SOON`], up to [`MAX_BUFFER_PER_WORKER`] each.
    pub fn buffer(&self, workers: usize) -> usize {
        let per_task = self.average().max(Duration::from_micros(1));
        let soon = (SOON.as_nanos() / per_task.as_nanos()) as usize;
        (workers * soon).min(workers * MAX_BUFFER_PER_WORKER)
    }
}

/// How many messages to ask for, if any, with room for `idle` jobs in the workers, a buffer of
/// `buffer` and `waiting` already here. Asks while a worker has room, or once the waiting line
/// is down to half of what is wanted (a fetch per turn for a few messages would be all cost).
fn to_request(idle: usize, buffer: usize, waiting: usize) -> Option<usize> {
    let want = idle + buffer;
    (want > waiting && (idle > 0 || waiting * 2 < want)).then(|| (want - waiting).min(MAX_FETCH))
}

/// A message on its way to (or running on) a worker.
pub(super) struct Job {
    pub id: u64,
    pub lease: Lease,
    pub msg: Message,
    pub payload: Vec<u8>,
    pub started: Instant,
    pub deadline: Option<Instant>,
    /// When its lease runs out by this consumer's clock, as far as it knows (from the fetch or
    /// the last renewal that covered it): a waiting job close to it is re-checked in storage
    /// before it is handed over.
    pub lease_until: Instant,
}

/// A batch the fetcher leased, decoded, with the revocations that could apply to it.
pub(super) struct Fetched {
    /// Taken just before the dequeue call: the leases run out no earlier than this + the lease.
    pub leased_at: Instant,
    pub items: Vec<FetchedItem>,
    pub revocations: Revocations,
}

/// One leased delivery, decoded by the fetcher: `msg` is `None` when its bytes are not a
/// message, and `fx` then holds its dead letter.
pub(super) struct FetchedItem {
    pub delivery: Delivery,
    pub msg: Option<Message>,
    pub fx: Effects,
}

/// Fetches messages, keeps the ones no worker has room for yet, and hands them over.
pub(super) struct Dispatcher {
    app: Huey,
    fetcher: Fetcher,
    /// A request is with the fetcher; its answer will come as [`Input::Fetched`].
    fetch_outstanding: bool,
    /// Leased messages no worker has taken yet, in order.
    waiting: VecDeque<Box<Job>>,
    pace: Pace,
    next_job: u64,
    lease: Duration,
    renew: Every,
    /// No more fetching: what arrives is released.
    stopping: bool,
}

impl Dispatcher {
    /// Start the fetcher thread, which sends what it leases to `out`.
    pub fn new(app: &Huey, cfg: &Config, out: Post) -> Result<Dispatcher> {
        Ok(Dispatcher {
            app: app.clone(),
            fetcher: Fetcher::spawn(app, cfg, out)?,
            fetch_outstanding: false,
            waiting: VecDeque::new(),
            pace: Pace::default(),
            next_job: 1,
            lease: cfg.lease,
            renew: Every::new(cfg.lease / 3, Instant::now() + cfg.lease / 3),
            stopping: false,
        })
    }

    /// Whether a fetch is on its way (its leases must be released before the loop ends).
    pub fn fetch_outstanding(&self) -> bool {
        self.fetch_outstanding
    }

    /// A task took this long: the pace sizes the buffer and the pipe depth.
    pub fn record_pace(&mut self, took: Duration) {
        self.pace.record(took);
    }

    /// Check what the fetcher leased and line it up for the workers; outcomes decided without
    /// running (revoked, expired, dead-lettered) go to the outbox.
    pub fn on_fetched(&mut self, app: &Huey, f: Fetched, outbox: &OutboxWriter) {
        self.fetch_outstanding = false;
        if self.stopping {
            let leases: Vec<Lease> = f.items.iter().map(|i| i.delivery.lease.clone()).collect();
            release(app, &leases, false);
            return;
        }
        let now = now_ms();
        for FetchedItem {
            delivery: d,
            msg,
            mut fx,
        } in f.items
        {
            // One Effects per delivery: each outcome is fenced by its own lease.
            let Some(msg) = msg else {
                outbox.add(fx);
                continue;
            };
            match app.admit(Some(&d.lease), msg, &f.revocations, now, &mut fx) {
                Ok(Some(msg)) => {
                    let id = self.next_job;
                    self.next_job += 1;
                    self.waiting.push_back(Box::new(Job {
                        id,
                        lease: d.lease,
                        deadline: None,
                        started: Instant::now(),
                        lease_until: f.leased_at + self.lease,
                        msg,
                        payload: d.payload,
                    }));
                }
                Ok(None) => {}
                // A storage error while checking revocations: leave the lease to expire.
                Err(e) => tracing::error!("could not check task {:?}: {e}", d.lease),
            }
            outbox.add(fx);
        }
    }

    /// Hand waiting jobs, in order, to workers with room (in jobs and in pipe bytes),
    /// emptiest first, then send them in one write per worker.
    pub fn dispatch(&mut self, pool: &mut Pool) {
        self.recheck_stale(Instant::now());
        let depth = self.pace.depth();
        let ahead = self.pace.ahead(pool.concurrency());
        let mut touched = Vec::new();
        while let Some(next) = self.waiting.front() {
            let Some(i) = pool.emptiest(depth, ahead, next.payload.len()) else {
                break;
            };
            let job = self.waiting.pop_front().expect("not empty");
            match pool.hand_over(i, job) {
                Ok(()) => {
                    if !touched.contains(&i) {
                        touched.push(i);
                    }
                }
                // The worker is gone; its exit event will come. Try the job elsewhere.
                Err(job) => self.waiting.push_front(job),
            }
        }
        for i in touched {
            pool.flush(i);
        }
    }

    /// Ask the fetcher for work when there is room and nothing is on its way: one message per
    /// idle worker, plus a buffer of what the workers will start within [`SOON`] at the
    /// recent pace (none for slow tasks; up to [`MAX_BUFFER_PER_WORKER`] each for fast ones).
    /// Batches of many messages make one storage round trip each way, where the speed comes from.
    pub fn request_more(&mut self, pool: &Pool) {
        if self.stopping || self.fetch_outstanding {
            return;
        }
        let idle = pool.room(self.pace.depth(), self.pace.ahead(pool.concurrency()));
        let buffer = self.pace.buffer(pool.lanes());
        if let Some(n) = to_request(idle, buffer, self.waiting.len()) {
            self.fetcher.request(n);
            self.fetch_outstanding = true;
        }
    }

    /// Jobs that never started (their worker died or was killed) go back to the front of the
    /// waiting line, in order. Their leases are checked again before they are handed over (the
    /// last renewal may have found them lost while they sat with the worker).
    pub fn requeue(&mut self, jobs: VecDeque<Box<Job>>) {
        let now = Instant::now();
        for mut j in jobs.into_iter().rev() {
            j.lease_until = now;
            self.waiting.push_front(j);
        }
    }

    /// Renew the leases of waiting and running tasks, every third of the lease period. Waiting
    /// jobs whose leases were lost (another consumer took their messages over while this one
    /// was stalled, e.g. frozen by SIGSTOP) are dropped: they must not run here too.
    pub fn renew_leases(&mut self, app: &Huey, pool: &Pool, now: Instant) {
        if !self.renew.due(now) {
            return;
        }
        let leases: Vec<Lease> = pool
            .jobs()
            .map(|j| j.lease.clone())
            .chain(self.waiting.iter().map(|j| j.lease.clone()))
            .collect();
        if leases.is_empty() {
            return;
        }
        let held = match app.storage().extend(&leases, self.lease) {
            Ok(held) if held.len() == leases.len() => held,
            Ok(_) => {
                tracing::error!(
                    "renewing {} leases: a wrong number of answers",
                    leases.len()
                );
                return;
            }
            Err(e) => {
                tracing::error!("could not renew {} leases: {e}", leases.len());
                return;
            }
        };
        let in_pool = leases.len() - self.waiting.len();
        let lost_running = held[..in_pool].iter().filter(|h| !**h).count();
        if lost_running > 0 {
            // Already with a worker: their outcomes will be fenced off.
            tracing::warn!(
                "{lost_running} leases of tasks handed to workers were lost (taken over by \
                 another consumer); their outcomes will not be written"
            );
        }
        self.keep_held(&held[in_pool..], now);
    }

    /// After a renewal of every waiting job's lease (`held`, in waiting order, started at
    /// `at`): keep the held ones, with their new expiry, and drop the lost ones.
    fn keep_held(&mut self, held: &[bool], at: Instant) {
        let mut lost = 0;
        let mut i = 0;
        self.waiting.retain_mut(|j| {
            let keep = held.get(i).copied().unwrap_or(true);
            i += 1;
            if keep {
                j.lease_until = j.lease_until.max(at + self.lease);
            } else {
                lost += 1;
            }
            keep
        });
        if lost > 0 {
            tracing::warn!(
                "{lost} prefetched tasks dropped: their leases were lost (taken over by another \
                 consumer while this one was stalled)"
            );
        }
    }

    /// Before handing jobs over: the waiting jobs whose leases run out within a third of the
    /// lease period (by this consumer's clock; normally renewals keep them far from it, so this
    /// happens only after a stall) are renewed now, and those lost are dropped rather than run.
    fn recheck_stale(&mut self, now: Instant) {
        // Waiting jobs are in lease order (fetched in turn, renewed together; jobs given back
        // go to the front with a lease to check), so the first is the one to look at.
        let soon = now + self.lease / 3;
        if self.waiting.front().is_none_or(|j| j.lease_until > soon) {
            return;
        }
        let leases: Vec<Lease> = self.waiting.iter().map(|j| j.lease.clone()).collect();
        match self.app.storage().extend(&leases, self.lease) {
            Ok(held) if held.len() == leases.len() => self.keep_held(&held, now),
            answer => {
                // Not known to be lost: they may run (at-least-once; the outcome is fenced if
                // they were), and are checked again only after a while, not every turn.
                if let Err(e) = answer {
                    tracing::error!("could not check {} leases: {e}", leases.len());
                }
                for j in &mut self.waiting {
                    j.lease_until = j.lease_until.max(now + self.lease / 2);
                }
            }
        }
    }

    /// Stop fetching and give back what waits.
    pub fn stop(&mut self, app: &Huey) {
        self.stopping = true;
        self.release_waiting(app);
    }

    pub fn release_waiting(&mut self, app: &Huey) {
        let leases: Vec<Lease> = self.waiting.drain(..).map(|j| j.lease).collect();
        release(app, &leases, false);
    }
}

/// Give leases back for redelivery now rather than when they expire. `started`: their tasks
/// began to run (interrupted), so the delivery counts; unstarted ones do not count one.
pub(super) fn release(app: &Huey, leases: &[Lease], started: bool) {
    if leases.is_empty() {
        return;
    }
    if let Err(e) = app.storage().release(leases, started) {
        tracing::warn!(
            "could not release {} leases (they will expire): {e}",
            leases.len()
        );
    }
}

/// The fetcher thread's handle.
struct Fetcher {
    want: Sender<usize>,
}

impl Fetcher {
    fn spawn(app: &Huey, cfg: &Config, out: Post) -> Result<Fetcher> {
        let (want, want_rx) = mpsc::channel::<usize>();
        let app = app.clone();
        let mut req = DequeueRequest {
            consumer: consumer_name(),
            queues: cfg.queues.clone(),
            max: 1,
            lease: cfg.lease,
            wait: cfg.poll_wait,
            max_deliveries: cfg.max_deliveries,
        };
        std::thread::Builder::new()
            .name("huey-fetcher".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(100);
                for n in want_rx {
                    req.max = n;
                    let fetched = loop {
                        match fetch(&app, &req) {
                            Ok(f) => break f,
                            Err(e) => {
                                tracing::error!("dequeue failed, retrying in {backoff:?}: {e}");
                                std::thread::sleep(backoff);
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    };
                    backoff = Duration::from_millis(100);
                    if !out.send(Input::Fetched(fetched)) {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("starting the fetcher thread", e))?;
        Ok(Fetcher { want })
    }

    /// Ask for up to `n` messages.
    fn request(&self, n: usize) {
        let _ = self.want.send(n);
    }
}

/// Lease a batch, decode it, and read the revocations that could apply to it: the entries of
/// its ids and task names, in one storage call (never a listing of every revocation).
fn fetch(app: &Huey, req: &DequeueRequest) -> Result<Fetched> {
    let leased_at = Instant::now();
    let (deliveries, may_hold_any) = app.storage().dequeue_seeing_revocations(req)?;
    let items: Vec<FetchedItem> = deliveries
        .into_iter()
        .map(|delivery| {
            let mut fx = Effects::default();
            let lease = Some(&delivery.lease);
            let msg = lifecycle::decode(lease, &delivery.queue, &delivery.payload, &mut fx);
            FetchedItem { delivery, msg, fx }
        })
        .collect();
    match app.revocations_for(items.iter().filter_map(|i| i.msg.as_ref()), may_hold_any) {
        Ok(revocations) => Ok(Fetched {
            leased_at,
            items,
            revocations,
        }),
        Err(e) => {
            // Not known to be runnable: hand the batch back rather than hold it to its expiry.
            let leases: Vec<Lease> = items.into_iter().map(|i| i.delivery.lease).collect();
            release(app, &leases, false);
            Err(e)
        }
    }
}

/// `host:pid`, naming this consumer's leases.
fn consumer_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace_of(per_task: Duration) -> Pace {
        let mut p = Pace::default();
        for _ in 0..300 {
            p.record(per_task);
        }
        p
    }

    #[test]
    fn slow_tasks_get_one_job_per_worker_and_no_buffer() {
        let p = Pace::default();
        assert_eq!(p.average(), Duration::from_secs(1), "pessimistic at start");
        assert_eq!((p.depth(), p.buffer(4)), (1, 0));
        let p = pace_of(Duration::from_millis(100));
        assert_eq!((p.depth(), p.buffer(4)), (1, 0));
    }

    #[test]
    fn fast_tasks_fill_pipes_and_a_buffer_worth_a_short_while() {
        // 1 ms a task: two queued per pipe, 50 per worker buffered.
        let p = pace_of(Duration::from_millis(1));
        assert_eq!((p.depth(), p.buffer(4)), (2, 200));
        // 10 µs a task: depth and buffer reach their caps.
        let p = pace_of(Duration::from_micros(10));
        assert_eq!(
            (p.depth(), p.buffer(4)),
            (MAX_DEPTH, 4 * MAX_BUFFER_PER_WORKER)
        );
        // Instant tasks do not divide by zero.
        let p = pace_of(Duration::ZERO);
        assert_eq!((p.depth(), p.buffer(1)), (MAX_DEPTH, MAX_BUFFER_PER_WORKER));
    }

    #[test]
    fn the_pace_follows_recent_tasks() {
        let mut p = pace_of(Duration::from_micros(100));
        assert_eq!(p.depth(), MAX_DEPTH);
        p.record(Duration::from_secs(1));
        assert_eq!(
            (p.depth(), p.buffer(1)),
            (1, 0),
            "one slow task slows it at once"
        );
        for _ in 0..100 {
            p.record(Duration::from_micros(100));
        }
        assert_eq!(p.depth(), MAX_DEPTH, "and fast ones speed it up again");
    }

    #[test]
    fn requests_fill_idle_workers_and_top_up_a_half_empty_buffer() {
        assert_eq!(to_request(2, 0, 0), Some(2), "one per idle worker");
        assert_eq!(to_request(0, 0, 0), None, "no room, no buffer: nothing");
        assert_eq!(to_request(2, 0, 2), None, "enough already waits");
        assert_eq!(
            to_request(1, 100, 60),
            Some(41),
            "an idle worker asks at once"
        );
        assert_eq!(
            to_request(0, 100, 60),
            None,
            "a buffer over half full waits"
        );
        assert_eq!(
            to_request(0, 100, 49),
            Some(51),
            "under half full: topped up"
        );
        assert_eq!(
            to_request(10_000, 500, 0),
            Some(MAX_FETCH),
            "thousands of idle lanes fill a batch at a time"
        );
    }
}
