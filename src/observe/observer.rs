//! The consumer's observer: a thread that writes the heartbeat record and the per-minute
//! counters, and refreshes the queue gauges, away from the supervisor's main loop. The main
//! loop only hands it snapshots and events, which cost a lock and a few counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

#[cfg(feature = "metrics")]
use super::metrics::Metrics;
use super::stats::{outcome_of, Pending};
use super::{consumers, ConsumerInfo, WorkerInfo, HEARTBEAT_INTERVAL};
use crate::app::Huey;
use crate::clock::now_ms;
use crate::events::Event;

/// Without the `metrics` feature an observer feeds no metrics: this stands for them, and is
/// never made.
#[cfg(not(feature = "metrics"))]
enum Metrics {}

#[cfg(not(feature = "metrics"))]
impl Metrics {
    fn on_outcome(&self, _e: &Event, _outcome: usize) {
        match *self {}
    }

    fn storage_write(&self, _op: &'static str, _took: Duration, _ok: bool) {
        match *self {}
    }
}

/// What the consumer tells about itself in its heartbeat record.
#[derive(Debug, Clone)]
pub struct ObserverConfig {
    /// `thread` or `process`.
    pub kind: String,
    /// How many workers the consumer runs.
    pub workers: usize,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// Write heartbeat records and per-minute counters (on by default).
    pub heartbeat: bool,
}

/// How often the counters are written.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the queue gauges are read (each read counts every queue in the storage), while
/// the metrics are scraped.
#[cfg(feature = "metrics")]
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);
/// The gauges are read only if the metrics were scraped this recently: nobody pays for counts
/// nobody reads.
#[cfg(feature = "metrics")]
const SCRAPED_WITHIN: Duration = Duration::from_secs(300);

