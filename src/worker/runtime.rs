//! The runtime of concurrent workers: many attempts at once as futures on one tokio runtime,
//! each one cancellable on its own. `--kind async` runs one in the consumer ([`AsyncWorker`]);
//! a process worker started with `--concurrency` runs one in its process (see
//! `process::worker_main`).
//!
//! An async task's attempt is its future: past its timeout, or on a [`Runner::cancel`] (the
//! task was revoked while running), the future is dropped and the attempt ends as `Timeout` or
//! `Revoked`; nothing else is disturbed. A sync task runs on the runtime's bounded blocking
//! pool, so CPU-bound code never stalls the futures; past its timeout its attempt ends as
//! `Timeout` and its thread is abandoned to finish on its own (sync code cannot be cancelled,
//! as with thread workers); one that timed out before a blocking thread took it never starts.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::{EventSink, Tagged, WorkerEvent};
use crate::app::Huey;
use crate::failure::{panic_message, Failure, FailureKind};
use crate::message::{Message, Output};

/// Where a runner reports each attempt's end: (job, outcome).
pub type Report = Arc<dyn Fn(u64, Result<Output, Failure>) + Send + Sync>;

/// The attempts running, each with the sender that cancels it (taken once used: an attempt
/// stays here until it has reported its end), and those handed over beyond the runner's
/// concurrency, which start in order as running ones end.
#[derive(Default)]
struct Attempts {
    cancels: HashMap<u64, Option<oneshot::Sender<()>>>,
    waiting: VecDeque<(u64, Message)>,
}

/// What the runner and its attempts share.
struct Shared {
    handle: tokio::runtime::Handle,
    app: Huey,
    attempts: Mutex<Attempts>,
    /// Signalled when the last attempt, running or waiting, ends.
    idle: Condvar,
    /// Where each attempt is in its `poll`, for the report of one that blocks its thread.
    polls: Arc<super::stall::Polls>,
    report: Report,
    /// The most attempts running at once.
    limit: usize,
}

/// A tokio runtime running attempts, up to its concurrency at once; those handed over beyond
/// it wait here and start as running ones end, without a round trip through the supervisor
/// (which hands an in-process runner a little more than it runs when tasks are short, so a
/// freed lane is refilled at once).
pub struct Runner {
    /// Taken on drop, to shut it down without waiting for blocking threads.
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

impl Runner {
    /// A runtime of `threads` threads (0: one per CPU) running at most `limit` attempts at
    /// once, with at most `blocking` threads for sync tasks, reporting to `report`.
    pub fn new(
        app: Huey,
        threads: usize,
        limit: usize,
        blocking: usize,
        report: Report,
    ) -> std::io::Result<Runner> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            b.worker_threads(threads);
        }
        let rt = b
            .max_blocking_threads(blocking.max(1))
            .thread_name("huey-async")
            .enable_all()
            .build()?;
        Ok(Runner {
            shared: Arc::new(Shared {
                handle: rt.handle().clone(),
                app,
                attempts: Mutex::default(),
                idle: Condvar::new(),
                polls: super::stall::Polls::start("huey-async-watch")?,
                report,
                limit: limit.max(1),
            }),
            rt: Some(rt),
        })
    }

    /// Start one attempt now, or once a running one ends if the runner is at its
    /// concurrency; its outcome goes to the report.
    pub fn start(&self, job: u64, msg: Message) {
        let mut a = self.shared.attempts.lock();
        if a.cancels.len() >= self.shared.limit {
            a.waiting.push_back((job, msg));
            return;
        }
        let cancel = Shared::enter(&mut a, job);
        drop(a);
        self.shared.launch(job, msg, cancel);
    }

    /// Cancel an attempt: a running one's future is dropped, one still waiting never starts;
    /// either ends as `Revoked`. False when it is neither running nor waiting.
    pub fn cancel(&self, job: u64) -> bool {
        let mut a = self.shared.attempts.lock();
        if let Some(slot) = a.cancels.get_mut(&job) {
            let tx = slot.take();
            drop(a);
            return tx.is_some_and(|tx| tx.send(()).is_ok());
        }
        let Some(at) = a.waiting.iter().position(|(j, _)| *j == job) else {
            return false;
        };
        a.waiting.remove(at);
        let idle = a.cancels.is_empty() && a.waiting.is_empty();
        drop(a);
        (self.shared.report)(
            job,
            Err(Failure::new(
                FailureKind::Revoked,
                "revoked before it started",
            )),
        );
        if idle {
            self.shared.idle.notify_all();
        }
        true
    }

    /// Block until no attempt runs or waits.
    pub fn wait_idle(&self) {
        let mut a = self.shared.attempts.lock();
        while !(a.cancels.is_empty() && a.waiting.is_empty()) {
            self.shared.idle.wait(&mut a);
        }
    }

    /// Run `f` on the blocking pool.
    pub fn spawn_blocking(&self, f: impl FnOnce() + Send + 'static) {
        self.shared.handle.spawn_blocking(f);
    }
}

