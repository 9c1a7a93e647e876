//! Dispatch: a fetcher thread leases messages from storage (blocking there, so an idle
//! consumer reacts at once), and the main loop hands them to idle workers.
//!
//! The fetcher asks for what the workers will start soon: room for one job per idle worker,
//! plus, when tasks are fast (judged by the recent pace), a few more queued in each worker's
//! pipe and a buffer in the parent worth [`SOON`] of work — so storage round trips carry
//! batches, and a lease never runs out while a message waits. Leases of waiting and running
//! tasks are renewed every third of the lease period anyway.

use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use super::{Config, Input, Supervisor};
use crate::app::{Huey, Revocations};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::message::Message;
use crate::storage::{Delivery, DequeueRequest, Lease};

/// Messages may wait in the parent only as long as the workers take to start them at the recent
/// pace: far below any lease, which is renewed for them anyway.
const SOON: Duration = Duration::from_millis(50);
/// The most messages buffered per worker, however fast tasks run.
const MAX_BUFFER_PER_WORKER: usize = 64;
/// Work queued in a worker's pipe behind its running task, at the recent pace.
const PIPE_AHEAD: Duration = Duration::from_millis(2);
/// The most jobs handed to one worker at once.
const MAX_DEPTH: usize = 8;

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
}

/// A message on its way to (or running on) a worker.
pub(super) struct Job {
    pub id: u64,
    pub lease: Lease,
    pub msg: Message,
    pub payload: Vec<u8>,
    pub started: Instant,
    pub deadline: Option<Instant>,
}

/// A batch the fetcher leased, with the revocations in force when it did.
pub(super) struct Fetched {
    pub deliveries: Vec<Delivery>,
    pub revocations: Revocations,
}

/// The fetcher thread's handle.
pub(super) struct Fetcher {
    want: Sender<usize>,
}

impl Fetcher {
    pub fn spawn(app: &Huey, cfg: &Config, out: Sender<Input>) -> Result<Fetcher> {
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
                    if out.send(Input::Fetched(fetched)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("starting the fetcher thread", e))?;
        Ok(Fetcher { want })
    }

    /// Ask for up to `n` messages.
    pub fn request(&self, n: usize) {
        let _ = self.want.send(n);
    }
}

fn fetch(app: &Huey, req: &DequeueRequest) -> Result<Fetched> {
    let deliveries = app.storage().dequeue(req)?;
    let revocations = if deliveries.is_empty() {
        Revocations::default()
    } else {
        app.revocations()?
    };
    Ok(Fetched {
        deliveries,
        revocations,
    })
}

/// `host:pid`, naming this consumer's leases.
fn consumer_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

impl Supervisor {
    pub(super) fn on_fetched(&mut self, f: Fetched) {
        self.fetch_outstanding = false;
        if self.stopping.is_some() {
            let leases: Vec<Lease> = f.deliveries.iter().map(|d| d.lease.clone()).collect();
            self.release(&leases);
            return;
        }
        let now = now_ms();
        let mut events = Vec::new();
        for d in f.deliveries {
            match self
                .app
                .prepare(&d, &f.revocations, now, &mut self.batch, &mut events)
            {
                Ok(Some(msg)) => {
                    let id = self.next_job;
                    self.next_job += 1;
                    self.waiting.push_back(Box::new(Job {
                        id,
                        lease: d.lease,
                        deadline: None,
                        started: Instant::now(),
                        msg,
                        payload: d.payload,
                    }));
                }
                Ok(None) => {}
                // A storage error while checking revocations: leave the lease to expire.
                Err(e) => tracing::error!("could not check task {:?}: {e}", d.lease),
            }
        }
        self.log_events(events);
    }

    /// How many jobs each worker is handed at once: one, unless tasks are fast, when a few
    /// more wait in its pipe so it never idles waiting for the parent ([`PIPE_AHEAD`] of work).
    pub(super) fn depth(&self) -> usize {
        let per_task = self.pace.average().max(Duration::from_micros(1));
        ((PIPE_AHEAD.as_nanos() / per_task.as_nanos()) as usize).clamp(1, MAX_DEPTH)
    }

