//! What each worker runs now, for the consumer's heartbeat record.

use std::time::Instant;

use super::Pool;
use crate::clock::now_ms;
use crate::observe::WorkerInfo;

impl Pool {
    /// One entry per live slot: its worker and the task it runs, if any.
    pub fn workers_now(&self) -> Vec<WorkerInfo> {
        let (now, now_ms) = (Instant::now(), now_ms());
        self.slots
            .iter()
            .filter(|s| s.live())
            .map(|s| {
                let job = s.job();
                WorkerInfo {
                    pid: s.worker_id(),
                    task_id: job.map(|j| j.msg.id.clone()),
                    task_name: job.map(|j| j.msg.task.clone()),
                    since_ms: job.map(|j| {
                        let ran = now.saturating_duration_since(j.started).as_millis() as u64;
                        now_ms.saturating_sub(ran)
                    }),
                }
            })
            .collect()
    }
}
