//! Consumers, per-minute counters and live task states, from the observation records the
//! consumers keep in the storage.

use serde_json::Value;

use super::chart::Minute;
use super::data::TaskView;
use crate::app::Huey;
use crate::error::Result;

/// The live consumers, each with its workers and what they run.
pub(crate) fn consumers(_app: &Huey) -> Result<Vec<Value>> {
    Ok(Vec::new())
}

/// Completed and failed tasks per minute over the last `minutes`, oldest first.
pub(crate) fn throughput(_app: &Huey, _minutes: u32) -> Result<Vec<Minute>> {
    Ok(Vec::new())
}

/// Complete a task's view with what only the consumers know (running, since when, where).
pub(crate) fn refine(_app: &Huey, _v: &mut TaskView) -> Result<()> {
    Ok(())
}