struct Shared {
    info: Mutex<ConsumerInfo>,
    /// Write the heartbeat record and the per-minute counters.
    heartbeat: bool,
    /// Now, in ms, as of the observer thread's last turn (at most a second old): counting an
    /// outcome does not read the clock.
    now_ms: AtomicU64,
    pending: Mutex<Pending>,
    metrics: Option<Arc<Metrics>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The observer of one running consumer. Dropping it stops its thread and removes the
/// heartbeat record.
pub struct Observer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// This consumer's id: `host:pid`, the name its leases are held under.
pub fn consumer_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Observer {
    /// Start observing a consumer of `app`: the events given to [`Observer::count`] (or its
    /// [`Observer::counter`]) are counted per minute in storage.
    pub fn start(app: &Huey, cfg: ObserverConfig) -> Observer {
        Observer::begin(app, cfg, None)
    }

    /// [`Observer::start`], the events also counted in `metrics` (whose queue gauges the
    /// observer refreshes while they are scraped).
    #[cfg(feature = "metrics")]
    pub fn start_with_metrics(app: &Huey, cfg: ObserverConfig, metrics: Arc<Metrics>) -> Observer {
        Observer::begin(app, cfg, Some(metrics))
    }

    fn begin(app: &Huey, cfg: ObserverConfig, metrics: Option<Arc<Metrics>>) -> Observer {
        let now = now_ms();
        let info = ConsumerInfo {
            id: consumer_id(),
            host: host_name(),
            pid: std::process::id(),
            app: app.name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kind: cfg.kind.clone(),
            workers: cfg.workers,
            queues: cfg.queues.clone(),
            started_ms: now,
            last_seen_ms: now,
            workers_now: Vec::new(),
        };
        let shared = Arc::new(Shared {
            info: Mutex::new(info),
            heartbeat: cfg.heartbeat,
            now_ms: AtomicU64::new(now),
            pending: Mutex::new(Pending::default()),
            metrics,
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let wanted = cfg.heartbeat || shared.metrics.is_some();
        let thread = wanted.then(|| {
            let (app, s) = (app.clone(), shared.clone());
            std::thread::Builder::new()
                .name("huey-observer".into())
                .spawn(move || run(&app, &s))
                .ok()
        });
        Observer {
            shared,
            thread: thread.flatten(),
        }
    }

    /// What each worker runs now (the supervisor calls it about once a second).
    pub fn set_workers(&self, workers: Vec<WorkerInfo>) {
        self.shared.info.lock().workers_now = workers;
    }

    /// Count an event (an attempt's outcome; others are ignored).
    pub fn count(&self, e: &Event) {
        self.shared.on_event(e);
    }

    /// A function that counts events for this observer, for whoever tells them (the
    /// supervisor's outbox); it does nothing once the observer is gone.
    pub fn counter(&self) -> Arc<dyn Fn(&Event) + Send + Sync> {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        Arc::new(move |e| {
            if let Some(s) = weak.upgrade() {
                s.on_event(e);
            }
        })
    }

    /// The metrics this observer feeds, if any.
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.shared.metrics.as_ref()
    }
}

impl Shared {
    fn on_event(&self, e: &Event) {
        let Some(outcome) = outcome_of(e.kind) else {
            return;
        };
        if self.heartbeat {
            let at = self.now_ms.load(Ordering::Relaxed);
            self.pending.lock().add(at, outcome);
        }
        if let Some(m) = &self.metrics {
            m.on_outcome(e, outcome);
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The observer thread: beat, flush the counters and refresh the gauges until stopped; then
/// flush once more and remove the record.
fn run(app: &Huey, s: &Shared) {
    let storage = app.storage();
    let mut next_beat = Instant::now();
    #[cfg(feature = "metrics")]
    let mut next_gauges = Instant::now();
    let mut beating = true;
    loop {
        let now = Instant::now();
        s.now_ms.store(now_ms(), Ordering::Relaxed);
        if s.heartbeat && now >= next_beat {
            let info = {
                let mut i = s.info.lock();
                i.last_seen_ms = now_ms();
                i.clone()
            };
            let t = Instant::now();
            let res = consumers::beat(&*storage, &info);
            note_write(s, "heartbeat", t, &res);
            match res {
                // Said once per outage, not every beat.
                Err(e) if beating => {
                    tracing::warn!("could not write the heartbeat record: {e}");
                    beating = false;
                }
                Ok(()) if !beating => {
                    tracing::info!("heartbeat record written again");
                    beating = true;
                }
                _ => {}
            }
            next_beat = now + HEARTBEAT_INTERVAL;
        }
        flush(app, s);
        #[cfg(feature = "metrics")]
        if let Some(m) = s
            .metrics
            .as_ref()
            .filter(|m| m.scraped_within(SCRAPED_WITHIN))
        {
            if now >= next_gauges {
                let served = s.info.lock().queues.clone();
                m.refresh_gauges(&*storage, &served);
                next_gauges = now + GAUGE_INTERVAL;
            }
        }
        let mut stop = s.stop.lock();
        if !*stop {
            s.wake.wait_for(&mut stop, FLUSH_INTERVAL);
        }
        if *stop {
            break;
        }
    }
    flush(app, s);
    if s.heartbeat {
        let id = s.info.lock().id.clone();
        if let Err(e) = consumers::remove(&*storage, &id) {
            tracing::warn!("could not remove the heartbeat record: {e}");
        }
    }
}

/// Write the per-minute counters.
fn flush(app: &Huey, s: &Shared) {
    let storage = app.storage();
    let mut pending = std::mem::take(&mut *s.pending.lock());
    if !pending.is_empty() {
        let t = Instant::now();
        let res = pending.flush(&*storage);
        note_write(s, "counters", t, &res);
        if let Err(e) = res {
            tracing::warn!("could not write the per-minute counters (kept for the next try): {e}");
        }
        // What was not written goes back, added to what came meanwhile.
        s.pending.lock().merge(pending);
    }
}

fn note_write<T>(s: &Shared, op: &'static str, started: Instant, res: &crate::Result<T>) {
    if let Some(m) = &s.metrics {
        m.storage_write(op, started.elapsed(), res.is_ok());
    }
}
