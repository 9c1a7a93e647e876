//! huey: a small, fast, reliable task queue and multi-process worker supervisor.
pub mod admin;
pub mod app;
pub mod cli;
pub mod clock;
pub mod crontab;
pub mod demo;
pub mod error;
pub mod events;
pub mod flow;
pub mod lock;
pub mod message;
pub mod registry;
pub mod result;
pub mod storage;
pub mod supervisor;
pub mod task;
pub mod worker;

pub use app::{Huey, Revoke};
pub use crontab::Crontab;
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use flow::{
    Chord, ChordResult, Group, Outcome, Outcomes, Pipeline, PipelineResult, ResultGroup,
};
pub use lock::{LockGuard, TaskLock};
pub use message::Message;
pub use result::TaskResult;
pub use storage::Storage;
pub use task::{
    Control, Expires, Failure, FailureKind, Task, TaskContext, TaskError, TaskOptions, When,
};
