//! What each worker runs now, for the consumer's heartbeat record.

use std::time::Instant;

use super::slot::Slot;
use super::Pool;
use crate::clock::now_ms;
use crate::observe::WorkerInfo;

/// The most attempts listed for one concurrent worker (an async worker may run thousands at
/// once; the heartbeat record stays small). The oldest are listed.
const LISTED_PER_WORKER: usize = 32;

impl Pool {
    /// One entry per live slot's running attempt (the oldest few of a concurrent worker's), or
    /// one entry with no task for an idle worker.
    pub fn workers_now(&self) -> Vec<WorkerInfo> {
        let (now, now_ms) = (Instant::now(), now_ms());
        let mut out = Vec::new();
        for s in self.slots.iter().filter(|s| s.live()) {
            let before = out.len();
            list_running(s, now, now_ms, &mut out);
            if out.len() == before {
                out.push(WorkerInfo {
                    pid: s.worker_id(),
                    task_id: None,
                    task_name: None,
                    since_ms: None,
                });
            }
        }
        out
    }
}

fn list_running(s: &Slot, now: Instant, now_ms: u64, out: &mut Vec<WorkerInfo>) {
    let mut jobs: Vec<_> = s.running.values().collect();
    jobs.sort_by_key(|j| j.started);
    for j in jobs.into_iter().take(LISTED_PER_WORKER) {
        let ran = now.saturating_duration_since(j.started).as_millis() as u64;
        out.push(WorkerInfo {
            pid: s.worker_id(),
            task_id: Some(j.msg.id.clone()),
            task_name: Some(j.msg.task.clone()),
            since_ms: Some(now_ms.saturating_sub(ran)),
        });
    }
}