    /// Hand waiting jobs to workers with room, emptiest first, then send them in one write
    /// per worker.
    pub(super) fn dispatch_waiting(&mut self) {
        let depth = self.depth();
        let mut touched = Vec::new();
        while !self.waiting.is_empty() {
            let best = (0..self.slots.len())
                .filter(|&i| self.slots[i].room(depth) > 0)
                .max_by_key(|&i| self.slots[i].room(depth));
            let Some(i) = best else { break };
            let job = self.waiting.pop_front().expect("not empty");
            match self.slots[i].push(job) {
                Ok(running) => {
                    if running {
                        self.begin(i);
                    }
                    if !touched.contains(&i) {
                        touched.push(i);
                    }
                }
                // The worker is gone; its exit event will come. Try the job elsewhere.
                Err(job) => self.waiting.push_front(job),
            }
        }
        for i in touched {
            self.slots[i].flush();
        }
    }

    /// The slot's first job has started: time it, log it, tell the handlers.
    pub(super) fn begin(&mut self, i: usize) {
        let worker = self.slots[i].worker_id();
        let Some(job) = self.slots[i].running_mut() else {
            return;
        };
        job.started = Instant::now();
        job.deadline = job
            .msg
            .options
            .timeout_ms
            .map(|t| job.started + Duration::from_millis(t));
        if self.cfg.log_tasks {
            tracing::info!(id = %job.msg.id, task = %job.msg.task, attempt = job.msg.attempt, worker, "task started");
        }
        if self.app.has_event_handlers() {
            let e = Event::for_message(EventKind::Executing, &job.msg);
            self.app.emit(&e);
        }
    }

    /// Ask the fetcher for work when there is room and nothing is on its way: one message per
    /// idle worker, plus a buffer of what the workers will start within [`SOON`] at the
    /// recent pace (none for slow tasks; up to [`MAX_BUFFER_PER_WORKER`] each for fast ones).
    /// Batches of many messages make one storage round trip each way, where the speed comes from.
    pub(super) fn request_more(&mut self) {
        if self.stopping.is_some() || self.fetch_outstanding {
            return;
        }
        let depth = self.depth();
        let idle: usize = self.slots.iter().map(|s| s.room(depth)).sum();
        let want = idle + self.buffer_target();
        if want > self.waiting.len() && (idle > 0 || self.waiting.len() * 2 < want) {
            self.fetcher.request(want - self.waiting.len());
            self.fetch_outstanding = true;
        }
    }

    /// How many dequeued messages may wait in the parent beyond the idle workers.
    fn buffer_target(&self) -> usize {
        let workers = self.slots.len();
        let per_task = self.pace.average().max(Duration::from_micros(1));
        let soon = (SOON.as_nanos() / per_task.as_nanos()) as usize;
        (workers * soon).min(workers * MAX_BUFFER_PER_WORKER)
    }

    pub(super) fn extend_leases(&mut self) {
        let leases: Vec<Lease> = self
            .slots
            .iter()
            .flat_map(|s| s.jobs().map(|j| j.lease.clone()))
            .chain(self.waiting.iter().map(|j| j.lease.clone()))
            .collect();
        if leases.is_empty() {
            return;
        }
        if let Err(e) = self.app.storage().extend(&leases, self.cfg.lease) {
            tracing::error!("could not renew {} leases: {e}", leases.len());
        }
    }

    pub(super) fn release(&self, leases: &[Lease]) {
        if leases.is_empty() {
            return;
        }
        if let Err(e) = self.app.storage().release(leases) {
            tracing::warn!(
                "could not release {} leases (they will expire): {e}",
                leases.len()
            );
        }
    }

    pub(super) fn release_waiting(&mut self) {
        let leases: Vec<Lease> = self.waiting.drain(..).map(|j| j.lease).collect();
        self.release(&leases);
    }
}
