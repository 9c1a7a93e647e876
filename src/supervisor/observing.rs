//! The supervisor's hooks for observability: starting the observer (heartbeats, per-minute
//! counters, metrics), handing it what each worker runs about once a second, and the systemd
//! watchdog pings, sent from the main loop so a stalled loop stops them.

#[cfg(feature = "metrics")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::Pool;
use super::{notify_systemd, Config, Every, Supervisor, WorkerKind};
use crate::app::Huey;
use crate::error::Result;
#[cfg(feature = "metrics")]
use crate::observe::{serve_metrics, Metrics, MetricsServer};
use crate::observe::{Observer, ObserverConfig};

/// How often the workers' snapshot goes to the observer.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Observing {
    observer: Observer,
    /// Serving `/metrics`, until dropped.
    #[cfg(feature = "metrics")]
    _server: Option<MetricsServer>,
    snapshot: Every,
    /// `WATCHDOG=1` at half the interval systemd asked for (`WATCHDOG_USEC`).
    watchdog: Option<Every>,
}

impl Observing {
    /// Start the observer, and the metrics server when `cfg.metrics_bind` is set.
    pub fn start(app: &Huey, cfg: &Config) -> Result<Observing> {
        #[cfg(feature = "metrics")]
        let (metrics, server) = match cfg.metrics_bind {
            Some(addr) => {
                // Tasks this app does not register share one label (their names come from
                // producers).
                let names = app.task_defs().into_iter().map(|d| d.name.clone());
                let m = Arc::new(Metrics::for_tasks(names));
                let server = serve_metrics(addr, m.clone())?;
                tracing::info!("metrics at http://{}/metrics", server.addr());
                if !addr.ip().is_loopback() {
                    tracing::warn!("the metrics are served on {addr}, beyond this host, with no authentication");
                }
                (Some(m), Some(server))
            }
            None => (None, None),
        };
        let kind = match cfg.kind {
            WorkerKind::Thread => "thread",
            WorkerKind::Process => "process",
            WorkerKind::Async => "async",
        };
        let ocfg = ObserverConfig {
            kind: kind.into(),
            workers: cfg.workers,
            queues: cfg.queues.clone(),
            heartbeat: cfg.heartbeat,
        };
        #[cfg(feature = "metrics")]
        let observer = match metrics {
            Some(m) => Observer::start_with_metrics(app, ocfg, m),
            None => Observer::start(app, ocfg),
        };
        #[cfg(not(feature = "metrics"))]
        let observer = Observer::start(app, ocfg);
        let now = Instant::now();
        Ok(Observing {
            observer,
            #[cfg(feature = "metrics")]
            _server: server,
            snapshot: Every::new(SNAPSHOT_INTERVAL, now),
            watchdog: watchdog_interval().map(|i| Every::new(i, now)),
        })
    }

    /// A loop turn: the workers' snapshot and the watchdog ping, when due.
    pub fn tick(&mut self, pool: &Pool, now: Instant) {
        if self.snapshot.due(now) {
            self.observer.set_workers(pool.workers_now());
        }
        if self.watchdog.as_mut().is_some_and(|w| w.due(now)) {
            notify_systemd("WATCHDOG=1");
        }
    }
}

impl Supervisor {
    /// Start observing: the outcomes the outbox tells are counted.
    pub(super) fn start_observing(&mut self) -> Result<()> {
        let o = Observing::start(&self.app, &self.cfg)?;
        #[cfg(feature = "metrics")]
        let metrics = o.observer.metrics().cloned();
        #[cfg(not(feature = "metrics"))]
        let metrics: Option<()> = None;
        if self.cfg.heartbeat || metrics.is_some() {
            self.outbox.set_tap(o.observer.counter());
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = metrics {
            self.outbox.set_metrics(m);
        }
        self.observing = Some(o);
        Ok(())
    }
}

/// Half the watchdog interval systemd set for this process, if it set one.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(50)))
}
