//! Revocation: skip a task instance (by id) or every instance of a task (by name), for good,
//! for its next run only, or until a time. Entries live in storage (`Ns::Revoked`), shared by
//! every consumer. A consumer reads, in one call per fetched batch, only the entries that could
//! apply to it (`id:<id>` of each message, `task:<name>` of each task name): the cost of a
//! fetch does not grow with the number of revocations stored.
//!
//! Entries do not pile up: one that revokes until a time expires at that time, and one that
//! revokes a task instance by id is kept [`REVOKED_ID_RETENTION`] (or the app's result TTL,
//! if longer) — an instance runs once, so its revocation is useless after that — and then
//! deleted by the consumers' purge. Revocations of a task by name are few and kept until
//! restored.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::app::Huey;
use crate::clock::{self, now_ms};
use crate::error::Result;
use crate::message::Message;
use crate::storage::{Ns, Storage};

/// How long a revocation by id is kept (at least; the app's result TTL if that is longer): a
/// task instance due later than this after being revoked runs.
pub const REVOKED_ID_RETENTION: Duration = Duration::from_secs(7 * 86_400);

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

/// A snapshot of the revocations that could apply to a dequeued batch (the entries of its ids
/// and task names), taken once per batch.
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
    /// Store a revocation, kept at most `keep` (and never past its `until`).
    fn revoke_key(&self, key: String, how: Revoke, keep: Option<Duration>) -> Result<()> {
        let bytes = postcard::to_allocvec(&how)?;
        let until = how
            .until_ms
            .map(|u| Duration::from_millis(u.saturating_sub(now_ms()).max(1)));
        let ttl = match (keep, until) {
            (Some(k), Some(u)) => Some(k.min(u)),
            (k, u) => k.or(u),
        };
        self.storage().put(Ns::Revoked, &key, &bytes, ttl)
    }

    /// Revoke one task instance by id (kept [`REVOKED_ID_RETENTION`], or the result TTL if
    /// longer).
    pub fn revoke_id(&self, id: &str, how: Revoke) -> Result<()> {
        let result_ttl = self.policy().result_ttl.unwrap_or_default();
        let keep = REVOKED_ID_RETENTION.max(result_ttl);
        self.revoke_key(id_key(id), how, Some(keep))
    }

    /// Revoke every instance of a task by name.
    pub fn revoke_task(&self, name: &str, how: Revoke) -> Result<()> {
        self.revoke_key(task_key(name), how, None)
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

    /// The revocations that could apply to `msgs` (by their ids and their task names), read
    /// in one storage call. Only these keys are read, so the cost follows the batch, never the
    /// number of revocations stored. `may_hold_any`: whether any revocation may be stored, if
    /// already known (from the dequeue that leased `msgs`); asked of the storage if `None`.
    pub(crate) fn revocations_for<'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a Message>,
        may_hold_any: Option<bool>,
    ) -> Result<Revocations> {
        let mut msgs = msgs.into_iter().peekable();
        // Usually there is no revocation at all: one cheap question instead of many keys (and
        // no key is built for a batch that needs none), or none when the dequeue that leased
        // the batch already answered it.
        if msgs.peek().is_none() {
            return Ok(Revocations::default());
        }
        let may_hold_any = match may_hold_any {
            Some(known) => known,
            None => self.storage().may_hold_any(Ns::Revoked)?,
        };
        if !may_hold_any {
            return Ok(Revocations::default());
        }
        let mut keys: Vec<String> = Vec::new();
        let mut names: HashSet<&str> = HashSet::new();
        for m in msgs {
            keys.push(id_key(&m.id));
            if names.insert(&m.task) {
                keys.push(task_key(&m.task));
            }
        }
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self.storage().get_many(Ns::Revoked, &refs)?;
        let entries = keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| {
                let r = postcard::from_bytes::<Revoke>(&v?).ok()?;
                Some((k, r))
            })
            .collect();
        Ok(Revocations { entries })
    }

    /// Whether `msg` is revoked now by id or task name (consumes revoke-once entries).
    pub(crate) fn is_revoked(&self, msg: &Message, rev: &Revocations) -> Result<bool> {
        rev.consume(&*self.storage(), msg, now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Ns;

    /// The expiry stored with a revocation, through a purge far in the future: whether it is
    /// deleted at `after` from now.
    fn gone_after(app: &Huey, after: Duration) -> bool {
        app.storage()
            .purge_expired(now_ms() + crate::clock::ms(after), usize::MAX)
            .unwrap()
            > 0
    }

    #[test]
    fn revocations_by_id_and_until_a_time_expire_by_task_name_do_not() {
        let app = Huey::open("revoke", "memory:").unwrap();
        app.revoke_task("t", Revoke::default()).unwrap();
        assert!(!gone_after(&app, Duration::from_secs(100 * 365 * 86_400)));

        app.revoke_id("a", Revoke::default()).unwrap();
        assert!(!gone_after(
            &app,
            REVOKED_ID_RETENTION - Duration::from_secs(60)
        ));
        assert!(gone_after(
            &app,
            REVOKED_ID_RETENTION + Duration::from_secs(1)
        ));

        // A result TTL longer than the retention keeps it that long.
        app.set_result_ttl(Some(REVOKED_ID_RETENTION * 2));
        app.revoke_id("b", Revoke::once()).unwrap();
        assert!(!gone_after(
            &app,
            REVOKED_ID_RETENTION + Duration::from_secs(60)
        ));
        assert!(gone_after(
            &app,
            REVOKED_ID_RETENTION * 2 + Duration::from_secs(1)
        ));

        // Until a time: expires then, for a name too.
        let until = SystemTime::now() + Duration::from_secs(3600);
        app.revoke_task("u", Revoke::until(until)).unwrap();
        assert!(!gone_after(&app, Duration::from_secs(3000)));
        assert!(gone_after(&app, Duration::from_secs(3601)));
        assert_eq!(app.storage().list(Ns::Revoked).unwrap().len(), 1, "t stays");
    }
}