impl Shared {
    /// Record a running attempt; returns what cancels it.
    fn enter(a: &mut Attempts, job: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel::<()>();
        a.cancels.insert(job, Some(tx));
        rx
    }

    /// Run an attempt entered as running; when it ends, report it, then start the next
    /// waiting one (reported first, so the supervisor hears of the end before the start its
    /// own bookkeeping infers from it).
    fn launch(self: &Arc<Self>, job: u64, msg: Message, rx: oneshot::Receiver<()>) {
        let shared = self.clone();
        let polling = Arc::new(super::stall::Polling::new(&msg.task, &msg.id));
        shared.polls.attempts.lock().insert(job, polling.clone());
        let fut = async move {
            // Boxed: the attempt's state machine is large (~2 KiB), and inlined here it would
            // be held twice (as `track`'s argument and its pinned copy): with 10,000 attempts
            // in flight that was 20 MiB.
            let run = Box::pin(attempt(shared.app.clone(), msg));
            let run = std::pin::pin!(Some(shared.polls.clone().track(polling, run)));
            let outcome = contained(rx, run).await;
            shared.polls.attempts.lock().remove(&job);
            // Reported before it leaves the running set, so an idle runner has no answer left
            // to give.
            (shared.report)(job, outcome);
            let mut a = shared.attempts.lock();
            a.cancels.remove(&job);
            if let Some((next, msg)) = a.waiting.pop_front() {
                let cancel = Shared::enter(&mut a, next);
                drop(a);
                shared.launch(next, msg, cancel);
            } else if a.cancels.is_empty() {
                drop(a);
                shared.idle.notify_all();
            }
        };
        self.handle.spawn(fut);
    }
}

