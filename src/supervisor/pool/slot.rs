//! One slot of the pool: the worker in it (if any), its state, and the jobs handed to it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::supervisor::dispatcher::{Job, PIPE_BYTES};
use crate::worker::process::ProcessWorker;
use crate::worker::thread::ThreadWorker;

/// The worker in a slot, of either kind.
pub(super) enum Worker {
    Process(ProcessWorker),
    Thread(ThreadWorker),
}

/// Where a slot's worker is in its life.
pub(super) enum State {
    /// Spawned, not ready yet.
    Starting,
    /// Ready for work (idle when its job queue is empty).
    Up,
    /// No live worker: respawn at this time (or never, for a removed slot).
    Down { respawn_at: Option<Instant> },
}

/// A place for one worker, kept across the workers that fill it in turn.
pub(super) struct Slot {
    pub(super) gen: u64,
    pub(super) worker: Option<Worker>,
    pub(super) state: State,
    /// Jobs handed to the worker, in order; the first is running.
    pub(super) jobs: VecDeque<Box<Job>>,
    pub(super) tasks_run: u32,
    /// Consecutive deaths soon after start.
    pub(super) quick_deaths: u32,
    /// Restart after the current task (SIGHUP, recycling).
    pub(super) recycle: bool,
    /// Removed by SIGTTOU: once its worker is gone, the slot stays down.
    pub(super) retired: bool,
}

impl Slot {
    /// How many more jobs it takes with a queue of `depth`.
    pub(super) fn room(&self, depth: usize) -> usize {
        match self.state {
            State::Up if !self.recycle => depth.saturating_sub(self.jobs.len()),
            _ => 0,
        }
    }

    /// Whether it takes a job of `size` bytes now: it has room for another job, and the job
    /// either runs at once or fits in the pipe's byte budget behind the running one (a large
    /// frame never waits in a pipe behind a task that may turn out long).
    pub(super) fn takes(&self, depth: usize, size: usize) -> bool {
        self.room(depth) > 0 && (self.jobs.is_empty() || self.queued_bytes() + size <= PIPE_BYTES)
    }

    /// Bytes of the jobs waiting behind the running one.
    fn queued_bytes(&self) -> usize {
        self.jobs.iter().skip(1).map(|j| j.payload.len()).sum()
    }

    /// Not removed for good.
    pub(super) fn live(&self) -> bool {
        !matches!(self.state, State::Down { respawn_at: None })
    }

    /// The running job.
    pub(super) fn job(&self) -> Option<&Job> {
        self.jobs.front().map(|j| &**j)
    }

    /// The worker's pid (process) or number (thread).
    pub(super) fn worker_id(&self) -> u32 {
        match &self.worker {
            Some(Worker::Process(p)) => p.pid(),
            Some(Worker::Thread(t)) => t.num(),
            None => 0,
        }
    }

    /// Hand a job to the worker (buffered). Returns whether it is the one now running; gives
    /// the job back if the worker is gone.
    pub(super) fn push(&mut self, job: Box<Job>) -> Result<bool, Box<Job>> {
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

    pub(super) fn stop_worker(&mut self, kill: bool) {
        match self.worker.take() {
            Some(Worker::Process(mut p)) if kill => p.kill(),
            Some(Worker::Process(mut p)) => p.stop(),
            Some(Worker::Thread(mut t)) if kill => t.abandon(),
            Some(Worker::Thread(mut t)) => t.stop(),
            None => {}
        }
    }

    /// The jobs queued behind the running one, which never started.
    pub(super) fn unstarted(&mut self) -> VecDeque<Box<Job>> {
        if self.jobs.len() > 1 {
            self.jobs.split_off(1)
        } else {
            VecDeque::new()
        }
    }
}
