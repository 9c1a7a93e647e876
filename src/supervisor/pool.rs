//! The worker pool: slots, their workers' life cycle, and what happens when a worker dies, runs
//! past a task's timeout, runs a task revoked since it started, or is due for recycling.
//!
//! A slot holds one worker at a time, tagged with a generation number; events from an older
//! generation (a worker already replaced) are ignored. A slot's jobs are a queue: the first is
//! running, the others (only when tasks are fast, see `dispatcher`) wait in the worker's pipe
//! so it never idles between tasks. If the worker dies or is killed, only the first job was
//! running; the others are given back unstarted, never run twice. A worker that dies mid-task
//! makes its task fail with `WorkerLost` at once (the retry policy applies); a worker that
//! keeps dying right after start is respawned with a growing delay instead of in a tight loop.
//!
//! The pool records nothing itself: attempts that end come back as [`Ended`], jobs to run
//! elsewhere as [`Returns::unstarted`], for the supervisor to pass on.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::dispatcher::Job;
use super::{Config, Every, WorkerKind};
use crate::app::Huey;
use crate::events::{Event, EventKind};
use crate::failure::{Failure, FailureKind};
use crate::message::Output;
use crate::storage::Lease;
use crate::worker::process::ProcessWorker;
use crate::worker::thread::ThreadWorker;
use crate::worker::{EventSink, Tagged, WorkerEvent};

use slot::{Slot, State, Worker};

mod slot;
#[cfg(test)]
mod tests;

/// An attempt that ended: its outcome is to be recorded.
pub(super) struct Ended {
    pub job: Box<Job>,
    pub outcome: Result<Output, Failure>,
    /// The worker's pid (process) or number (thread).
    pub worker: u32,
    pub elapsed: Duration,
    /// Its worker died while running it.
    pub lost: bool,
}

/// What a change in the pool hands back.
#[derive(Default)]
pub(super) struct Returns {
    pub ended: Vec<Ended>,
    /// Jobs that never started, in order, for the front of the waiting line.
    pub unstarted: VecDeque<Box<Job>>,
}

impl Returns {
    /// Put a slot's unstarted jobs ahead of those given back before (as if each batch had
    /// gone to the front of the waiting line at once).
    fn give_back(&mut self, jobs: VecDeque<Box<Job>>) {
        for j in jobs.into_iter().rev() {
            self.unstarted.push_front(j);
        }
    }
}

/// Running tasks cut short by a stop.
pub(super) struct Interrupted {
    pub count: u64,
    /// Their leases, to release (their deliveries count).
    pub leases: Vec<Lease>,
    /// The leases of the jobs queued behind them, never started (their deliveries do not).
    pub unstarted: Vec<Lease>,
}

pub(super) struct Pool {
    app: Huey,
    kind: WorkerKind,
    exe: Option<PathBuf>,
    max_tasks: Option<u32>,
    max_memory_kib: Option<u64>,
    log_tasks: bool,
    /// Where workers send their events.
    events: EventSink,
    slots: Vec<Slot>,
    /// When to look for running tasks revoked since they started.
    revocation_check: Every,
    /// No respawning: the supervisor is stopping.
    stopping: bool,
}

impl Pool {
    /// An empty pool (see [`Pool::add`]).
    pub fn new(app: &Huey, cfg: &Config, events: EventSink) -> Pool {
        let interval = cfg.health_check_interval;
        Pool {
            app: app.clone(),
            kind: cfg.kind,
            exe: cfg.worker_exe.clone(),
            max_tasks: cfg.max_tasks,
            max_memory_kib: cfg.max_memory_kib,
            log_tasks: cfg.log_tasks,
            events,
            slots: Vec::new(),
            revocation_check: Every::new(interval, Instant::now() + interval),
            stopping: false,
        }
    }

    /// The number of slots (retired ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many more jobs the workers take with queues of `depth`.
    pub fn room(&self, depth: usize) -> usize {
        self.slots.iter().map(|s| s.room(depth)).sum()
    }

