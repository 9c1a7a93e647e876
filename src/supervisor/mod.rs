//! The supervisor: the parent process of a consumer. It owns the storage traffic of the queue
//! (dequeue, acks, results, the schedule), hands tasks to its workers, and keeps them healthy.
//!
//! One main loop, fed by one channel: worker events (ready, done, exited) and fetched batches
//! arrive there; between messages the loop runs its timers (scheduler, periodic ticker, lease
//! renewal, health checks) and reads the signal counters. Each duty lives in its own file.

mod completion;
mod dispatch;
mod health;
pub mod scheduler;
pub mod signals;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::storage::{Batch, Flush};
use crate::worker::{EventSink, Tagged};

use dispatch::{Fetched, Fetcher, Job};
use health::Slot;
use scheduler::Ticker;
use signals::Signals;

/// Where task code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerKind {
    /// Threads of the supervisor's process (huey's default).
    Thread,
    /// Separate processes of the app's binary: for CPU-bound work, and isolation from crashes.
    Process,
}

/// How a consumer runs. Built from the command line by [`crate::cli`], or by hand.
#[derive(Debug, Clone)]
pub struct Config {
    pub workers: usize,
    pub kind: WorkerKind,
    /// Queues served, in order.
    pub queues: Vec<String>,
    /// Enqueue periodic tasks from this consumer.
    pub periodic: bool,
    pub scheduler_interval: Duration,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            kind: WorkerKind::Thread,
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
pub struct StopHandle(Sender<Input>);

impl StopHandle {
    /// Ask for a graceful stop.
    pub fn stop(&self) {
        let _ = self.0.send(Input::Stop);
    }
}

/// What arrives on the main loop's channel.
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
    tx: Sender<Input>,
    rx: Receiver<Input>,
    worker_tx: EventSink,
    slots: Vec<Slot>,
    waiting: VecDeque<Box<Job>>,
    pace: dispatch::Pace,
    next_job: u64,
    fetcher: Fetcher,
    fetch_outstanding: bool,
    batch: Batch,
    /// Events about outcomes not yet written.
    unsent_events: Vec<crate::events::Event>,
    batch_failures: u32,
    next_flush_retry: Instant,
    ticker: Ticker,
    stopping: Option<Instant>,
    stats: Stats,
}

/// Counters for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub workers_lost: u64,
    /// Tasks cut short by a stop and left for redelivery.
    pub interrupted: u64,
}

impl Supervisor {
    /// Prepare a supervisor (no workers start until [`Supervisor::run`]).
    pub fn new(app: Huey, cfg: Config) -> Result<Supervisor> {
        if cfg.workers == 0 {
            return Err(Error::Config("--workers must be at least 1".into()));
        }
        if cfg.kind == WorkerKind::Process && app.storage_url().is_none() {
            return Err(Error::Config(
                "process workers open the app's storage by its URL: open the app with Huey::open"
                    .into(),
            ));
        }
        let (tx, rx) = mpsc::channel();
        // Workers report straight onto the main loop's channel.
        let events = tx.clone();
        let worker_tx: EventSink = Arc::new(move |t| events.send(Input::Worker(t)).is_ok());
        let fetcher = Fetcher::spawn(&app, &cfg, tx.clone())?;
        let ticker = Ticker::new(&app);
        Ok(Supervisor {
            app,
            cfg,
            tx,
            rx,
            worker_tx,
            slots: Vec::new(),
            waiting: VecDeque::new(),
            pace: dispatch::Pace::default(),
            next_job: 1,
            fetcher,
            fetch_outstanding: false,
            batch: Batch::default(),
            unsent_events: Vec::new(),
            batch_failures: 0,
            next_flush_retry: Instant::now(),
            ticker,
            stopping: None,
            stats: Stats::default(),
        })
    }

