//! Health: worker slots, their life cycle, and what happens when a worker dies, runs past a
//! task's timeout, or is due for recycling.
//!
//! A slot holds one worker at a time, tagged with a generation number; events from an older
//! generation (a worker already replaced) are ignored. A slot's jobs are a queue: the first is
//! running, the others (only when tasks are fast, see `dispatch`) wait in the worker's pipe so
//! it never idles between tasks. If the worker dies or is killed, only the first job was
//! running; the others go back to the parent's waiting line, never run twice. A worker that dies mid-task makes its
//! task fail with `WorkerLost` at once (the retry policy applies); a worker that keeps dying
//! right after start is respawned with a growing delay instead of in a tight loop.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::dispatch::Job;
use super::{Supervisor, WorkerKind};
use crate::failure::{Failure, FailureKind};
use crate::worker::process::ProcessWorker;
use crate::worker::thread::ThreadWorker;
use crate::worker::{Tagged, WorkerEvent};

enum Worker {
    Process(ProcessWorker),
    Thread(ThreadWorker),
}

enum State {
    /// Spawned, not ready yet.
    Starting,
    /// Ready for work (idle when its job queue is empty).
    Up,
    /// No live worker: respawn at this time (or never, for a removed slot).
    Down { respawn_at: Option<Instant> },
}

pub(super) struct Slot {
    gen: u64,
    worker: Option<Worker>,
    state: State,
    /// Jobs handed to the worker, in order; the first is running.
    jobs: VecDeque<Box<Job>>,
    spawned_at: Instant,
    tasks_run: u32,
    /// Consecutive deaths soon after start.
    quick_deaths: u32,
    /// Restart after the current task (SIGHUP, recycling).
    recycle: bool,
    /// Removed by SIGTTOU: once its worker is gone, the slot stays down.
    retired: bool,
}

impl Slot {
    /// How many more jobs it takes with a queue of `depth`.
    pub fn room(&self, depth: usize) -> usize {
        match self.state {
            State::Up if !self.recycle => depth.saturating_sub(self.jobs.len()),
            _ => 0,
        }
    }

    /// The running job.
    pub fn job(&self) -> Option<&Job> {
        self.jobs.front().map(|j| &**j)
    }

    pub fn running_mut(&mut self) -> Option<&mut Job> {
        self.jobs.front_mut().map(|j| &mut **j)
    }

    /// Every job handed to the worker (the running one first).
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|j| &**j)
    }

    /// Send buffered jobs to the worker.
    pub fn flush(&mut self) {
        if let Some(Worker::Process(p)) = &mut self.worker {
            p.flush();
        }
    }

    /// The worker's pid (process) or number (thread).
    pub fn worker_id(&self) -> u32 {
        match &self.worker {
            Some(Worker::Process(p)) => p.pid(),
            Some(Worker::Thread(t)) => t.num(),
            None => 0,
        }
    }

    /// Hand a job to the worker (buffered: see [`Slot::flush`]). Returns whether it is the
    /// one now running; gives the job back if the worker is gone.
    pub fn push(&mut self, job: Box<Job>) -> Result<bool, Box<Job>> {
        let sent = match &mut self.worker {
            Some(Worker::Process(p)) => p.send(job.id, &job.payload).is_ok(),
            Some(Worker::Thread(t)) => t.send(job.id, job.msg.clone()),
            None => false,
        };
        if sent {
            self.jobs.push_back(job);
            Ok(self.jobs.len() == 1)
        } else {
            self.state = State::Starting;
            Err(job)
        }
    }

    fn stop_worker(&mut self, kill: bool) {
        match self.worker.take() {
            Some(Worker::Process(mut p)) if kill => p.kill(),
            Some(Worker::Process(mut p)) => p.stop(),
            Some(Worker::Thread(mut t)) if kill => t.abandon(),
            Some(Worker::Thread(mut t)) => t.stop(),
            None => {}
        }
    }

    /// The jobs queued behind the running one, which never started.
    fn unstarted(&mut self) -> VecDeque<Box<Job>> {
        if self.jobs.len() > 1 {
            self.jobs.split_off(1)
        } else {
            VecDeque::new()
        }
    }
}

impl Supervisor {
    pub(super) fn add_slot(&mut self) {
        self.slots.push(Slot {
            gen: 0,
            worker: None,
            state: State::Down {
                respawn_at: Some(Instant::now()),
            },
            jobs: VecDeque::new(),
            spawned_at: Instant::now(),
            tasks_run: 0,
            quick_deaths: 0,
            recycle: false,
            retired: false,
        });
        let i = self.slots.len() - 1;
        self.spawn(i);
    }

