//! Dispatch: a fetcher thread leases messages from storage (blocking there, so an idle
//! consumer reacts at once), and the main loop hands them to idle workers.
//!
//! The fetcher only asks for as many messages as there are idle workers, so nothing waits in
//! the parent long enough for its lease to run out; waiting and running tasks' leases are
//! renewed every third of the lease period.

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

    pub(super) fn dispatch_waiting(&mut self) {
        while !self.waiting.is_empty() {
            let Some(slot) = self.slots.iter().position(|s| s.is_idle()) else {
                break;
            };
            let mut job = self.waiting.pop_front().expect("not empty");
            job.started = Instant::now();
            job.deadline = job
                .msg
                .options
                .timeout_ms
                .map(|t| job.started + Duration::from_millis(t));
            if self.cfg.log_tasks {
                tracing::info!(id = %job.msg.id, task = %job.msg.task, attempt = job.msg.attempt, worker = self.slots[slot].worker_id(), "task started");
            }
            self.app
                .emit(&Event::for_message(EventKind::Executing, &job.msg));
            if let Err(job) = self.slots[slot].start(job) {
                // The worker is gone; its exit event will come. Try the job elsewhere.
                self.waiting.push_front(job);
            }
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
        let idle = self.slots.iter().filter(|s| s.is_idle()).count();
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
            .filter_map(|s| s.job().map(|j| j.lease.clone()))
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