    /// A handle that can stop this supervisor from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.tx.clone())
    }

    /// Run until stopped by a signal or a [`StopHandle`].
    pub fn run(mut self) -> Result<(Stopped, Stats)> {
        let mut signals =
            Signals::install().map_err(|e| Error::io("installing signal handlers", e))?;
        if self.cfg.flush_locks {
            self.app.storage().flush(Flush {
                locks: true,
                ..Flush::default()
            })?;
            tracing::info!("flushed all locks");
        }
        for _ in 0..self.cfg.workers {
            self.add_slot();
        }
        notify_systemd("READY=1");
        tracing::info!(
            workers = self.cfg.workers,
            kind = ?self.cfg.kind,
            storage = self.app.storage().backend(),
            queues = ?self.cfg.queues,
            "consumer started"
        );
        let mut timers = Timers::new(&self.cfg);
        let mut immediate = false;
        loop {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Everything already queued is handled before writing, so completions batch up.
            while let Ok(input) = self.rx.try_recv() {
                self.handle(input);
            }
            self.dispatch_waiting();
            self.flush();
            self.request_more();

            let now = Instant::now();
            if timers.scheduler <= now {
                timers.scheduler = now + self.cfg.scheduler_interval;
                self.promote_due();
            }
            if self.cfg.periodic && self.stopping.is_none() {
                self.tick_periodic();
            }
            if timers.leases <= now {
                timers.leases = now + self.cfg.lease / 3;
                self.extend_leases();
            }
            // Timeouts and respawns are checked every turn (no I/O); running tasks revoked
            // since they started are looked for in storage once per health-check interval.
            self.check_health();
            if timers.health <= now {
                timers.health = now + self.cfg.health_check_interval;
                self.cancel_revoked();
            }

            let sig = signals.poll();
            if sig.stops >= 1 && self.stopping.is_none() {
                tracing::info!("stopping gracefully: no new tasks; running tasks may finish (a second signal stops at once)");
                self.begin_stop();
            }
            if sig.stops >= 2 {
                immediate = true;
            }
            if sig.reload {
                tracing::info!("SIGHUP: restarting workers gracefully");
                self.restart_workers();
            }
            for _ in 0..sig.add_workers {
                self.add_slot();
            }
            for _ in 0..sig.remove_workers {
                self.remove_slot();
            }
            if sig.reopen_log {
                crate::logging::reopen_log();
            }

            if let Some(deadline) = self.stopping {
                let busy = self.busy_count();
                if busy == 0 && !self.fetch_outstanding {
                    break;
                }
                if immediate || Instant::now() >= deadline {
                    if busy > 0 {
                        tracing::warn!(busy, "stop deadline reached: killing busy workers; their tasks will be redelivered");
                    }
                    self.interrupt_busy();
                    if !self.fetch_outstanding || immediate {
                        break;
                    }
                }
            }
        }
        let outcome = if self.stats.interrupted > 0 {
            Stopped::Interrupted
        } else {
            Stopped::Graceful
        };
        self.shutdown();
        Ok((outcome, self.stats))
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Worker(t) => self.on_worker_event(t),
            Input::Fetched(f) => self.on_fetched(f),
            Input::Stop => {
                if self.stopping.is_none() {
                    self.begin_stop();
                }
            }
        }
    }

    fn begin_stop(&mut self) {
        notify_systemd("STOPPING=1");
        self.stopping = Some(Instant::now() + self.cfg.stop_deadline);
        self.release_waiting();
    }

    fn shutdown(&mut self) {
        self.release_waiting();
        self.stop_all_workers();
        for attempt in 0..5 {
            self.next_flush_retry = Instant::now();
            self.flush();
            if self.batch.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
        }
        if !self.batch.is_empty() {
            tracing::error!(
                acks = self.batch.ack.len(),
                "could not write the last outcomes: those tasks will be redelivered when their leases expire"
            );
        }
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

struct Timers {
    scheduler: Instant,
    leases: Instant,
    health: Instant,
}

impl Timers {
    fn new(cfg: &Config) -> Timers {
        let now = Instant::now();
        Timers {
            scheduler: now,
            leases: now + cfg.lease / 3,
            health: now + cfg.health_check_interval,
        }
    }
}

/// Tell systemd (a `Type=notify` unit) about a state change, if it is listening.
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