    /// The slot with the most room that takes a job of `size` bytes, if any does.
    pub fn emptiest(&self, depth: usize, size: usize) -> Option<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].takes(depth, size))
            .max_by_key(|&i| self.slots[i].room(depth))
    }

    /// Hand a job to slot `i`'s worker (buffered: see [`Pool::flush`]); it starts at once if
    /// the worker was idle. Gives the job back if the worker is gone.
    pub fn hand_over(&mut self, i: usize, job: Box<Job>) -> Result<(), Box<Job>> {
        if self.slots[i].push(job)? {
            self.begin(i);
        }
        Ok(())
    }

    /// Send slot `i`'s buffered jobs to its worker, as far as its pipe takes them now.
    pub fn flush(&mut self, i: usize) {
        if let Some(Worker::Process(p)) = &mut self.slots[i].worker {
            p.flush();
        }
    }

    /// Go on writing what pipes did not take before; true while some bytes still wait (the
    /// loop then comes back soon rather than after a whole turn).
    pub fn flush_unsent(&mut self) -> bool {
        let mut left = false;
        for s in &mut self.slots {
            if let Some(Worker::Process(p)) = &mut s.worker {
                if p.unsent() > 0 {
                    left |= p.flush() > 0;
                }
            }
        }
        left
    }

    /// Every job handed to a worker (running ones first in each slot).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.slots.iter().flat_map(|s| s.jobs.iter().map(|j| &**j))
    }

    /// How many workers are running a task.
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| s.job().is_some()).count()
    }

    /// Stop respawning workers (the supervisor is stopping).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// A new slot, its worker starting (none once stopping).
    pub fn add(&mut self) {
        if self.stopping {
            return;
        }
        let now = Instant::now();
        self.slots.push(Slot {
            gen: 0,
            worker: None,
            state: State::Down {
                respawn_at: Some(now),
            },
            jobs: VecDeque::new(),
            tasks_run: 0,
            quick_deaths: 0,
            recycle: false,
            retired: false,
        });
        self.spawn(self.slots.len() - 1, now);
    }

    /// Retire one worker (SIGTTOU); keeps at least one.
    pub fn remove(&mut self) {
        if self.slots.iter().filter(|s| s.live()).count() <= 1 {
            return;
        }
        if let Some(s) = self.slots.iter_mut().rev().find(|s| s.live()) {
            if !s.jobs.is_empty() {
                s.recycle = true;
            } else {
                s.stop_worker(false);
                s.gen += 1;
                s.state = State::Down { respawn_at: None };
            }
            // A busy retiring slot finishes its task, then stays down.
            s.retired = true;
        }
    }

    /// Start a worker in slot `i`; never once stopping (a SIGHUP, a recycle or a timeout
    /// during a stop leaves the slot down).
    fn spawn(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        if self.stopping {
            slot.state = State::Down { respawn_at: None };
            return;
        }
        slot.gen += 1;
        slot.tasks_run = 0;
        slot.recycle = false;
        let gen = slot.gen;
        let events = self.events.clone();
        let started = match self.kind {
            WorkerKind::Thread => {
                ThreadWorker::spawn(self.app.clone(), i, gen, i as u32 + 1, events)
                    .map(Worker::Thread)
            }
            WorkerKind::Process => {
                let exe = match &self.exe {
                    Some(p) => Ok(p.clone()),
                    None => std::env::current_exe(),
                };
                let url = self.app.storage_url().ok_or_else(|| {
                    std::io::Error::other("the app was not opened from a storage URL")
                });
                exe.and_then(|exe| ProcessWorker::spawn(&exe, url?, i, gen, events))
                    .map(Worker::Process)
            }
        };
        match started {
            Ok(w) => {
                slot.worker = Some(w);
                slot.state = State::Starting;
            }
            Err(e) => {
                tracing::error!("could not start worker {}: {e}", i + 1);
                self.schedule_respawn(i, true, now);
            }
        }
    }

    /// Respawn a slot's worker: at once, unless it keeps failing to start (`boot_failure`: it
    /// died before it was ready), when each try waits twice as long (up to 30 s). A worker
    /// killed while running tasks is a task's doing, not a boot loop: it is replaced at once.
    fn schedule_respawn(&mut self, i: usize, boot_failure: bool, now: Instant) {
        let slot = &mut self.slots[i];
        if slot.retired {
            slot.state = State::Down { respawn_at: None };
            return;
        }
        slot.quick_deaths = if boot_failure {
            slot.quick_deaths + 1
        } else {
            0
        };
        let delay = respawn_delay(slot.quick_deaths);
        if slot.quick_deaths >= 3 {
            tracing::error!(
                "worker {} keeps dying at start; next try in {delay:?}",
                i + 1
            );
        }
        slot.state = State::Down {
            respawn_at: Some(now + delay),
        };
    }

    /// A worker's event: ready, an attempt done (the next queued job starts), or gone.
    pub fn on_event(&mut self, t: Tagged) -> Returns {
        let mut out = Returns::default();
        let Some(slot) = self.slots.get_mut(t.slot) else {
            return out;
        };
        if slot.gen != t.gen {
            return out; // from a worker already replaced
        }
        match t.event {
            WorkerEvent::Ready { pid } => {
                if matches!(slot.state, State::Starting) {
                    slot.state = State::Up;
                    tracing::debug!(worker = pid, "worker ready");
                }
            }
            WorkerEvent::Done {
                job,
                outcome,
                rss_kib,
            } => {
                if let Some(ended) = self.on_done(t.slot, job, outcome, rss_kib) {
                    out.ended.push(ended);
                }
            }
            WorkerEvent::Exited { status } => self.on_exit(t.slot, &status, &mut out),
        }
        out
    }

    fn on_done(
        &mut self,
        i: usize,
        job: u64,
        outcome: Result<Output, Failure>,
        rss_kib: u64,
    ) -> Option<Ended> {
        let slot = &mut self.slots[i];
        if slot.jobs.front().is_none_or(|j| j.id != job) {
            return None;
        }
        let j = slot.jobs.pop_front().expect("checked");
        let elapsed = j.started.elapsed();
        slot.tasks_run += 1;
        slot.quick_deaths = 0;
        let worker = slot.worker_id();
        let over_tasks = self.max_tasks.is_some_and(|m| slot.tasks_run >= m);
        let over_memory =
            self.max_memory_kib.is_some_and(|m| rss_kib > m) && self.kind == WorkerKind::Process;
        if over_tasks || over_memory {
            // No more jobs for it; it is replaced once its queue is empty.
            slot.recycle = true;
            if over_memory {
                tracing::info!(worker, rss_kib, "recycling worker over its memory limit");
            }
        }
        let retire = slot.recycle && slot.jobs.is_empty();
        self.begin(i);
        if retire {
            self.recycle(i);
        }
        Some(Ended {
            job: j,
            outcome,
            worker,
            elapsed,
            lost: false,
        })
    }

    fn on_exit(&mut self, i: usize, status: &str, out: &mut Returns) {
        let slot = &mut self.slots[i];
        let pid = slot.worker_id();
        let boot_failure = matches!(slot.state, State::Starting);
        slot.worker = None;
        slot.state = State::Down { respawn_at: None };
        out.give_back(slot.unstarted());
        match slot.jobs.pop_front() {
            Some(job) => {
                tracing::error!(worker = pid, id = %job.msg.id, task = %job.msg.task, "worker {status} while running a task");
                let f = Failure::new(FailureKind::WorkerLost, format!("worker {pid} {status}"));
                out.ended.push(Ended {
                    elapsed: job.started.elapsed(),
                    job,
                    outcome: Err(f),
                    worker: pid,
                    lost: true,
                });
            }
            _ if !self.stopping => tracing::warn!(worker = pid, "worker {status}"),
            _ => {}
        }
        if !self.stopping {
            self.schedule_respawn(i, boot_failure, Instant::now());
        }
    }

    /// The slot's first job has started: time it, log it, tell the handlers.
    fn begin(&mut self, i: usize) {
        let worker = self.slots[i].worker_id();
        let Some(job) = self.slots[i].jobs.front_mut() else {
            return;
        };
        job.started = Instant::now();
        job.deadline = job
            .msg
            .options
            .timeout_ms
            .map(|t| job.started + Duration::from_millis(t));
        if self.log_tasks {
            tracing::info!(id = %job.msg.id, task = %job.msg.task, attempt = job.msg.attempt, worker, "task started");
        }
        if self.app.has_event_handlers() {
            self.app
                .emit(&Event::for_message(EventKind::Executing, &job.msg));
        }
    }

    /// Replace a slot's worker with a fresh one (after its current task).
    fn recycle(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.stop_worker(false);
        if s.retired {
            s.gen += 1;
            s.state = State::Down { respawn_at: None };
            return;
        }
        self.spawn(i, Instant::now());
    }

    /// SIGHUP: every worker is replaced, idle ones now, busy ones after their task.
    pub fn restart(&mut self) {
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Up if !self.slots[i].jobs.is_empty() => self.slots[i].recycle = true,
                State::Up | State::Starting => self.recycle(i),
                State::Down { .. } => {}
            }
        }
    }

    /// Once per health-check interval: process workers running a task revoked since it
    /// started are killed (and replaced); the task is recorded as revoked. One read of the
    /// revocations of the running tasks per check, only while busy.
    pub fn cancel_revoked(&mut self, now: Instant) -> Returns {
        let mut out = Returns::default();
        if !self.revocation_check.due(now) || self.kind != WorkerKind::Process || self.busy() == 0 {
            return out;
        }
        let running = self.slots.iter().filter_map(|s| s.job()).map(|j| &j.msg);
        let rev = match self.app.revocations_for(running) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("could not read revocations: {e}");
                return out;
            }
        };
        if rev.is_empty() {
            return out;
        }
        for i in 0..self.slots.len() {
            let revoked = self.slots[i]
                .job()
                .is_some_and(|j| self.app.is_revoked(&j.msg, &rev).unwrap_or(false));
            if !revoked {
                continue;
            }
            let (job, worker) = self.kill_running(i, &mut out);
            tracing::info!(id = %job.msg.id, task = %job.msg.task, worker, "revoked while running: worker killed");
            let f = Failure::new(
                FailureKind::Revoked,
                format!("revoked while running; worker {worker} was killed"),
            );
            out.ended.push(Ended::killed(job, f, worker));
            if !self.stopping {
                self.spawn(i, now);
            }
        }
        out
    }

    /// Every loop turn (no I/O): kill workers whose task ran past its timeout, respawn those
    /// whose time has come.
    pub fn check(&mut self, now: Instant) -> Returns {
        let mut out = Returns::default();
        for i in 0..self.slots.len() {
            let timed_out = self.slots[i]
                .job()
                .is_some_and(|j| j.deadline.is_some_and(|d| d <= now));
            if timed_out {
                let (job, worker) = self.kill_running(i, &mut out);
                let limit = Duration::from_millis(job.msg.options.timeout_ms.unwrap_or(0));
                let f = Failure::new(
                    FailureKind::Timeout,
                    format!("ran past its {limit:?} timeout; worker {worker} was replaced"),
                );
                out.ended.push(Ended::killed(job, f, worker));
                if !self.stopping {
                    self.spawn(i, now);
                }
                continue;
            }
            if let State::Down {
                respawn_at: Some(at),
            } = self.slots[i].state
            {
                if at <= now && !self.stopping {
                    self.spawn(i, now);
                }
            }
        }
        out
    }

    /// Kill a slot's worker; returns its running job (its queued jobs are given back).
    fn kill_running(&mut self, i: usize, out: &mut Returns) -> (Box<Job>, u32) {
        let slot = &mut self.slots[i];
        let worker = slot.worker_id();
        slot.stop_worker(true);
        slot.state = State::Starting;
        out.give_back(slot.unstarted());
        let job = slot.jobs.pop_front().expect("a running job");
        (job, worker)
    }

    /// Stop deadline or second signal: kill busy workers; their tasks are to be given back
    /// unacked.
    pub fn interrupt(&mut self) -> Interrupted {
        let mut out = Interrupted {
            count: 0,
            leases: Vec::new(),
            unstarted: Vec::new(),
        };
        for s in &mut self.slots {
            for job in s.unstarted() {
                out.unstarted.push(job.lease);
            }
            if let Some(job) = s.jobs.pop_front() {
                s.state = State::Down { respawn_at: None };
                tracing::warn!(id = %job.msg.id, task = %job.msg.task, worker = s.worker_id(), "task interrupted; it will be redelivered");
                self.app
                    .emit(&Event::for_message(EventKind::Interrupted, &job.msg));
                out.leases.push(job.lease);
                out.count += 1;
                s.stop_worker(true);
                s.gen += 1;
            }
        }
        out
    }

    /// Close every worker's pipe: process workers run their shutdown hooks and exit, thread
    /// workers end after their task. Returns the (slot, generation) of each process worker
    /// whose exit is to be awaited; their other events are ignored from now on.
    pub fn stop_all(&mut self) -> Vec<Exiting> {
        let mut exiting = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Some(Worker::Process(p)) = &s.worker {
                exiting.push(Exiting {
                    slot: i,
                    gen: s.gen,
                    pid: p.pid(),
                });
            }
            s.stop_worker(false);
            s.gen += 1;
        }
        exiting
    }
}

/// A process worker told to stop, until its exit is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exiting {
    pub slot: usize,
    pub gen: u64,
    pub pid: u32,
}

impl Exiting {
    /// SIGKILL it and its process group (what its tasks started).
    pub fn kill(&self) {
        crate::worker::process::kill_group(self.pid);
    }
}

impl Ended {
    /// An attempt cut short by killing its worker.
    fn killed(job: Box<Job>, f: Failure, worker: u32) -> Ended {
        Ended {
            elapsed: job.started.elapsed(),
            job,
            outcome: Err(f),
            worker,
            lost: false,
        }
    }
}

/// How long to wait before respawning a worker that died before it was ready this many times
/// in a row: doubling from 200 ms, at most 30 s.
fn respawn_delay(quick_deaths: u32) -> Duration {
    if quick_deaths == 0 {
        Duration::ZERO
    } else {
        (Duration::from_millis(100) * 2u32.pow(quick_deaths.min(8))).min(Duration::from_secs(30))
    }
}
