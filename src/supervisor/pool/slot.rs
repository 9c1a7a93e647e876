//! One slot of the pool: the worker in it (if any), its state, and the jobs handed to it.
//!
//! A slot's worker runs up to `concurrency` attempts at once. A worker that runs one at a time
//! (thread workers, process workers without `--concurrency`) also takes a few more jobs into
//! its pipe when tasks are fast; they start in order as the running one ends. A concurrent
//! worker (`--kind async`, process workers with `--concurrency`) starts every job it is handed
//! at once, and its attempts end in any order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::supervisor::dispatcher::{Job, PIPE_BYTES};
use crate::worker::process::ProcessWorker;
use crate::worker::runtime::AsyncWorker;
use crate::worker::thread::ThreadWorker;

/// The worker in a slot, of any kind.
pub(super) enum Worker {
    Process(ProcessWorker),
    Thread(ThreadWorker),
    Async(AsyncWorker),
}

/// Where a slot's worker is in its life.
pub(super) enum State {
    /// Spawned, not ready yet.
    Starting,
    /// Ready for work (idle when it has no job).
    Up,
    /// No live worker: respawn at this time (or never, for a removed slot).
    Down { respawn_at: Option<Instant> },
}

/// A place for one worker, kept across the workers that fill it in turn.
pub(super) struct Slot {
    pub(super) gen: u64,
    pub(super) worker: Option<Worker>,
    pub(super) state: State,
    /// How many attempts its worker runs at once.
    pub(super) concurrency: usize,
    /// Its worker runs attempts as futures, which it cancels one by one.
    pub(super) futures: bool,
    /// Its worker is a runner in this process (`--kind async`): it also takes jobs beyond its
    /// concurrency, which it starts itself, in order, as running ones end.
    pub(super) in_process: bool,
    /// The running jobs, by job id.
    pub(super) running: BTreeMap<u64, Box<Job>>,
    /// Jobs waiting in the pipe of a worker that runs one at a time, in order.
    pub(super) queued: VecDeque<Box<Job>>,
    /// Running jobs the worker was asked to cancel, and when.
    pub(super) cancelling: HashMap<u64, Instant>,
    pub(super) tasks_run: u32,
    /// Consecutive deaths soon after start.
    pub(super) quick_deaths: u32,
    /// Restart after the current task (SIGHUP, recycling).
    pub(super) recycle: bool,
    /// Removed by SIGTTOU: once its worker is gone, the slot stays down.
    pub(super) retired: bool,
}

impl Slot {
    /// An empty slot whose workers run `concurrency` attempts at once (as futures, or one by
    /// one).
    pub(super) fn new(concurrency: usize, futures: bool, now: Instant) -> Slot {
        Slot {
            gen: 0,
            worker: None,
            state: State::Down {
                respawn_at: Some(now),
            },
            concurrency: concurrency.max(1),
            futures: futures || concurrency > 1,
            in_process: futures,
            running: BTreeMap::new(),
            queued: VecDeque::new(),
            cancelling: HashMap::new(),
            tasks_run: 0,
            quick_deaths: 0,
            recycle: false,
            retired: false,
        }
    }

    /// Whether its worker runs attempts as futures: it starts every job it is handed at once,
    /// ends them in any order, and cancels them one by one.
    pub(super) fn concurrent(&self) -> bool {
        self.futures
    }

    /// How many more jobs it takes: a concurrent worker up to its concurrency (plus `ahead`
    /// waiting, for one in this process), a sequential one up to a queue of `depth`.
    pub(super) fn room(&self, depth: usize, ahead: usize) -> usize {
        let capacity = if self.in_process {
            self.concurrency + ahead
        } else if self.concurrent() {
            self.concurrency
        } else {
            depth
        };
        match self.state {
            State::Up if !self.recycle => capacity.saturating_sub(self.len()),
            _ => 0,
        }
    }

    /// Jobs handed to it, running or queued.
    pub(super) fn len(&self) -> usize {
        self.running.len() + self.queued.len()
    }