impl Drop for Runner {
    /// Running futures are dropped; blocking threads are left to finish on their own.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// An attempt run to its end, or until `cancel` fires (it ends as `Revoked`, its future
/// dropped). A panic anywhere in it ends it as `Panic` rather than ending the runtime's task
/// without a report (an attempt that never reports holds its worker up until the supervisor
/// gives it up, and keeps a stop waiting): a panic in a poll outside the task's own code (its
/// result's encoding, say), or in a `Drop` run as a cancelled future is dropped.
async fn contained<F: Future<Output = Result<Output, Failure>>>(
    mut cancel: oneshot::Receiver<()>,
    mut fut: Pin<&mut Option<F>>,
) -> Result<Output, Failure> {
    let ended = std::future::poll_fn(|cx| {
        if Pin::new(&mut cancel).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let Some(f) = fut.as_mut().as_pin_mut() else {
            return Poll::Ready(Some(Err(Failure::new(FailureKind::Error, "no attempt"))));
        };
        match catch_unwind(AssertUnwindSafe(|| f.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Some(Err(Failure::new(
                FailureKind::Panic,
                panic_message(&*p),
            )))),
        }
    })
    .await;
    let dropped = catch_unwind(AssertUnwindSafe(move || fut.set(None)));
    let mut outcome = ended.unwrap_or_else(|| {
        Err(Failure::new(
            FailureKind::Revoked,
            "revoked while running: its future was dropped",
        ))
    });
    if let Err(p) = dropped {
        let p = panic_message(&*p);
        tracing::warn!("dropping a task's future panicked: {p}");
        if let Err(f) = &mut outcome {
            f.message
                .push_str(&format!(" (and dropping it panicked: {p})"));
        }
    }
    outcome
}

/// One attempt: an async task as its future, a sync task on the blocking pool.
async fn attempt(app: Huey, msg: Message) -> Result<Output, Failure> {
    if app
        .task_def(&msg.task)
        .is_some_and(|d| d.handler.is_async())
    {
        return app.run_attempt_async(msg).await;
    }
    let limit = msg.options.timeout_ms.map(Duration::from_millis);
    let deadline = limit.map(|t| Instant::now() + t);
    let gave_up = GiveUp(Arc::new(AtomicBool::new(false)));
    let g = gave_up.0.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        if g.load(Ordering::SeqCst) {
            return Err(Failure::new(FailureKind::Timeout, "never started"));
        }
        app.run_attempt(&msg)
    });
    let joined = async {
        blocking.await.unwrap_or_else(|e| {
            Err(Failure::new(
                FailureKind::Error,
                format!("the task's thread failed: {e}"),
            ))
        })
    };
    let (Some(at), Some(limit)) = (deadline, limit) else {
        return joined.await;
    };
    match tokio::time::timeout_at(at.into(), joined).await {
        Ok(out) => out,
        Err(_) => {
            drop(gave_up);
            Err(Failure::new(
                FailureKind::Timeout,
                format!("ran past its {limit:?} timeout; its thread was abandoned"),
            ))
        }
    }
}

/// Set once the attempt of a sync task is over for the worker (timed out, cancelled, or
/// done): a blocking thread that only now gets to it does not start it.
struct GiveUp(Arc<AtomicBool>);

impl Drop for GiveUp {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The most blocking threads an async worker of `concurrency` gives sync tasks.
pub fn blocking_threads(concurrency: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    concurrency.clamp(1, (4 * cpus).max(16))
}

/// `--kind async`: one runtime in the consumer's process running up to its slot's concurrency
/// of attempts at once, on the same dispatch and completion path as the other workers.
pub struct AsyncWorker {
    runner: Option<Runner>,
    app: Huey,
    num: u32,
    send: Arc<dyn Fn(WorkerEvent) -> bool + Send + Sync>,
}

impl AsyncWorker {
    /// Start a runtime for a slot: its startup hooks run on the blocking pool, then it is ready.
    pub fn spawn(
        app: Huey,
        slot: usize,
        gen: u64,
        num: u32,
        concurrency: usize,
        events: EventSink,
    ) -> std::io::Result<AsyncWorker> {
        let send: Arc<dyn Fn(WorkerEvent) -> bool + Send + Sync> =
            Arc::new(move |event| events(Tagged { slot, gen, event }));
        let s = send.clone();
        let report: Report = Arc::new(move |job, outcome| {
            // `--max-memory` is for process workers: no need to read it per attempt here.
            s(WorkerEvent::Done {
                job,
                outcome,
                rss_kib: 0,
            });
        });
        let runner = Runner::new(
            app.clone(),
            0,
            concurrency,
            blocking_threads(concurrency),
            report,
        )?;
        let (a, s) = (app.clone(), send.clone());
        runner.spawn_blocking(move || {
            a.run_startup_hooks();
            s(WorkerEvent::Ready { pid: num });
        });
        Ok(AsyncWorker {
            runner: Some(runner),
            app,
            num,
            send,
        })
    }

    /// Start an attempt; false once stopped.
    pub fn send(&self, job: u64, msg: Message) -> bool {
        match &self.runner {
            Some(r) => {
                r.start(job, msg);
                true
            }
            None => false,
        }
    }

    /// Cancel a running attempt: its future is dropped and it ends as `Revoked`.
    pub fn cancel(&self, job: u64) -> bool {
        self.runner.as_ref().is_some_and(|r| r.cancel(job))
    }

