//! Thread workers: task code runs on threads of the supervisor's process, on the same
//! dispatch and completion path as process workers. Timeouts are cooperative: past its timeout
//! an attempt is recorded as failed and its thread abandoned (task code can watch
//! [`crate::TaskContext::is_timed_out`]).

use std::sync::mpsc::{self, Sender};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{EventSink, Tagged, WorkerEvent};
use crate::app::Huey;
use crate::message::Message;

/// A handle on one worker thread.
pub struct ThreadWorker {
    tx: Option<Sender<(u64, Message)>>,
    num: u32,
    abandoned: Arc<AtomicBool>,
}

impl ThreadWorker {
    /// Start a worker thread numbered `num` for a slot.
    pub fn spawn(
        app: Huey,
        slot: usize,
        gen: u64,
        num: u32,
        events: EventSink,
    ) -> std::io::Result<ThreadWorker> {
        let (tx, rx) = mpsc::channel::<(u64, Message)>();
        let abandoned = Arc::new(AtomicBool::new(false));
        let gone = abandoned.clone();
        std::thread::Builder::new()
            .name(format!("huey-worker-{num}"))
            .spawn(move || {
                let send = |event| events(Tagged { slot, gen, event });
                app.run_startup_hooks();
                if !send(WorkerEvent::Ready { pid: num }) {
                    return;
                }
                while let Ok((job, msg)) = rx.recv() {
                    // Jobs queued behind an abandoned (timed-out) attempt went back to the
                    // supervisor's waiting line: running them here would run them twice.
                    if gone.load(Ordering::SeqCst) {
                        return;
                    }
                    let outcome = tracing::info_span!("task", id = %msg.id, name = %msg.task)
                        .in_scope(|| app.run_attempt(&msg));
                    if !send(WorkerEvent::Done {
                        job,
                        outcome,
                        // The process's memory is the supervisor's: nothing to recycle.
                        rss_kib: 0,
                    }) {
                        return;
                    }
                }
                app.run_shutdown_hooks();
                send(WorkerEvent::Exited {
                    status: "stopped".into(),
                });
            })?;
        Ok(ThreadWorker {
            tx: Some(tx),
            num,
            abandoned,
        })
    }

    /// Hand it an attempt; false if the thread is gone.
    pub fn send(&self, job: u64, msg: Message) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send((job, msg)).is_ok())
    }

    /// Let the thread end after the attempts it was given.
    pub fn stop(&mut self) {
        self.tx = None;
    }

    /// Give up on the thread: it ends after its current attempt, running nothing more.
    pub fn abandon(&mut self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.tx = None;
    }

    /// The worker's number.
    pub fn num(&self) -> u32 {
        self.num
    }
}
