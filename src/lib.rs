//! huey: a small, fast, reliable task queue and multi-process worker supervisor.
pub mod clock;
pub mod error;
pub mod message;
pub mod storage;
pub mod task;

pub use error::{Error, Result};