    /// Let its running attempts end, then run the shutdown hooks (on a thread of their own,
    /// as thread workers do) and report the exit.
    pub fn stop(&mut self) {
        let Some(runner) = self.runner.take() else {
            return;
        };
        let (app, send) = (self.app.clone(), self.send.clone());
        let stopped = std::thread::Builder::new()
            .name(format!("huey-async-stop-{}", self.num))
            .spawn(move || {
                runner.wait_idle();
                app.run_shutdown_hooks();
                drop(runner);
                send(WorkerEvent::Exited {
                    status: "stopped".into(),
                });
            });
        if let Err(e) = stopped {
            tracing::warn!("could not run the shutdown hooks of async worker: {e}");
        }
    }

    /// Give up on it: every running future is dropped at once, sync tasks' threads are left
    /// to finish on their own.
    pub fn abandon(&mut self) {
        self.runner = None;
    }

    /// The worker's number.
    pub fn num(&self) -> u32 {
        self.num
    }
}

/// What the writer thread of a concurrent process worker is given.
enum Outgoing {
    Done(u64, Result<Output, Failure>),
    /// Everything before it is written: say so.
    Flushed(std::sync::mpsc::Sender<()>),
}

/// The writer thread of a concurrent process worker: the answers that are ready go out
/// together, in one flush, with one reading of the worker's memory.
fn write_answers(
    rx: &std::sync::mpsc::Receiver<Outgoing>,
    output: &mut impl std::io::Write,
) -> Result<(), super::ipc::FrameError> {
    while let Ok(first) = rx.recv() {
        let rss = super::process::reported_rss_kib();
        let mut next = Some(first);
        while let Some(out) = next {
            match out {
                Outgoing::Done(job, outcome) => {
                    super::process::write_answer(output, job, outcome, rss)?;
                }
                Outgoing::Flushed(ack) => {
                    output.flush()?;
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        output.flush()?;
    }
    Ok(())
}

/// A process worker's side with a concurrency: read `Run` and `Cancel` frames and start or
/// cancel attempts at once (the supervisor never hands it more than its concurrency), answer
/// each attempt as it ends, in any order. At end of file the running attempts finish, then
/// the shutdown hooks run. Returns the process exit code.
pub(super) fn serve(
    app: &Huey,
    mut input: impl std::io::Read,
    mut output: impl std::io::Write + Send + 'static,
    concurrency: usize,
) -> i32 {
    use super::ipc::{read_frame, ToWorker};
    let pid = std::process::id();
    let (tx, rx) = std::sync::mpsc::channel::<Outgoing>();
    let writer = std::thread::Builder::new()
        .name("huey-answers".into())
        .spawn(move || {
            // The supervisor is gone when a write fails: nothing is left to do then.
            if write_answers(&rx, &mut output).is_err() {
                std::process::exit(1);
            }
        });
    if let Err(e) = writer {
        eprintln!("huey worker {pid}: {e}");
        return 3;
    }
    let done = tx.clone();
    let report: Report = Arc::new(move |job, outcome| {
        let _ = done.send(Outgoing::Done(job, outcome));
    });
    let runner = match Runner::new(
        app.clone(),
        1,
        concurrency,
        blocking_threads(concurrency),
        report.clone(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("huey worker {pid}: could not start its runtime: {e}");
            return 3;
        }
    };
    loop {
        match read_frame::<ToWorker>(&mut input) {
            Ok(Some(ToWorker::Run { job, payload })) => match Message::decode(&payload) {
                Ok(msg) => runner.start(job, msg),
                Err(e) => report(
                    job,
                    Err(Failure::new(FailureKind::Undecodable, e.to_string())),
                ),
            },
            Ok(Some(ToWorker::Cancel { job })) => {
                runner.cancel(job);
            }
            Ok(Some(ToWorker::Setup { .. })) => {
                eprintln!("huey worker {pid}: a second setup frame");
                return 3;
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("huey worker {pid}: {e}");
                return 3;
            }
        }
    }
    runner.wait_idle();
    app.run_shutdown_hooks();
    let (ack, flushed) = std::sync::mpsc::channel();
    if tx.send(Outgoing::Flushed(ack)).is_ok() {
        let _ = flushed.recv();
    }
    0
}
