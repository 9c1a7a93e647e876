//! Result handles: read, wait for, preserve, revoke, restore and reschedule one task instance.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use crate::app::Huey;
use crate::error::{Error, Result};
pub use crate::message::StoredResult;
use crate::message::{new_id, Message};
use crate::options::{Expires, When};
use crate::revoke::Revoke;

#[cfg(feature = "async")]
mod hub;
#[cfg(feature = "async")]
mod wait_async;

#[cfg(feature = "async")]
pub(crate) use wait_async::run_blocking;

/// A handle on one task instance's result.
///
/// Reads are destructive by default, as in huey: the first successful read removes the result
/// from storage and the handle keeps it, so later reads through the same handle still see it.
/// Call [`TaskResult::preserve`] to leave it in storage.
///
/// ```
/// use std::time::Duration;
/// use huey::{Error, Huey};
///
/// # fn main() -> huey::Result<()> {
/// let app = Huey::immediate("docs");
/// let div = app.task("div").register(|(a, b): (i64, i64)| a.checked_div(b).ok_or("division by zero"))?;
/// let ok = div.enqueue((6, 3))?;
/// assert!(ok.is_ready()?);
/// assert_eq!(ok.wait(Duration::from_secs(1))?, 2);
/// match div.enqueue((1, 0))?.get() {
///     Err(Error::Task(e)) => assert_eq!(e.message, "division by zero"),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
pub struct TaskResult<R> {
    app: Huey,
    id: String,
    message: Option<Message>,
    /// A unique call found its id taken: nothing was enqueued for this handle.
    duplicate: bool,
    preserve: bool,
    /// The result once read; shared with a blocking read still running for a cancelled
    /// [`TaskResult::wait_async`], so a result it took is not lost.
    cached: Arc<Mutex<Option<StoredResult>>>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for TaskResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskResult").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> TaskResult<R> {
    pub(crate) fn new(app: Huey, id: String, message: Option<Message>) -> Self {
        TaskResult {
            app,
            id,
            message,
            duplicate: false,
            preserve: false,
            cached: Arc::new(Mutex::new(None)),
            _r: PhantomData,
        }
    }

    /// The handle of a message just enqueued, or (`written` false: a unique call whose id was
    /// taken) of the task already there under its id.
    pub(crate) fn enqueued(app: Huey, message: Message, written: bool) -> Self {
        let id = message.id.clone();
        let mut h = TaskResult::new(app, id, written.then_some(message));
        h.duplicate = !written;
        h
    }

    /// Whether this enqueue was a duplicate: a unique call ([`crate::task::Call::unique`])
    /// found a task with its id queued, scheduled or running, and wrote nothing. The handle
    /// then reads that task's result.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Leave the result in storage when reading it.
    pub fn preserve(mut self) -> Self {
        self.preserve = true;
        self
    }

    fn finish(stored: StoredResult) -> Result<R> {
        match stored {
            StoredResult::Ok { value: bytes, .. } => postcard::from_bytes(&bytes).map_err(|e| {
                Error::Decode(format!(
                    "the result does not decode as {}: {e}",
                    std::any::type_name::<R>()
                ))
            }),
            StoredResult::Err(e) => Err(Error::Task(e)),
        }
    }

    fn read(&self, wait: Option<Duration>) -> Result<Option<StoredResult>> {
        if let Some(c) = self.cached.lock().clone() {
            return Ok(Some(c));
        }
        let storage = self.app.storage();
        let take = !self.preserve;
        let bytes = match wait {
            None => storage.result(&self.id, take)?,
            Some(t) => storage.wait_result(&self.id, take, t)?,
        };
        let Some(bytes) = bytes else { return Ok(None) };
        let stored = StoredResult::decode(&bytes)?;
        *self.cached.lock() = Some(stored.clone());
        Ok(Some(stored))
    }

    /// The result if the task has finished: `Ok(None)` before that; `Err(Error::Task)` when it
    /// failed for good.
    pub fn get(&self) -> Result<Option<R>> {
        self.read(None)?.map(Self::finish).transpose()
    }

    /// Wait up to `timeout` for the result; `Err(Error::Timeout)` when it does not come.
    pub fn wait(&self, timeout: Duration) -> Result<R> {
        match self.read(Some(timeout))? {
            Some(s) => Self::finish(s),
            None => Err(Error::Timeout(timeout)),
        }
    }

    /// [`wait`](Self::wait), and when the time is up, revoke this instance so that it does
    /// not run later (huey's `get(blocking=True, timeout=t, revoke_on_timeout=True)`). The
    /// error is still `Error::Timeout`.
    pub fn wait_or_revoke(&self, timeout: Duration) -> Result<R> {
        match self.wait(timeout) {
            Err(Error::Timeout(t)) => {
                self.revoke()?;
                Err(Error::Timeout(t))
            }
            other => other,
        }
    }

    /// The task's last progress report ([`crate::TaskContext::progress`]), if it made one.
    pub fn progress(&self) -> Result<Option<crate::progress::Progress>> {
        crate::progress::read(&*self.app.storage(), &self.id)
    }

    /// Whether a result (or final error) is there, without consuming it.
    pub fn is_ready(&self) -> Result<bool> {
        if self.cached.lock().is_some() {
            return Ok(true);
        }
        Ok(self.app.storage().result(&self.id, false)?.is_some())
    }

