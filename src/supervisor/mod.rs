//! The supervisor: the parent process of a consumer. It owns the storage traffic of the queue
//! (dequeue, acks, results, the schedule), hands tasks to its workers, and keeps them healthy.
//!
//! One main loop, which waits in one place (`inbox`: a `poll` over the process workers' result
//! pipes and a bell that the fetcher, thread workers and stop handles ring), over parts that
//! each own their state:
//! - `pool`: the worker slots; spawns, reaps, replaces and recycles workers, kills the ones
//!   past a timeout or running a revoked task;
//! - `dispatcher`: the fetcher thread, the line of leased messages waiting for a worker, their
//!   hand-over to the pool, and lease renewal;
//! - `outbox`: the outcomes not yet written, written by a thread of its own (each write takes
//!   all that ended meanwhile), retried with backoff, and the events emitted once their
//!   outcomes are written;
//! - [`scheduler`]: due scheduled tasks to their queues, and [`ticker`]: periodic tasks;
//! - `signals`: what the operator asked for.
//!
//! The loop itself keeps only what spans them: the stop state and the stats.

mod dispatcher;
mod features;
mod inbox;
mod observing;
mod outbox;
mod pool;
pub mod scheduler;
mod signals;
pub mod ticker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::storage::Flush;
use crate::worker::{EventSink, Tagged, WorkerEvent};

use dispatcher::{Dispatcher, Fetched};
use inbox::{Inbox, Post};
use observing::Observing;
use outbox::OutboxWriter;
use pool::{Ended, Exiting, Pool, Returns};
use scheduler::Scheduler;
use signals::{Pending, Signals};
use ticker::Ticker;

/// Where task code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum WorkerKind {
    /// Threads of the supervisor's process (huey's default).
    Thread,
    /// Separate processes of the app's binary: for CPU-bound work, and isolation from crashes.
    Process,
    /// Futures on one tokio runtime in the supervisor's process: `--workers` attempts at once
    /// (hundreds or thousands) for I/O-bound async tasks; sync tasks run on a bounded pool of
    /// blocking threads beside them (huey's greenlets). Needs the `async` feature.
    Async,
}

/// How a consumer runs. Built from the command line by [`crate::cli`], or by hand.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers (`Async`: attempts at once).
    pub workers: usize,
    /// Where task code runs: threads, processes or futures.
    pub kind: WorkerKind,
    /// Attempts each process worker runs at once, as futures on a runtime of its own (1: one
    /// at a time, on its main thread; over 1 needs the `async` feature).
    pub concurrency: usize,
    /// Queues served, in order.
    pub queues: Vec<String>,
    /// Enqueue periodic tasks from this consumer.
    pub periodic: bool,
    /// How often due scheduled tasks are made ready.
    pub scheduler_interval: Duration,
    /// How often workers are checked (stalls, deaths, memory).
    pub health_check_interval: Duration,
    /// Recycle a worker after this many tasks.
    pub max_tasks: Option<u32>,
    /// Recycle a worker whose resident memory passes this after a task (KiB).
    pub max_memory_kib: Option<u64>,
    /// How long a dequeued task stays reserved without renewal.
    pub lease: Duration,
    /// Longest a blocking dequeue waits before the loop asks again.
    pub poll_wait: Duration,
    /// Dead-letter a message after this many deliveries without an ack.
    pub max_deliveries: u32,
    /// Clear all locks at start.
    pub flush_locks: bool,
    /// On a graceful stop, how long running tasks may finish.
    pub stop_deadline: Duration,
    /// Log a line when each task starts and ends.
    pub log_tasks: bool,
    /// The binary started for process workers (default: this one).
    pub worker_exe: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (needs the `metrics` feature).
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Write a heartbeat record and per-minute counters to storage (see [`crate::observe`]).
    pub heartbeat: bool,
    /// A process worker that sends nothing (it sends a heartbeat every second) for this long
    /// is taken for frozen: killed and replaced, its running tasks recorded as lost with it.
    /// `None`: never.
    pub worker_stall_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            kind: WorkerKind::Thread,
            concurrency: 1,
            queues: vec![crate::message::DEFAULT_QUEUE.to_string()],
            periodic: true,
            scheduler_interval: Duration::from_secs(1),
            health_check_interval: Duration::from_secs(1),
            max_tasks: None,
            max_memory_kib: None,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_millis(500),
            max_deliveries: 5,
            flush_locks: false,
            stop_deadline: Duration::from_secs(30),
            log_tasks: true,
            worker_exe: None,
            metrics_bind: None,
            heartbeat: true,
            worker_stall_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every running task finished (or none was running).
    Graceful,
    /// Tasks were still running at the deadline or on a second signal: their workers were
    /// killed and the tasks released for redelivery.
    Interrupted,
}

