//! huey: a small, fast, reliable task queue and multi-process worker supervisor.
//!
//! An app registers typed tasks (serde arguments and results, postcard on the wire), enqueues
//! and schedules them, and reads their results. A consumer — the app's own binary calling
//! [`cli::main`] — leases tasks from storage, runs them on worker processes or threads, and
//! writes each outcome before acknowledging the task, so none is silently lost.
//!
//! ```
//! use std::time::Duration;
//! use huey::{Error, Huey};
//!
//! # fn main() -> huey::Result<()> {
//! // Immediate mode runs tasks in the caller, on memory storage: handy in an app's tests.
//! let app = Huey::immediate("docs");
//! let add = app
//!     .task("add")
//!     .retries(2)
//!     .register(|(a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))?;
//!
//! let sum = add.enqueue((2, 3))?;
//! assert_eq!(sum.get()?, Some(5));
//!
//! // A task that fails for good comes back as a typed error.
//! let overflow = add.enqueue((i64::MAX, 1))?;
//! match overflow.wait(Duration::from_secs(1)) {
//!     Err(Error::Task(e)) => assert_eq!((e.message.as_str(), e.attempt), ("overflow", 3)),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! With a durable storage the same calls enqueue for a consumer instead:
//! `Huey::open("my-app", "sqlite:my-app.db")` or `"redis://127.0.0.1:6379/0"`.
//!
//! # Features
//!
//! `sqlite`, `redis` and `postgres` bring the storages; `consumer` the supervisor and its
//! workers (Linux only); `async` async tasks (`register_async`, `--kind async`,
//! `--concurrency`) and the async producer API (`enqueue_async`, `wait_async`,
//! `enqueue_in_async`), with tokio; `metrics` the consumer's Prometheus endpoint
//! (`--metrics-bind`); `cli` the command line (`cli::main`, `hueyd`); `web` the dashboard.
//! All are on by default. An app that only enqueues and reads results takes
//! `default-features = false` and one storage (and `async` to do so from async code); a URL
//! naming a storage left out of the build is refused with [`Error::Unsupported`], and a
//! consumer configured for what its build lacks (`--kind async`, `--metrics-bind`) with a
//! clear [`Error::Config`].
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The consumer's helpers in the core modules (attempt running, revocation checks, counters)
// have no caller in a producer-only build, nor the command line's (exit codes, log setup) in
// a build of the consumer without it.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

#[cfg(all(feature = "consumer", not(target_os = "linux")))]
compile_error!(
    "the `consumer` feature (supervisor, process workers, signals) builds on Linux only; \
     build a producer with `default-features = false` and a storage feature instead"
);

pub mod app;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
#[cfg(feature = "consumer")]
pub mod command;
pub mod control;
pub mod crontab;
#[cfg(feature = "cli")]
pub mod demo;
pub mod error;
pub mod events;
pub(crate) mod exec;
#[cfg(feature = "consumer")]
pub(crate) mod exit;
pub mod failure;
pub mod flow;
pub(crate) mod lifecycle;
pub mod lock;
#[cfg(feature = "consumer")]
pub(crate) mod logging;
pub mod message;
pub mod observe;
pub mod options;
pub mod periodic_store;
pub mod progress;
pub(crate) mod registry;
pub mod result;
pub mod revoke;
pub mod semaphore;
pub mod storage;
#[cfg(feature = "consumer")]
pub mod supervisor;
pub mod task;
#[cfg(feature = "consumer")]
pub(crate) mod worker;

pub use app::{HookId, Huey, TaskContext};
pub use crontab::Crontab;
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use flow::{
    Chord, ChordResult, Group, GroupMember, Outcome, Outcomes, Pipeline, PipelineResult,
    ResultGroup,
};
pub use lock::{LockGuard, TaskLock};
pub use message::Message;
pub use result::{Reschedule, TaskResult};
pub use revoke::Revoke;
pub use semaphore::{Permit, Semaphore};
pub use storage::Storage;
pub use task::{Control, Expires, Failure, FailureKind, Task, TaskError, TaskOptions, When};

/// Not part of the API: the wire framing between a supervisor and its process workers, exposed
/// for the crate's own benchmarks only. It may change in any release.
#[doc(hidden)]
#[cfg(feature = "consumer")]
pub mod __bench {
    pub use crate::worker::ipc::{read_frame, write_frame, FromWorker, ToWorker};
}