    /// No job handed to it.
    pub(super) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.queued.is_empty()
    }

    /// Whether it takes a job of `size` bytes now: it has room for another job, and the job
    /// either runs at once or fits in the pipe's byte budget behind the running one (a large
    /// frame never waits in a pipe behind a task that may turn out long).
    pub(super) fn takes(&self, depth: usize, ahead: usize, size: usize) -> bool {
        self.room(depth, ahead) > 0
            && (self.running.len() < self.concurrency
                || self.in_process
                || self.queued_bytes() + size <= PIPE_BYTES)
    }

    /// Bytes of the jobs waiting behind the running one.
    fn queued_bytes(&self) -> usize {
        self.queued.iter().map(|j| j.payload.len()).sum()
    }

    /// Not removed for good.
    pub(super) fn live(&self) -> bool {
        !matches!(self.state, State::Down { respawn_at: None })
    }

    /// The worker's pid (process) or number (thread, async).
    pub(super) fn worker_id(&self) -> u32 {
        match &self.worker {
            Some(Worker::Process(p)) => p.pid(),
            Some(Worker::Thread(t)) => t.num(),
            Some(Worker::Async(a)) => a.num(),
            None => 0,
        }
    }

    /// Hand a job to the worker (buffered). Returns its id when it is running now; gives the
    /// job back if the worker is gone.
    pub(super) fn push(&mut self, job: Box<Job>) -> Result<Option<u64>, Box<Job>> {
        let sent = match &mut self.worker {
            // A payload decoded from storage is within the message limit, so its frame fits.
            Some(Worker::Process(p)) => match p.send(job.id, &job.payload) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(id = %job.msg.id, "could not hand a task to worker {}: {e}", p.pid());
                    false
                }
            },
            Some(Worker::Thread(t)) => t.send(job.id, job.msg.clone()),
            Some(Worker::Async(a)) => a.send(job.id, job.msg.clone()),
            None => false,
        };
        if !sent {
            self.state = State::Starting;
            return Err(job);
        }
        if self.running.len() < self.concurrency {
            let id = job.id;
            self.running.insert(id, job);
            Ok(Some(id))
        } else {
            self.queued.push_back(job);
            Ok(None)
        }
    }

    /// A running job ended: take it out; the next queued one (if any) starts, and its id is
    /// returned. `None` for a job it does not run (already ended here). An in-process runner
    /// starts queued jobs on its own as lanes free up, so one may end (cancelled before it
    /// started) while still queued here.
    pub(super) fn end(&mut self, job: u64) -> Option<(Box<Job>, Option<u64>)> {
        self.cancelling.remove(&job);
        let Some(j) = self.running.remove(&job) else {
            let at = self.queued.iter().position(|q| q.id == job)?;
            return self.queued.remove(at).map(|j| (j, None));
        };
        let next = match self.queued.pop_front() {
            Some(n) if self.running.len() < self.concurrency => {
                let id = n.id;
                self.running.insert(id, n);
                Some(id)
            }
            Some(n) => {
                self.queued.push_front(n);
                None
            }
            None => None,
        };
        Some((j, next))
    }

    /// Ask the worker to cancel a running job (a concurrent worker drops its future), once.
    pub(super) fn cancel(&mut self, job: u64, now: Instant) {
        if self.cancelling.contains_key(&job) {
            return;
        }
        match &mut self.worker {
            Some(Worker::Process(p)) => {
                // A worker whose pipe is broken is gone; its exit ends the job.
                let _ = p.cancel(job);
                p.flush();
            }
            Some(Worker::Async(a)) => {
                a.cancel(job);
            }
            _ => {}
        }
        self.cancelling.insert(job, now);
    }

    pub(super) fn stop_worker(&mut self, kill: bool) {
        self.cancelling.clear();
        match self.worker.take() {
            Some(Worker::Process(mut p)) if kill => p.kill(),
            Some(Worker::Process(mut p)) => p.stop(),
            Some(Worker::Thread(mut t)) if kill => t.abandon(),
            Some(Worker::Thread(mut t)) => t.stop(),
            Some(Worker::Async(mut a)) if kill => a.abandon(),
            Some(Worker::Async(mut a)) => a.stop(),
            None => {}
        }
    }

    /// The jobs queued behind the running ones, which never started.
    pub(super) fn unstarted(&mut self) -> VecDeque<Box<Job>> {
        std::mem::take(&mut self.queued)
    }

    /// Every running job, taken out (its worker is gone or going).
    pub(super) fn take_running(&mut self) -> BTreeMap<u64, Box<Job>> {
        self.cancelling.clear();
        std::mem::take(&mut self.running)
    }
}