/// A handle that stops a running supervisor from another thread (e.g. `hueyd demo`).
#[derive(Clone)]
pub struct StopHandle(Post);

impl StopHandle {
    /// Ask for a graceful stop.
    pub fn stop(&self) {
        self.0.send(Input::Stop);
    }
}

/// What the main loop takes in.
enum Input {
    Worker(Tagged),
    Fetched(Fetched),
    Stop,
}

/// The consumer's parent process. `hueyd` and [`crate::cli::main`] run one; an app can also
/// run one in-process (here with thread workers on memory storage):
///
/// ```
/// use std::time::Duration;
/// use huey::supervisor::{Config, Stopped, Supervisor, WorkerKind};
/// use huey::Huey;
///
/// # fn main() -> huey::Result<()> {
/// let app = Huey::open("docs", "memory:")?;
/// let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
/// let cfg = Config { workers: 2, kind: WorkerKind::Thread, ..Config::default() };
/// let supervisor = Supervisor::new(app.clone(), cfg)?;
/// let stop = supervisor.stop_handle();
/// let consumer = std::thread::spawn(move || supervisor.run());
/// assert_eq!(add.enqueue((2, 3))?.wait(Duration::from_secs(10))?, 5);
/// stop.stop();
/// let (stopped, stats) = consumer.join().unwrap()?;
/// assert_eq!((stopped, stats.completed), (Stopped::Graceful, 1));
/// # Ok(())
/// # }
/// ```
pub struct Supervisor {
    app: Huey,
    cfg: Config,
    inbox: Inbox,
    post: Post,
    /// Scratch: the inputs of one turn.
    inputs: Vec<Input>,
    /// Attempts that ended this turn, for the outbox (handed over together: see `post_ended`).
    ended: Vec<Ended>,
    pool: Pool,
    dispatcher: Dispatcher,
    outbox: OutboxWriter,
    scheduler: Scheduler,
    ticker: Ticker,
    /// Stopping: running tasks may finish until this deadline.
    stopping: Option<Instant>,
    /// A second stop signal: stop at once.
    immediate: bool,
    /// The signal handlers, installed by [`Supervisor::new`] so that a signal sent as soon as
    /// it returns (after a pidfile appears, say) is already counted.
    signals: Option<Signals>,
    stats: Stats,
    observing: Option<Observing>,
}

/// Counters for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Workers that died while running a task.
    pub workers_lost: u64,
    /// Tasks cut short by a stop and left for redelivery.
    pub interrupted: u64,
}

impl Stats {
    fn count(&mut self, ended: &Ended) {
        if ended.lost {
            self.workers_lost += 1;
        }
        match &ended.outcome {
            Ok(_) => self.completed += 1,
            Err(f) if f.kind.is_retryable() && ended.job.msg.options.retries > 0 => {
                self.retried += 1
            }
            Err(_) => self.failed += 1,
        }
    }
}

/// How long the loop waits for input before it runs its timers anyway.
const TURN: Duration = Duration::from_millis(50);
/// The wait while a pipe has not taken all that was written to it (a large frame going to a
/// worker that reads it now).
const UNSENT_TURN: Duration = Duration::from_millis(2);
/// The longest a stopping supervisor waits for its workers to run their shutdown hooks and
/// exit (they are killed when it exits).
const EXIT_WAIT: Duration = Duration::from_secs(10);

impl Supervisor {
    /// Prepare a supervisor (no workers start until [`Supervisor::run`]).
    pub fn new(app: Huey, cfg: Config) -> Result<Supervisor> {
        if cfg.workers == 0 {
            return Err(Error::Config("--workers must be at least 1".into()));
        }
        if cfg.concurrency == 0 {
            return Err(Error::Config("--concurrency must be at least 1".into()));
        }
        if cfg.concurrency > 1 && cfg.kind != WorkerKind::Process {
            return Err(Error::Config(
                "--concurrency is for process workers; async workers run --workers attempts at once"
                    .into(),
            ));
        }
        features::check(&cfg)?;
        if cfg.kind == WorkerKind::Process && app.storage_url().is_none() {
            return Err(Error::Config(
                "process workers open the app's storage by its URL: open the app with Huey::open"
                    .into(),
            ));
        }
        let (inbox, post) =
            Inbox::new().map_err(|e| Error::io("creating the main loop's bell", e))?;
        // Thread and async workers post their events straight to the main loop (process
        // workers' come through their pipes).
        let events = post.clone();
        let worker_tx: EventSink = Arc::new(move |t| events.send(Input::Worker(t)));
        Ok(Supervisor {
            dispatcher: Dispatcher::new(&app, &cfg, post.clone())?,
            pool: Pool::new(&app, &cfg, worker_tx),
            outbox: OutboxWriter::start(&app, cfg.log_tasks)
                .map_err(|e| Error::io("starting the outcome writer", e))?,
            scheduler: Scheduler::new(cfg.scheduler_interval, Instant::now()),
            ticker: Ticker::new(&app),
            app,
            cfg,
            inbox,
            post,
            inputs: Vec::new(),
            ended: Vec::new(),
            stopping: None,
            immediate: false,
            signals: Some(
                Signals::install().map_err(|e| Error::io("installing signal handlers", e))?,
            ),
            stats: Stats::default(),
            observing: None,
        })
    }