    /// Revoke this instance: it is skipped when it would run.
    pub fn revoke(&self) -> Result<()> {
        self.app.revoke_id(&self.id, Revoke::default())
    }

    /// Revoke this instance with options (once, until a time).
    pub fn revoke_with(&self, how: Revoke) -> Result<()> {
        self.app.revoke_id(&self.id, how)
    }

    /// Undo a revocation; returns whether there was one.
    pub fn restore(&self) -> Result<bool> {
        self.app.restore_id(&self.id)
    }

    /// Where this task is now: queued, scheduled, running, done, failed, ... (see
    /// [`Huey::task_state`]). Reads only: a stored result is left in place.
    pub fn state(&self) -> Result<crate::observe::TaskState> {
        self.app.task_state(&self.id)
    }

    /// Whether this instance is revoked (changes nothing).
    pub fn is_revoked(&self) -> Result<bool> {
        self.app.is_id_revoked(&self.id)
    }

    /// Run the same call again at another time, as huey does: this instance is revoked once
    /// and a copy with a new id is scheduled. Returns the new handle.
    pub fn reschedule(&self, when: impl Into<When>) -> Result<TaskResult<R>> {
        self.reschedule_with(Reschedule {
            when: Some(when.into()),
            ..Reschedule::default()
        })
    }

    /// [`TaskResult::reschedule`] with huey's other options: a new priority or expiry, and
    /// whether the copy keeps its pipeline (`result.reschedule(eta, delay, expires, priority,
    /// preserve_pipeline)`). A handle made from an id alone ([`Huey::result`]) finds the call
    /// in storage: it must still be queued, scheduled or running.
    pub fn reschedule_with(&self, how: Reschedule) -> Result<TaskResult<R>> {
        let orig = match &self.message {
            Some(m) => m.clone(),
            None => self.pending_message()?,
        };
        self.app.revoke_id(&self.id, Revoke::once())?;
        let mut m = orig;
        m.id = new_id();
        m.attempt = 1;
        m.eta_ms = how.when.map(When::eta_ms);
        m.enqueued_ms = crate::clock::now_ms();
        if let Some(p) = how.priority {
            m.options.priority = p;
        }
        if let Some(e) = how.expires {
            m.options.expires_at_ms = Some(match e {
                Expires::After(d) => m.enqueued_ms.saturating_add(crate::clock::ms(d)),
                Expires::At(t) => crate::clock::to_ms(t),
            });
        }
        if !how.preserve_pipeline {
            m.on_complete = None;
            m.on_error = None;
        }
        let written = self.app.enqueue_messages_unique(std::slice::from_ref(&m))?;
        let w = written.first().copied().unwrap_or(false);
        Ok(TaskResult::enqueued(self.app.clone(), m, w))
    }

    /// The message of this task as it is in storage (ready, leased or scheduled).
    fn pending_message(&self) -> Result<Message> {
        use crate::storage::Location;
        let payload = match self.app.storage().locate(&self.id)? {
            Some(
                Location::Ready { payload, .. }
                | Location::Leased { payload, .. }
                | Location::Scheduled { payload, .. },
            ) => payload,
            _ => {
                return Err(Error::Config(format!(
                    "task {} is not queued, scheduled or running: there is no call to reschedule",
                    self.id
                )))
            }
        };
        Message::decode(&payload)
    }
}

/// How [`TaskResult::reschedule_with`] runs a task again.
#[derive(Debug, Clone, PartialEq)]
pub struct Reschedule {
    /// After a delay or at a time (`None`: at once).
    pub when: Option<When>,
    /// A new priority (`None`: the task's).
    pub priority: Option<i32>,
    /// A new expiry, counted from now (`None`: the task's).
    pub expires: Option<Expires>,
    /// Keep the pipeline's next stages and error handler (huey's default, `true`).
    pub preserve_pipeline: bool,
}

impl Default for Reschedule {
    fn default() -> Self {
        Reschedule {
            when: None,
            priority: None,
            expires: None,
            preserve_pipeline: true,
        }
    }
}

impl Huey {
    /// A result handle for a task id (e.g. one read from a log or `hueyd enqueue`).
    pub fn result<R: DeserializeOwned>(&self, id: impl Into<String>) -> TaskResult<R> {
        TaskResult::new(self.clone(), id.into(), None)
    }

    /// Up to `limit` stored results (values and final errors) whose ids sort after `after`
    /// ("" for the first page), in id order, left in storage: huey's `all_results()`, a page
    /// at a time. Pass the last id of a page to get the next; an empty page is the end.
    ///
    /// Each entry is decoded on its own: stored bytes that are not a result (written by
    /// something else, or damaged) are listed with their `Err(Error::Decode)`, and the rest of
    /// the page is still read.
    ///
    /// ```
    /// # fn main() -> huey::Result<()> {
    /// let app = huey::Huey::immediate("docs");
    /// let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
    /// for n in 0..3 {
    ///     add.call((n, n)).id(format!("sum-{n}")).enqueue()?;
    /// }
    /// let page = app.results_page("", 2)?;
    /// assert_eq!(page.len(), 2);
    /// assert_eq!(app.results_page(&page[1].0, 2)?.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn results_page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Result<StoredResult>)>> {
        Ok(self
            .storage()
            .list_results(after, limit)?
            .into_iter()
            .map(|(id, bytes)| {
                let stored = StoredResult::decode(&bytes);
                (id, stored)
            })
            .collect())
    }
}
