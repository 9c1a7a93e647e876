//! The pool's health duties: attempts past their timeout, running tasks revoked since they
//! started, and a stop that cannot wait any longer.
//!
//! A sequential worker whose task runs past its timeout is killed (process) or abandoned
//! (thread) and replaced, and a sequential process worker running a revoked task is killed. A
//! concurrent worker ends such an attempt itself: its own timer drops the future at the
//! deadline, and a revoked one is cancelled on request; the worker goes on with its other
//! attempts. Only when it does not answer within [`GRACE`] is it killed as a backstop (an
//! in-process async worker cannot be: the attempt is given up on instead). An async task on a
//! sequential worker also gets the grace to stop by itself before its worker is killed.

use std::collections::BTreeMap;

use super::*;

/// How long a worker has to end an attempt by itself past its deadline, or once asked to
/// cancel it, before the supervisor ends it the hard way.
pub(super) const GRACE: Duration = Duration::from_secs(5);

impl Pool {
    /// Once per health-check interval: running tasks revoked since they started are cancelled
    /// (concurrent workers; an async worker's jobs waiting for a lane too, so they never start) or their process worker is killed and replaced (sequential ones);
    /// the task is recorded as revoked. One read of the running tasks' revocations per check,
    /// only while busy.
    pub fn cancel_revoked(&mut self, now: Instant) -> Returns {
        let mut out = Returns::default();
        if !self.revocation_check.due(now) || self.kind == WorkerKind::Thread || self.busy() == 0 {
            return out;
        }
        // An in-process runner's waiting jobs too: cancelled there, they never start.
        let handed = self
            .slots
            .iter()
            .flat_map(|s| {
                s.running
                    .values()
                    .chain(s.queued.iter().filter(|_| s.in_process))
            })
            .map(|j| &j.msg);
        let rev = match self.app.revocations_for(handed, None) {
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
            let slot = &self.slots[i];
            if slot.in_process {
                let waiting: Vec<u64> = slot
                    .queued
                    .iter()
                    .filter(|j| !slot.cancelling.contains_key(&j.id))
                    .filter(|j| self.app.is_revoked(&j.msg, &rev).unwrap_or(false))
                    .map(|j| j.id)
                    .collect();
                for id in waiting {
                    // Its end (Revoked, never started) comes back as the runner's report.
                    self.slots[i].cancel(id, now);
                }
            }
            let slot = &self.slots[i];
            let revoked: Vec<u64> = slot
                .running
                .values()
                .filter(|j| !slot.cancelling.contains_key(&j.id))
                .filter(|j| self.app.is_revoked(&j.msg, &rev).unwrap_or(false))
                .map(|j| j.id)
                .collect();
            if revoked.is_empty() {
                continue;
            }
            if self.slots[i].concurrent() {
                for id in revoked {
                    let worker = self.slots[i].worker_id();
                    let msg = &self.slots[i].running[&id].msg;
                    tracing::info!(id = %msg.id, task = %msg.task, worker, "revoked while running: cancelling it");
                    self.slots[i].cancel(id, now);
                }
                continue;
            }
            let (jobs, worker) = self.kill_running(i, &mut out);
            for job in jobs.into_values() {
                tracing::info!(id = %job.msg.id, task = %job.msg.task, worker, "revoked while running: worker killed");
                let f = Failure::new(
                    FailureKind::Revoked,
                    format!("revoked while running; worker {worker} was killed"),
                );
                out.ended.push(Ended::killed(job, f, worker));
            }
            if !self.stopping {
                self.spawn(i, now);
            }
        }
        out
    }