    /// A handle that can stop this supervisor from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.post.clone())
    }

    /// Run until stopped by a signal or a [`StopHandle`].
    pub fn run(mut self) -> Result<(Stopped, Stats)> {
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => Signals::install().map_err(|e| Error::io("installing signal handlers", e))?,
        };
        self.start()?;
        loop {
            self.receive();
            self.dispatcher.dispatch(&mut self.pool);
            self.dispatcher.request_more(&self.pool);
            self.run_timers();
            self.react(signals.poll());
            if self.done_stopping() {
                break;
            }
        }
        let outcome = if self.stats.interrupted > 0 {
            Stopped::Interrupted
        } else {
            Stopped::Graceful
        };
        self.shutdown(&mut signals);
        Ok((outcome, self.stats))
    }

    fn start(&mut self) -> Result<()> {
        if self.cfg.flush_locks {
            self.app.storage().flush(Flush {
                locks: true,
                ..Flush::default()
            })?;
            tracing::info!("flushed all locks");
        }
        self.start_observing()?;
        // An async worker is one runtime running `workers` attempts at once.
        let slots = match self.cfg.kind {
            WorkerKind::Async => 1,
            _ => self.cfg.workers,
        };
        for _ in 0..slots {
            self.pool.add();
        }
        notify_systemd("READY=1");
        tracing::info!(
            workers = self.cfg.workers,
            kind = ?self.cfg.kind,
            concurrency = self.cfg.concurrency,
            storage = self.app.storage().backend(),
            queues = ?self.cfg.queues,
            "consumer started"
        );
        Ok(())
    }

    /// Wait a short while for input, then take everything already there, so completions
    /// batch up before the write.
    fn receive(&mut self) {
        let turn = if self.pool.flush_unsent() {
            UNSENT_TURN
        } else {
            TURN
        };
        let mut inputs = std::mem::take(&mut self.inputs);
        self.inbox.wait(&mut self.pool, turn, &mut inputs);
        for input in inputs.drain(..) {
            self.handle(input);
        }
        self.inputs = inputs;
        self.post_ended();
    }

    /// Hand the attempts that ended to the outbox, in order.
    fn post_ended(&mut self) {
        self.outbox.complete(std::mem::take(&mut self.ended));
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Worker(t) => {
                let returns = self.pool.on_event(t);
                self.settle(returns);
            }
            Input::Fetched(f) => {
                // What ended before goes to the outbox before this batch's own outcomes.
                self.post_ended();
                self.dispatcher.on_fetched(&self.app, f, &self.outbox);
            }
            Input::Stop => self.begin_stop(),
        }
    }

    /// Pass on what the pool hands back: unstarted jobs to the dispatcher, ended attempts to
    /// the stats and the outbox.
    fn settle(&mut self, returns: Returns) {
        if !returns.unstarted.is_empty() {
            self.dispatcher.requeue(returns.unstarted);
        }
        for ended in returns.ended {
            self.dispatcher.record_pace(ended.elapsed);
            self.stats.count(&ended);
            self.ended.push(ended);
        }
    }

    /// The timed duties. Timeouts and respawns are checked every turn (no I/O); running tasks
    /// revoked since they started are looked for in storage once per health-check interval.
    fn run_timers(&mut self) {
        let now = Instant::now();
        self.scheduler.run(&self.app, now);
        if self.cfg.periodic && self.stopping.is_none() {
            self.ticker.tick(chrono::Utc::now());
        }
        self.dispatcher.renew_leases(&self.app, &self.pool, now);
        let returns = self.pool.check(Instant::now());
        self.settle(returns);
        let returns = self.pool.cancel_revoked(now);
        self.settle(returns);
        self.post_ended();
        if let Some(o) = &mut self.observing {
            o.tick(&self.pool, now);
        }
    }

    fn react(&mut self, sig: Pending) {
        if sig.stops >= 1 && self.stopping.is_none() {
            tracing::info!("stopping gracefully: no new tasks; running tasks may finish (a second signal stops at once)");
            self.begin_stop();
        }
        if sig.stops >= 2 {
            self.immediate = true;
        }
        if sig.reload {
            tracing::info!("SIGHUP: restarting workers gracefully");
            self.pool.restart();
        }
        if self.cfg.kind == WorkerKind::Async && sig.add_workers + sig.remove_workers > 0 {
            tracing::warn!(
                "SIGTTIN/SIGTTOU are ignored by async workers: their concurrency is fixed at start"
            );
        } else {
            for _ in 0..sig.add_workers {
                self.pool.add();
            }
            for _ in 0..sig.remove_workers {
                self.pool.remove();
            }
        }
        if sig.reopen_log {
            crate::logging::reopen_log();
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        notify_systemd("STOPPING=1");
        self.stopping = Some(Instant::now() + self.cfg.stop_deadline);
        self.pool.stop();
        self.dispatcher.stop(&self.app);
    }

    /// Whether a stop is complete: nothing runs and no fetch is on its way. At the deadline
    /// (or on a second signal) busy workers are killed and their tasks given back.
    fn done_stopping(&mut self) -> bool {
        let Some(deadline) = self.stopping else {
            return false;
        };
        let busy = self.pool.busy();
        let fetching = self.dispatcher.fetch_outstanding();
        if busy == 0 && !fetching {
            return true;
        }
        if self.immediate || Instant::now() >= deadline {
            if busy > 0 {
                tracing::warn!(
                    busy,
                    "stop deadline reached: killing busy workers; their tasks will be redelivered"
                );
            }
            let interrupted = self.pool.interrupt();
            self.stats.interrupted += interrupted.count;
            dispatcher::release(&self.app, &interrupted.leases, true);
            dispatcher::release(&self.app, &interrupted.unstarted, false);
            return !fetching || self.immediate;
        }
        false
    }

    fn shutdown(&mut self, signals: &mut Signals) {
        self.dispatcher.release_waiting(&self.app);
        let exiting = self.pool.stop_all();
        self.post_ended();
        self.outbox.drain();
        self.await_exits(exiting, signals);
        self.observing = None; // its last counts written, its record removed
        tracing::info!(
            completed = self.stats.completed,
            failed = self.stats.failed,
            retried = self.stats.retried,
            workers_lost = self.stats.workers_lost,
            interrupted = self.stats.interrupted,
            "consumer stopped"
        );
    }
}