    /// Retire one worker (SIGTTOU); keeps at least one.
    pub(super) fn remove_slot(&mut self) {
        let live = self
            .slots
            .iter()
            .filter(|s| !matches!(s.state, State::Down { respawn_at: None }))
            .count();
        if live <= 1 {
            return;
        }
        if let Some(i) = self
            .slots
            .iter()
            .rposition(|s| !matches!(s.state, State::Down { respawn_at: None }))
        {
            let s = &mut self.slots[i];
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

    fn spawn(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.gen += 1;
        slot.spawned_at = Instant::now();
        slot.tasks_run = 0;
        slot.recycle = false;
        let gen = slot.gen;
        let events = self.worker_tx.clone();
        let started = match self.cfg.kind {
            WorkerKind::Thread => {
                ThreadWorker::spawn(self.app.clone(), i, gen, i as u32 + 1, events)
                    .map(Worker::Thread)
            }
            WorkerKind::Process => {
                let exe = match &self.cfg.worker_exe {
                    Some(p) => Ok(p.clone()),
                    None => std::env::current_exe(),
                };
                let env = vec![("HUEY_STORAGE".to_string(), self.cfg.storage_url.clone())];
                exe.and_then(|exe| ProcessWorker::spawn(&exe, &env, i, gen, events))
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
                self.schedule_respawn(i, true);
            }
        }
    }

    /// Respawn a slot's worker: at once, unless it keeps failing to start (`boot_failure`: it
    /// died before it was ready), when each try waits twice as long (up to 30 s). A worker
    /// killed while running tasks is a task's doing, not a boot loop: it is replaced at once.
    fn schedule_respawn(&mut self, i: usize, boot_failure: bool) {
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
        let delay = if slot.quick_deaths == 0 {
            Duration::ZERO
        } else {
            (Duration::from_millis(100) * 2u32.pow(slot.quick_deaths.min(8)))
                .min(Duration::from_secs(30))
        };
        if slot.quick_deaths >= 3 {
            tracing::error!(
                "worker {} keeps dying at start; next try in {delay:?}",
                i + 1
            );
        }
        slot.state = State::Down {
            respawn_at: Some(Instant::now() + delay),
        };
    }

    pub(super) fn on_worker_event(&mut self, t: Tagged) {
        let Some(slot) = self.slots.get_mut(t.slot) else {
            return;
        };
        if slot.gen != t.gen {
            return; // from a worker already replaced
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
                if slot.jobs.front().is_none_or(|j| j.id != job) {
                    return;
                }
                let j = slot.jobs.pop_front().expect("checked");
                slot.tasks_run += 1;
                slot.quick_deaths = 0;
                let worker = slot.worker_id();
                let over_tasks = self.cfg.max_tasks.is_some_and(|m| slot.tasks_run >= m);
                let over_memory = self.cfg.max_memory_kib.is_some_and(|m| rss_kib > m)
                    && self.cfg.kind == WorkerKind::Process;
                if over_tasks || over_memory {
                    // No more jobs for it; it is replaced once its queue is empty.
                    slot.recycle = true;
                    if over_memory {
                        tracing::info!(worker, rss_kib, "recycling worker over its memory limit");
                    }
                }
                let retire = slot.recycle && slot.jobs.is_empty();
                self.begin(t.slot);
                self.complete_job(*j, outcome, worker);
                if retire {
                    self.recycle(t.slot);
                }
            }
            WorkerEvent::Exited { status } => {
                let pid = slot.worker_id();
                let boot_failure = matches!(slot.state, State::Starting);
                slot.worker = None;
                slot.state = State::Down { respawn_at: None };
                let unstarted = slot.unstarted();
                let running = slot.jobs.pop_front();
                self.requeue(unstarted);
                match running {
                    Some(job) => {
                        self.stats.workers_lost += 1;
                        tracing::error!(worker = pid, id = %job.msg.id, task = %job.msg.task, "worker {status} while running a task");
                        let f =
                            Failure::new(FailureKind::WorkerLost, format!("worker {pid} {status}"));
                        self.complete_job(*job, Err(f), pid);
                    }
                    _ if self.stopping.is_none() => tracing::warn!(worker = pid, "worker {status}"),
                    _ => {}
                }
                if self.stopping.is_none() {
                    self.schedule_respawn(t.slot, boot_failure);
                }
            }
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
        self.spawn(i);
    }

    /// SIGHUP: every worker is replaced, idle ones now, busy ones after their task.
    pub(super) fn restart_workers(&mut self) {
        for i in 0..self.slots.len() {
            match self.slots[i].state {
                State::Up if !self.slots[i].jobs.is_empty() => self.slots[i].recycle = true,
                State::Up | State::Starting => self.recycle(i),
                State::Down { .. } => {}
            }
        }
    }

    /// Process workers running a task revoked since it started are killed (and replaced); the
    /// task is recorded as revoked. One read of the revocations per check, only while busy.
    pub(super) fn cancel_revoked(&mut self) {
        if self.cfg.kind != WorkerKind::Process || self.busy_count() == 0 {
            return;
        }
        let rev = match self.app.revocations() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("could not read revocations: {e}");
                return;
            }
        };
        if rev.is_empty() {
            return;
        }
        for i in 0..self.slots.len() {
            let revoked = self.slots[i]
                .job()
                .is_some_and(|j| self.app.is_revoked(&j.msg, &rev).unwrap_or(false));
            if !revoked {
                continue;
            }
            let (job, worker) = self.kill_running(i);
            tracing::info!(id = %job.msg.id, task = %job.msg.task, worker, "revoked while running: worker killed");
            let f = Failure::new(
                FailureKind::Revoked,
                format!("revoked while running; worker {worker} was killed"),
            );
            self.complete_job(*job, Err(f), worker);
            if self.stopping.is_none() {
                self.spawn(i);
            }
        }
    }