    /// Every loop turn (no I/O): end attempts past their timeout (see the module's comment),
    /// respawn workers whose time has come.
    pub fn check(&mut self, now: Instant) -> Returns {
        let mut out = Returns::default();
        let stalls = self.stall_check(now);
        for i in 0..self.slots.len() {
            if let Some(limit) = stalls {
                self.check_frozen(i, limit, now, &mut out);
            }
            if self.slots[i].concurrent() {
                self.check_concurrent(i, now, &mut out);
            } else {
                self.check_sequential(i, now, &mut out);
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

    /// The stall timeout, when frozen workers are to be looked for in this check: not right
    /// after the supervisor itself was paused (stopped, or starved of CPU for half the
    /// timeout), until its loop has had time to read the heartbeats waiting in the pipes.
    fn stall_check(&mut self, now: Instant) -> Option<Duration> {
        let limit = self.stall_timeout?;
        let gap = now.saturating_duration_since(self.last_check);
        self.last_check = now;
        if gap > limit / 2 {
            self.stall_checks_from = now + super::heartbeat_interval(limit) * 2;
        }
        (now >= self.stall_checks_from).then_some(limit)
    }

    /// A process worker that has sent nothing, not even a heartbeat, for `limit` is frozen
    /// (stopped, or hung outside task code): it is killed with its process group and replaced,
    /// and its running tasks end as if it had died (the retry policy applies).
    fn check_frozen(&mut self, i: usize, limit: Duration, now: Instant, out: &mut Returns) {
        let silent = match (&self.slots[i].worker, &self.slots[i].state) {
            (Some(Worker::Process(p)), State::Up) => p.silent_for(),
            _ => return,
        };
        if silent < limit {
            return;
        }
        crate::observe::count_worker(crate::observe::WorkerChange::Death);
        let slot = &mut self.slots[i];
        let pid = slot.worker_id();
        slot.stop_worker(true);
        slot.state = State::Starting;
        out.give_back(slot.unstarted());
        let running = slot.take_running();
        if running.is_empty() {
            tracing::warn!(
                worker = pid,
                "worker sent nothing for {silent:?} (frozen?): killed"
            );
        }
        for job in running.into_values() {
            tracing::warn!(worker = pid, id = %job.msg.id, task = %job.msg.task, "worker sent nothing for {silent:?} (frozen?) while running a task: killed");
            let why = format!("worker {pid} sent nothing for {silent:?} (frozen?) and was killed");
            out.ended.push(Ended::lost(job, why, pid));
        }
        if !self.stopping {
            self.spawn(i, now);
        }
    }

    /// A sequential worker past its running task's deadline is replaced.
    fn check_sequential(&mut self, i: usize, now: Instant, out: &mut Returns) {
        let timed_out = self.slots[i].running.values().any(|j| {
            let grace = if self.is_async(j) {
                GRACE
            } else {
                Duration::ZERO
            };
            j.deadline.is_some_and(|d| d + grace <= now)
        });
        if !timed_out {
            return;
        }
        let (jobs, worker) = self.kill_running(i, out);
        for job in jobs.into_values() {
            let limit = Duration::from_millis(job.msg.options.timeout_ms.unwrap_or(0));
            let f = Failure::new(
                FailureKind::Timeout,
                format!("ran past its {limit:?} timeout; worker {worker} was replaced"),
            );
            out.ended.push(Ended::killed(job, f, worker));
        }
        if !self.stopping {
            self.spawn(i, now);
        }
    }

    /// A concurrent worker that has not ended an attempt within [`GRACE`] of its deadline or
    /// of the cancel asked for: a process worker is killed (its other attempts are lost with
    /// it), an async one's attempt is given up on.
    fn check_concurrent(&mut self, i: usize, now: Instant, out: &mut Returns) {
        let slot = &self.slots[i];
        let overdue = |j: &Job| {
            let late = j.deadline.is_some_and(|d| d + GRACE <= now);
            let unanswered = slot
                .cancelling
                .get(&j.id)
                .is_some_and(|&t| t + GRACE <= now);
            late || unanswered
        };
        let stuck: Vec<u64> = slot
            .running
            .values()
            .filter(|j| overdue(j))
            .map(|j| j.id)
            .collect();
        if stuck.is_empty() {
            return;
        }
        let worker = slot.worker_id();
        let why = |j: &Job, cancelled: bool| {
            if cancelled {
                Failure::new(
                    FailureKind::Revoked,
                    format!("revoked while running; worker {worker} did not cancel it in time"),
                )
            } else {
                Failure::new(
                    FailureKind::Timeout,
                    format!(
                        "ran past its {:?} timeout and did not stop; worker {worker} gave it up",
                        Duration::from_millis(j.msg.options.timeout_ms.unwrap_or(0))
                    ),
                )
            }
        };
        if self.kind != WorkerKind::Process {
            for id in stuck {
                let cancelled = self.slots[i].cancelling.contains_key(&id);
                // Dropped as soon as the runtime polls it again: an attempt recorded as ended
                // (and perhaps retried) must not go on afterwards. One that never got a
                // runtime thread (all of them held by tasks that block) then never starts.
                self.slots[i].cancel(id, now);
                if let Some((job, _)) = self.slots[i].end(id) {
                    tracing::warn!(id = %job.msg.id, task = %job.msg.task, "an attempt did not stop: given up on");
                    let f = why(&job, cancelled);
                    out.ended.push(Ended::killed(job, f, worker));
                }
            }
            return;
        }
        let cancelling = self.slots[i].cancelling.clone();
        let (jobs, worker) = self.kill_running(i, out);
        tracing::warn!(worker, "a worker did not end an attempt in time: killed");
        for job in jobs.into_values() {
            let f = if stuck.contains(&job.id) {
                why(&job, cancelling.contains_key(&job.id))
            } else {
                Failure::new(
                    FailureKind::WorkerLost,
                    format!("worker {worker} was killed: another of its tasks did not stop"),
                )
            };
            out.ended.push(Ended::killed(job, f, worker));
        }
        if !self.stopping {
            self.spawn(i, now);
        }
    }

    /// Whether a job's task was registered with async code.
    fn is_async(&self, j: &Job) -> bool {
        self.app
            .task_def(&j.msg.task)
            .is_some_and(|d| d.handler.is_async())
    }

    /// Kill a slot's worker; returns its running jobs (its queued jobs are given back).
    fn kill_running(&mut self, i: usize, out: &mut Returns) -> (BTreeMap<u64, Box<Job>>, u32) {
        crate::observe::count_worker(crate::observe::WorkerChange::Recycle);
        let slot = &mut self.slots[i];
        let worker = slot.worker_id();
        slot.stop_worker(true);
        slot.state = State::Starting;
        out.give_back(slot.unstarted());
        (slot.take_running(), worker)
    }

    /// Stop deadline or second signal: cancel what runs (workers are killed, async runtimes
    /// dropped); the tasks are to be given back unacked. A sequential worker's task counts as
    /// a delivery; a concurrent worker's cancelled attempts do not.
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
            let concurrent = s.concurrent();
            let worker = s.worker_id();
            let running = s.take_running();
            if running.is_empty() {
                continue;
            }
            for job in running.into_values() {
                tracing::warn!(id = %job.msg.id, task = %job.msg.task, worker, "task interrupted; it will be redelivered");
                self.app
                    .emit(&Event::for_message(EventKind::Interrupted, &job.msg));
                if concurrent {
                    out.unstarted.push(job.lease);
                } else {
                    out.leases.push(job.lease);
                }
                out.count += 1;
            }
            s.state = State::Down { respawn_at: None };
            s.stop_worker(true);
            s.gen += 1;
        }
        out
    }
}