impl Supervisor {
    /// Wait (at most [`EXIT_WAIT`]) for the stopped process workers to exit — they run their
    /// shutdown hooks first, which the parent-death signal would cut short — and for a fetch
    /// still on its way, whose messages are then released rather than left leased. Another
    /// stop signal meanwhile ends the wait at once: the workers left are killed.
    fn await_exits(&mut self, mut exiting: Vec<Exiting>, signals: &mut Signals) {
        let end = Instant::now() + EXIT_WAIT;
        let stops = signals.poll().stops;
        // A second stop signal (or any, after a stop asked for by a handle) means "at once".
        let at_once = |p: Pending| p.stops >= 2 || p.stops > stops;
        while !exiting.is_empty() || self.dispatcher.fetch_outstanding() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                exiting.iter().for_each(Exiting::kill);
                tracing::warn!(
                    workers = exiting.len(),
                    "shutdown hooks still running at exit"
                );
                return;
            }
            if !exiting.is_empty() && (self.immediate || at_once(signals.poll())) {
                // Stop at once: the workers go, the fetch on its way is still waited for
                // (a blocking dequeue, at most `poll_wait`) so what it leases is released.
                exiting.iter().for_each(Exiting::kill);
                tracing::warn!(workers = exiting.len(), "shutdown hooks cut short");
                exiting.clear();
            }
            let mut inputs = std::mem::take(&mut self.inputs);
            self.inbox.wait(&mut self.pool, left.min(TURN), &mut inputs);
            for input in inputs.drain(..) {
                match input {
                    Input::Worker(t) if matches!(t.event, WorkerEvent::Exited { .. }) => {
                        exiting.retain(|w| (w.slot, w.gen) != (t.slot, t.gen));
                    }
                    Input::Fetched(f) => self.dispatcher.on_fetched(&self.app, f, &self.outbox),
                    _ => {}
                }
            }
            self.inputs = inputs;
        }
    }
}

/// A repeating timer: due at its first time, then `interval` after each turn that ran it.
struct Every {
    interval: Duration,
    next: Instant,
}

impl Every {
    fn new(interval: Duration, first: Instant) -> Every {
        Every {
            interval,
            next: first,
        }
    }

    /// Whether it is due at `now` (if so, it is set for the next time).
    fn due(&mut self, now: Instant) -> bool {
        if self.next > now {
            return false;
        }
        self.next = now + self.interval;
        true
    }
}

/// Tell systemd (a `Type=notify` unit) about a state change, if it is listening.
#[cfg(target_os = "linux")]
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!("could not notify systemd ({state}): {e}");
    }
}

/// No systemd outside Linux.
#[cfg(not(target_os = "linux"))]
fn notify_systemd(_state: &str) {}
