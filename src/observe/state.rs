//! A task's state by id, from the storage: its message's place, its stored result, its
//! revocation, and the consumers' heartbeats (which worker runs it).

use super::{ConsumerInfo, TaskState};
use crate::app::Huey;
use crate::error::Result;
use crate::failure::FailureKind;
use crate::message::{Message, StoredResult};
use crate::storage::Location;

impl Huey {
    /// Where the task `id` is now: queued (queue, position, priority), scheduled (eta),
    /// running (consumer, worker, since, attempt), done, failed, revoked, expired,
    /// dead-lettered, or unknown. Reads only: a stored result is left in place.
    pub fn task_state(&self, id: &str) -> Result<TaskState> {
        let place = self.storage().locate(id)?;
        self.task_state_at(id, place)
    }

    /// [`Huey::task_state`] with the message's place already found (by
    /// [`Inspect::locate`](crate::storage::Inspect::locate), which may scan a whole queue:
    /// whoever needs the place too looks once).
    pub(crate) fn task_state_at(&self, id: &str, place: Option<Location>) -> Result<TaskState> {
        let storage = self.storage();
        match place {
            Some(Location::Leased {
                consumer, payload, ..
            }) => return self.running(id, consumer, &payload),
            Some(Location::Ready {
                queue,
                priority,
                position,
                payload,
            }) => {
                if self.revoked(id, &payload)? {
                    return Ok(TaskState::Revoked);
                }
                return Ok(TaskState::Queued {
                    queue,
                    position,
                    priority,
                });
            }
            Some(Location::Scheduled { eta_ms, payload }) => {
                if self.revoked(id, &payload)? {
                    return Ok(TaskState::Revoked);
                }
                return Ok(TaskState::Scheduled { eta_ms });
            }
            Some(Location::Dead { .. }) | None => {}
        }
        let dead = match place {
            Some(Location::Dead { error, .. }) => Some(error),
            _ => None,
        };
        if let Some(bytes) = storage.result(id, false)? {
            let state = match StoredResult::decode(&bytes)? {
                StoredResult::Ok { .. } => TaskState::Done,
                StoredResult::Err(e) => match (e.kind, dead) {
                    (FailureKind::Revoked, _) => TaskState::Revoked,
                    (FailureKind::Expired, _) => TaskState::Expired,
                    (_, Some(error)) => TaskState::DeadLettered { error },
                    (kind, None) => TaskState::Failed {
                        error: format!("{kind}: {}", e.message),
                    },
                },
            };
            return Ok(state);
        }
        Ok(match dead {
            Some(error) => TaskState::DeadLettered { error },
            None => TaskState::Unknown,
        })
    }

    /// Whether a waiting task will be skipped: revoked by id, or its task by name.
    fn revoked(&self, id: &str, payload: &[u8]) -> Result<bool> {
        if self.is_id_revoked(id)? {
            return Ok(true);
        }
        match Message::decode(payload) {
            Ok(m) => self.is_task_revoked(&m.task),
            Err(_) => Ok(false),
        }
    }

    /// A leased task: its consumer and worker from the heartbeats, when one runs it.
    fn running(&self, id: &str, holder: Option<String>, payload: &[u8]) -> Result<TaskState> {
        let attempt = Message::decode(payload).map(|m| m.attempt).unwrap_or(0);
        let consumers: Vec<ConsumerInfo> = self.consumers()?;
        let runs = consumers.iter().find_map(|c| {
            let w = c
                .workers_now
                .iter()
                .find(|w| w.task_id.as_deref() == Some(id))?;
            Some((c.id.clone(), w.pid, w.since_ms))
        });
        Ok(match runs {
            Some((consumer, worker, since_ms)) => TaskState::Running {
                consumer: Some(consumer),
                worker: Some(worker),
                since_ms,
                attempt,
            },
            None => TaskState::Running {
                consumer: holder,
                worker: None,
                since_ms: None,
                attempt,
            },
        })
    }
}
