//! The worker pool: slots, their workers' life cycle, and what happens when a worker dies, runs
//! past a task's timeout, runs a task revoked since it started, or is due for recycling.
//!
//! A slot holds one worker at a time, tagged with a generation number; events from an older
//! generation (a worker already replaced) are ignored. A slot's worker runs up to its
//! concurrency of jobs at once (see `slot`); a sequential worker's extra jobs (only when tasks
//! are fast, see `dispatcher`) wait in its pipe so it never idles between tasks. If the worker
//! dies or is killed, only its running jobs were running; the others are given back unstarted,
//! never run twice. A worker that dies mid-task makes its tasks fail with `WorkerLost` at once
//! (the retry policy applies); a worker that keeps dying right after start is respawned with a
//! growing delay instead of in a tight loop. Timeouts and revocations are in `health`.
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
use crate::worker::process::{self, ProcessWorker, ResultPipe};
use crate::worker::runtime::AsyncWorker;
use crate::worker::thread::ThreadWorker;
use crate::worker::{EventSink, Tagged, WorkerEvent};

use slot::{Slot, State, Worker};

mod health;
mod slot;
mod snapshot;
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
    /// How many attempts each worker runs at once.
    concurrency: usize,
    /// Where thread and async workers send their events.
    events: EventSink,
    slots: Vec<Slot>,
    /// The result pipes of process workers not yet seen to exit (stopped ones included), read
    /// by the supervisor's loop ([`Pool::pipes`], [`Pool::read_pipes`]).
    pipes: Vec<ResultPipe>,
    /// When to look for running tasks revoked since they started.
    revocation_check: Every,
    /// No respawning: the supervisor is stopping.
    stopping: bool,
    /// How long a process worker may send nothing before it is taken for frozen.
    stall_timeout: Option<Duration>,
    /// The last health check, and until when frozen workers are not looked for (after a
    /// pause of the supervisor itself, its loop first reads the heartbeats waiting in the pipes).
    last_check: Instant,
    stall_checks_from: Instant,
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
            concurrency: match cfg.kind {
                WorkerKind::Async => cfg.workers,
                _ => cfg.concurrency,
            }
            .max(1),
            events,
            slots: Vec::new(),
            pipes: Vec::new(),
            revocation_check: Every::new(interval, Instant::now() + interval),
            stopping: false,
            stall_timeout: cfg.worker_stall_timeout.filter(|t| !t.is_zero()),
            last_check: Instant::now(),
            stall_checks_from: Instant::now(),
        }
    }

    /// How many attempts the workers run at once, all together (retired slots included).
    pub fn lanes(&self) -> usize {
        self.slots.len() * self.concurrency
    }

    /// How many more jobs the workers take with queues of `depth` (`ahead` beyond its
    /// concurrency for an async worker).
    pub fn room(&self, depth: usize, ahead: usize) -> usize {
        self.slots.iter().map(|s| s.room(depth, ahead)).sum()
    }

    /// The slot with the most room that takes a job of `size` bytes, if any does.
    pub fn emptiest(&self, depth: usize, ahead: usize, size: usize) -> Option<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].takes(depth, ahead, size))
            .max_by_key(|&i| self.slots[i].room(depth, ahead))
    }

    /// How many attempts each worker runs at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Hand a job to slot `i`'s worker (buffered: see [`Pool::flush`]); it starts at once if
    /// the worker was idle. Gives the job back if the worker is gone.
    pub fn hand_over(&mut self, i: usize, job: Box<Job>) -> Result<(), Box<Job>> {
        if let Some(id) = self.slots[i].push(job)? {
            self.begin(i, id);
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

    /// The result pipes to poll for reading, in the order [`Pool::read_pipes`] takes.
    pub fn pipes(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.pipes.iter().map(ResultPipe::fd)
    }

    /// Read the result pipes that `poll` found ready (`ready[k]` for the k-th of
    /// [`Pool::pipes`]), appending their workers' events to `out`; the pipes of workers seen to
    /// exit are dropped (their `Exited` event is in `out`).
    pub fn read_pipes(&mut self, ready: &[bool], out: &mut Vec<Tagged>) {
        let mut k = 0;
        self.pipes.retain_mut(|p| {
            let gone = ready.get(k).copied().unwrap_or(false) && p.read(out);
            k += 1;
            !gone
        });
    }

    /// Every job handed to a worker (running ones first in each slot).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.slots
            .iter()
            .flat_map(|s| s.running.values().chain(s.queued.iter()).map(|j| &**j))
    }

    /// How many attempts are running.
    pub fn busy(&self) -> usize {
        self.slots.iter().map(|s| s.running.len()).sum()
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
        let futures = self.kind == WorkerKind::Async;
        self.slots.push(Slot::new(self.concurrency, futures, now));
        self.spawn(self.slots.len() - 1, now);
    }

    /// Retire one worker (SIGTTOU); keeps at least one.
    pub fn remove(&mut self) {
        // A slot already retiring (busy, it finishes its task first) is not counted or picked
        // again: each SIGTTOU retires one more worker.
        let staying = |s: &Slot| s.live() && !s.retired;
        if self.slots.iter().filter(|s| staying(s)).count() <= 1 {
            return;
        }
        if let Some(s) = self.slots.iter_mut().rev().find(|s| staying(s)) {
            if !s.is_idle() {
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
            WorkerKind::Async => {
                let n = self.concurrency;
                AsyncWorker::spawn(self.app.clone(), i, gen, i as u32 + 1, n, events)
                    .map(Worker::Async)
            }
            WorkerKind::Process => {
                let exe = match &self.exe {
                    Some(p) => Ok(p.clone()),
                    None => std::env::current_exe(),
                };
                let url = self.app.storage_url().ok_or_else(|| {
                    std::io::Error::other("the app was not opened from a storage URL")
                });
                let n = self.concurrency;
                let beat = self
                    .stall_timeout
                    .map_or(Duration::ZERO, heartbeat_interval);
                let settings = process::Settings {
                    concurrency: n,
                    heartbeat: beat,
                    measure_memory: self.max_memory_kib.is_some(),
                };
                let started =
                    exe.and_then(|exe| ProcessWorker::spawn(&exe, url?, settings, i, gen));
                started.map(|(worker, pipe)| {
                    self.pipes.push(pipe);
                    Worker::Process(worker)
                })
            }
        };
        match started {
            Ok(w) => {
                crate::observe::count_worker(crate::observe::WorkerChange::Start);
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
        let (j, next) = slot.end(job)?;
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
        let retire = slot.recycle && slot.is_idle();
        if let Some(id) = next {
            self.begin(i, id);
        }
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
        let running = slot.take_running();
        if running.is_empty() && !self.stopping {
            tracing::warn!(worker = pid, "worker {status}");
        }
        for job in running.into_values() {
            tracing::error!(worker = pid, id = %job.msg.id, task = %job.msg.task, "worker {status} while running a task");
            out.ended
                .push(Ended::lost(job, format!("worker {pid} {status}"), pid));
        }
        if !self.stopping {
            crate::observe::count_worker(crate::observe::WorkerChange::Death);
            self.schedule_respawn(i, boot_failure, Instant::now());
        }
    }

    /// A job of the slot has started: time it, log it, tell the handlers.
    fn begin(&mut self, i: usize, id: u64) {
        let worker = self.slots[i].worker_id();
        let Some(job) = self.slots[i].running.get_mut(&id) else {
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
        crate::observe::count_worker(crate::observe::WorkerChange::Recycle);
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
                State::Up if !self.slots[i].is_idle() => self.slots[i].recycle = true,
                State::Up | State::Starting => self.recycle(i),
                State::Down { .. } => {}
            }
        }
    }

    /// Close every worker's pipe: process workers run their shutdown hooks and exit, thread
    /// workers end after their task, async workers run their shutdown hooks once idle.
    /// Returns the (slot, generation) of each process or async worker whose exit is to be
    /// awaited; their other events are ignored from now on.
    pub fn stop_all(&mut self) -> Vec<Exiting> {
        let mut exiting = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let pid = match &s.worker {
                Some(Worker::Process(p)) => Some(p.pid()),
                // Its shutdown hooks run on a thread of its own, waited for the same way.
                Some(Worker::Async(_)) => None,
                _ => continue,
            };
            exiting.push(Exiting {
                slot: i,
                gen: s.gen,
                pid,
            });
        }
        for s in &mut self.slots {
            s.stop_worker(false);
            s.gen += 1;
        }
        exiting
    }
}

/// A process or async worker told to stop, until its exit is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exiting {
    pub slot: usize,
    pub gen: u64,
    /// The worker's process (`None`: an async worker, in the supervisor's own process).
    pub pid: Option<u32>,
}

impl Exiting {
    /// SIGKILL a worker process and its process group (what its tasks started); an async
    /// worker's hooks are left behind when the supervisor exits.
    pub fn kill(&self) {
        if let Some(pid) = self.pid {
            crate::worker::process::kill_group(pid);
        }
    }
}

impl Ended {
    /// An attempt whose worker died or was killed as frozen: it failed with `WorkerLost`, its
    /// delivery counted.
    fn lost(job: Box<Job>, why: String, worker: u32) -> Ended {
        Ended {
            elapsed: job.started.elapsed(),
            job,
            outcome: Err(Failure::new(FailureKind::WorkerLost, why)),
            worker,
            lost: true,
        }
    }

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

/// How often a process worker sends a heartbeat, for a stall timeout of `stall`: every second,
/// more often for a stall timeout under 4 s (never less than 4 beats in a timeout).
fn heartbeat_interval(stall: Duration) -> Duration {
    (stall / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
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
