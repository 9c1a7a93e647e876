//! The storage cases every backend runs: one body per behaviour, mounted by each backend's test
//! binary beside the `factory` that opens that backend:
//!
//! ```ignore
//! #[path = "common/cases/mod.rs"]
//! mod cases;
//! fn factory() -> impl Fn() -> Arc<dyn Storage> { … }
//! ```
//!
//! So a case added here runs on every backend, and no list of names can leave one out.
//! `crate::factory()` gives a fresh storage: each call of the factory it returns is another
//! handle on that one storage (standing for another consumer, thread or process). A case keeps
//! the factory alive while it runs: it owns the storage's files or server.

mod chords;
mod fencing;
mod inspect;
mod kv;
mod purge;
mod queue;
mod schedule_results;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use huey::clock::now_ms;
use huey::message::{Message, MessageOptions};
use huey::storage::{
    Batch, ChordCallback, ChordCount, Claim, DeadPut, Flush, Lease, Ns, ResultPut, Scheduled,
    Storage,
};

use crate::common::suite::*;