    /// Timeouts and respawns.
    pub(super) fn check_health(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let timed_out = self.slots[i]
                .job()
                .is_some_and(|j| j.deadline.is_some_and(|d| d <= now));
            if timed_out {
                let (job, worker) = self.kill_running(i);
                let limit = Duration::from_millis(job.msg.options.timeout_ms.unwrap_or(0));
                let f = Failure::new(
                    FailureKind::Timeout,
                    format!("ran past its {limit:?} timeout; worker {worker} was replaced"),
                );
                self.complete_job(*job, Err(f), worker);
                if self.stopping.is_none() {
                    self.spawn(i);
                }
                continue;
            }
            if let State::Down {
                respawn_at: Some(at),
            } = self.slots[i].state
            {
                if at <= now && self.stopping.is_none() {
                    self.spawn(i);
                }
            }
        }
    }

    pub(super) fn busy_count(&self) -> usize {
        self.slots.iter().filter(|s| s.job().is_some()).count()
    }

    /// Kill a slot's worker; returns its running job (its queued jobs go back to waiting).
    fn kill_running(&mut self, i: usize) -> (Box<Job>, u32) {
        let slot = &mut self.slots[i];
        let worker = slot.worker_id();
        slot.stop_worker(true);
        slot.state = State::Starting;
        let unstarted = slot.unstarted();
        let job = slot.jobs.pop_front().expect("a running job");
        self.requeue(unstarted);
        (job, worker)
    }

    /// Jobs that never started go back to the front of the waiting line, in order.
    fn requeue(&mut self, jobs: VecDeque<Box<Job>>) {
        for j in jobs.into_iter().rev() {
            self.waiting.push_front(j);
        }
    }

    /// Stop deadline or second signal: kill busy workers and give their tasks back unacked.
    pub(super) fn interrupt_busy(&mut self) {
        let mut leases = Vec::new();
        for s in &mut self.slots {
            for job in s.unstarted() {
                leases.push(job.lease);
            }
            if let Some(job) = s.jobs.pop_front() {
                s.state = State::Down { respawn_at: None };
                tracing::warn!(id = %job.msg.id, task = %job.msg.task, worker = s.worker_id(), "task interrupted; it will be redelivered");
                self.app.emit(&crate::events::Event::for_message(
                    crate::events::EventKind::Interrupted,
                    &job.msg,
                ));
                leases.push(job.lease);
                self.stats.interrupted += 1;
                s.stop_worker(true);
                s.gen += 1;
            }
        }
        self.release(&leases);
    }

    /// Close every worker's pipe (process workers exit; thread workers end after their task),
    /// then give process workers a moment to exit before killing them.
    pub(super) fn stop_all_workers(&mut self) {
        for s in &mut self.slots {
            s.stop_worker(false);
            s.gen += 1;
        }
    }
}
