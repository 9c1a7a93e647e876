//! Revocation: skip a task instance (by id) or every instance of a task (by name), for good,
//! for its next run only, or until a time. Entries live in storage (`Ns::Revoked`), shared by
//! every consumer; a consumer reads them all in one call per fetched batch.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::app::Huey;
use crate::clock::{self, now_ms};
use crate::error::Result;
use crate::message::Message;
use crate::storage::{Ns, Storage};

/// How to revoke: for good (default), for the next run only, or until a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    /// Only the next time it would run.
    pub once: bool,
    /// Only until this time (ms since the epoch).
    pub until_ms: Option<u64>,
}

impl Revocations {
    /// Whether there is no revocation at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `msg` is revoked at `now`. A revoke-once entry that applies is taken from
    /// storage, and only the consumer that takes it skips the task.
    pub(crate) fn consume(&self, storage: &dyn Storage, msg: &Message, now: u64) -> Result<bool> {
        if self.entries.is_empty() {
            return Ok(false); // the usual case: no key to build per task
        }
        for key in [id_key(&msg.id), task_key(&msg.task)] {
            if let Some(r) = self.entries.get(&key) {
                if r.once {
                    if storage.take(Ns::Revoked, &key)?.is_some() {
                        return Ok(true);
                    }
                } else if r.active(now) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

impl Revoke {
    /// Revoke for the next run only.
    pub fn once() -> Revoke {
        Revoke {
            once: true,
            until_ms: None,
        }
    }
    /// Revoke until a time.
    pub fn until(t: SystemTime) -> Revoke {
        Revoke {
            once: false,
            until_ms: Some(clock::to_ms(t)),
        }
    }
    fn active(&self, now: u64) -> bool {
        self.until_ms.is_none_or(|u| now < u)
    }
}

/// A snapshot of the revocations in storage, taken once per dequeued batch.
#[derive(Debug, Default, Clone)]
pub(crate) struct Revocations {
    entries: HashMap<String, Revoke>,
}

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

fn task_key(name: &str) -> String {
    format!("task:{name}")
}

impl Huey {
    fn revoke_key(&self, key: String, how: Revoke) -> Result<()> {
        let bytes = postcard::to_allocvec(&how)?;
        self.storage().put(Ns::Revoked, &key, &bytes, None)
    }

    /// Revoke one task instance by id.
    pub fn revoke_id(&self, id: &str, how: Revoke) -> Result<()> {
        self.revoke_key(id_key(id), how)
    }

    /// Revoke every instance of a task by name.
    pub fn revoke_task(&self, name: &str, how: Revoke) -> Result<()> {
        self.revoke_key(task_key(name), how)
    }

    /// Undo a revocation by id; returns whether there was one.
    pub fn restore_id(&self, id: &str) -> Result<bool> {
        Ok(self.storage().take(Ns::Revoked, &id_key(id))?.is_some())
    }

    /// Undo a revocation by task name; returns whether there was one.
    pub fn restore_task(&self, name: &str) -> Result<bool> {
        Ok(self.storage().take(Ns::Revoked, &task_key(name))?.is_some())
    }

    fn peek_revoked(&self, key: &str) -> Result<bool> {
        Ok(match self.storage().get(Ns::Revoked, key)? {
            Some(b) => postcard::from_bytes::<Revoke>(&b)
                .map(|r| r.active(now_ms()))
                .unwrap_or(false),
            None => false,
        })
    }

    /// Whether a task id is revoked (changes nothing, even for revoke-once).
    pub fn is_id_revoked(&self, id: &str) -> Result<bool> {
        self.peek_revoked(&id_key(id))
    }

    /// Whether a task name is revoked (changes nothing).
    pub fn is_task_revoked(&self, name: &str) -> Result<bool> {
        self.peek_revoked(&task_key(name))
    }

    /// Read every revocation in one storage call.
    pub(crate) fn revocations(&self) -> Result<Revocations> {
        let entries = self
            .storage()
            .list(Ns::Revoked)?
            .into_iter()
            .filter_map(|(k, v)| postcard::from_bytes::<Revoke>(&v).ok().map(|r| (k, r)))
            .collect();
        Ok(Revocations { entries })
    }

    /// Whether `msg` is revoked now by id or task name (consumes revoke-once entries).
    pub(crate) fn is_revoked(&self, msg: &Message, rev: &Revocations) -> Result<bool> {
        rev.consume(&*self.storage(), msg, now_ms())
    }
}
