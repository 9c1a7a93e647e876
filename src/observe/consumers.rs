//! Heartbeat records: each consumer's [`ConsumerInfo`] in `Ns::Consumers`, and reading them.

use super::{ConsumerInfo, HEARTBEAT_TTL};
use crate::app::Huey;
use crate::error::Result;
use crate::storage::{Ns, Storage};

impl Huey {
    /// The live consumers of this app, by id: those whose heartbeat record has not expired
    /// (a consumer that stopped beating, killed or frozen, drops out within a few seconds).
    /// Records that do not decode are skipped.
    pub fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let mut out: Vec<ConsumerInfo> = self
            .storage()
            .list(Ns::Consumers)?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// Write a consumer's record, living [`HEARTBEAT_TTL`].
pub(super) fn beat(storage: &dyn Storage, info: &ConsumerInfo) -> Result<()> {
    let value = serde_json::to_vec(info).map_err(|e| crate::error::Error::Encode {
        what: "consumer record",
        message: e.to_string(),
    })?;
    storage.put(Ns::Consumers, &info.id, &value, Some(HEARTBEAT_TTL))
}

/// Remove a consumer's record (a clean exit).
pub(super) fn remove(storage: &dyn Storage, id: &str) -> Result<()> {
    storage.take(Ns::Consumers, id).map(|_| ())
}
