//! Observability: what the queue is doing, read from the shared storage by any process.
//!
//! - [`ConsumerInfo`]: each consumer's heartbeat record (who it is, what each worker runs),
//!   written every few seconds and expiring when the consumer stops beating
//!   ([`Huey::consumers`](crate::Huey::consumers));
//! - [`TaskState`]: where one task id is — queued, scheduled, running, done, failed, revoked,
//!   expired, dead-lettered ([`Huey::task_state`](crate::Huey::task_state),
//!   [`TaskResult::state`](crate::TaskResult::state));
//! - [`MinuteStats`]: outcomes counted per minute by the consumers, with a bounded history
//!   ([`Huey::throughput`](crate::Huey::throughput));
//! - the consumer's side: the heartbeat and counter thread ([`Observer`]) and the Prometheus
//!   metrics it serves with `--metrics-bind` (feature `metrics`).
//!
//! The consumer writes all of it from a thread of its own, never from its main loop, so a slow
//! storage cannot stall dispatch; the main loop only adds to counters in memory.
//!
//! ```
//! use huey::observe::TaskState;
//! use huey::Huey;
//!
//! # fn main() -> huey::Result<()> {
//! let app = Huey::open("docs", "memory:")?;
//! let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
//! let first = add.enqueue((1, 2))?;
//! let second = add.enqueue((3, 4))?;
//! // No consumer yet: both wait, one ahead of the second.
//! assert_eq!(
//!     second.state()?,
//!     TaskState::Queued { queue: "default".into(), position: Some(1), priority: 0 }
//! );
//! assert!(app.consumers()?.is_empty());
//! assert_eq!(app.task_state(first.id())?.name(), "queued");
//! assert_eq!(app.throughput(60)?.len(), 60);
//! # Ok(())
//! # }
//! ```

mod consumers;
#[cfg(feature = "metrics")]
mod metrics;
#[cfg(feature = "consumer")]
mod observer;
#[cfg(feature = "metrics")]
mod scrape;
mod state;
mod stats;
mod types;
#[cfg(feature = "consumer")]
mod workers;

#[cfg(feature = "metrics")]
pub use metrics::{Metrics, MAX_QUEUE_LABELS, MAX_TASK_SERIES, OTHER_LABEL, UNKNOWN_TASK};
#[cfg(feature = "consumer")]
pub use observer::{Observer, ObserverConfig};
#[cfg(feature = "metrics")]
pub use scrape::{serve_metrics, MetricsServer};
pub use types::{ConsumerInfo, MinuteStats, TaskState, WorkerInfo};
#[cfg(feature = "consumer")]
pub use workers::{count_worker, WorkerChange};

/// How often a consumer writes its heartbeat record.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// A heartbeat record lives this long unless written again (three beats).
pub const HEARTBEAT_TTL: std::time::Duration = std::time::Duration::from_secs(6);
/// How long per-minute counters are kept.
pub const STATS_HISTORY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
