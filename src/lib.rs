//! huey: a small, fast, reliable task queue and multi-process worker supervisor.
pub mod app;
pub mod clock;
pub mod crontab;
pub mod error;
pub mod events;
pub mod message;
pub mod registry;
pub mod result;
pub mod storage;
pub mod task;

pub use app::{Huey, Revoke};
pub use crontab::Crontab;
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use message::Message;
pub use result::TaskResult;
pub use storage::Storage;
pub use task::{Expires, Failure, FailureKind, Task, TaskContext, TaskError, TaskOptions, When};
