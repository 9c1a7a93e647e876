//! The app: its task registry, enqueueing, revocation, and the execute path a consumer runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{self, now_ms};
use crate::crontab::Crontab;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::message::Message;
use crate::registry::{Handler, Output, TaskDef};
use crate::result::{StoredResult, TaskResult};
use crate::storage::{
    Batch, DeadPut, Delivery, IntoStorageUrl, LazyStorage, Lease, MemoryStorage, Ns, Ready,
    ResultPut, Scheduled, Storage, StorageUrl,
};
use crate::task::{Call, Failure, FailureKind, TaskBuilder, TaskContext, TaskError, TaskOptions};

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
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
pub struct Revocations {
    entries: HashMap<String, Revoke>,
}

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

fn task_key(name: &str) -> String {
    format!("task:{name}")
}

struct Inner {
    name: String,
    /// The URL the storage was opened from (`None` for a storage handed in).
    url: Option<StorageUrl>,
    storage: RwLock<Arc<dyn Storage>>,
    /// The storage to go back to when immediate mode is switched off.
    saved_storage: RwLock<Option<Arc<dyn Storage>>>,
    immediate: AtomicBool,
    tasks: RwLock<HashMap<String, Arc<TaskDef>>>,
    result_ttl: RwLock<Option<Duration>>,
    handlers: RwLock<Vec<EventHandler>>,
    hooks: RwLock<Hooks>,
}

type EventHandler = Arc<dyn Fn(&Event) + Send + Sync>;
type PreHook = Arc<dyn Fn(&TaskContext) -> std::result::Result<(), String> + Send + Sync>;
type PostHook = Arc<dyn Fn(&TaskContext, Option<&Failure>) + Send + Sync>;
type WorkerHook = Arc<dyn Fn(&Huey) + Send + Sync>;

#[derive(Default, Clone)]
struct Hooks {
    pre: Vec<PreHook>,
    post: Vec<PostHook>,
    startup: Vec<WorkerHook>,
    shutdown: Vec<WorkerHook>,
}

/// Run a hook, logging (never propagating) a panic; `None` when it panicked.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            tracing::error!("{what} panicked: {}", crate::registry::panic_message(&*p));
            None
        }
    }
}

/// An app: a name, a storage, and its registered tasks. Cheap to clone.
///
/// ```
/// use huey::Huey;
///
/// # fn main() -> huey::Result<()> {
/// let dir = tempfile::tempdir().unwrap();
/// let app = Huey::open("my-app", &format!("sqlite:{}", dir.path().join("q.db").display()))?;
/// let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
/// let r = add.enqueue((1, 2))?;           // a consumer (`hueyd`, or your binary) runs it
/// assert_eq!(app.storage().counts()?.ready, 1);
/// assert_eq!(r.get()?, None);              // not run yet
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Huey {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Huey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Huey")
            .field("name", &self.inner.name)
            .field("storage", &self.storage().backend())
            .finish()
    }
}

impl Huey {
    /// An app on a storage.
    pub fn new(name: impl Into<String>, storage: Arc<dyn Storage>) -> Huey {
        Huey::with_url(name.into(), None, storage)
    }

    fn with_url(name: String, url: Option<StorageUrl>, storage: Arc<dyn Storage>) -> Huey {
        Huey {
            inner: Arc::new(Inner {
                name,
                url,
                storage: RwLock::new(storage),
                saved_storage: RwLock::new(None),
                immediate: AtomicBool::new(false),
                tasks: RwLock::new(HashMap::new()),
                result_ttl: RwLock::new(None),
                handlers: RwLock::new(Vec::new()),
                hooks: RwLock::new(Hooks::default()),
            }),
        }
    }

    /// An app on the storage at a URL (`sqlite:PATH`, `memory:`, `redis://…`; see
    /// [`StorageUrl`]). Process workers of a supervisor open the same URL.
    pub fn open(name: impl Into<String>, url: impl IntoStorageUrl) -> Result<Huey> {
        let name = name.into();
        let url = url.into_storage_url()?;
        let storage = url.open(&name)?;
        Ok(Huey::with_url(name, Some(url), storage))
    }

    /// An app whose storage at `url` is opened when first used (a process worker's: most of
    /// its tasks never touch storage).
    pub(crate) fn open_lazy(name: &str, url: StorageUrl) -> Huey {
        let storage = Arc::new(LazyStorage::new(url.clone(), name));
        Huey::with_url(name.to_string(), Some(url), storage)
    }

    /// The URL the app's storage was opened from; `None` when the storage was handed to
    /// [`Huey::new`].
    pub fn storage_url(&self) -> Option<&StorageUrl> {
        self.inner.url.as_ref()
    }

    /// An app in immediate mode: enqueue runs the task at once in the caller, on memory storage.
    pub fn immediate(name: impl Into<String>) -> Huey {
        let app = Huey::new(name, Arc::new(MemoryStorage::new()));
        app.inner.immediate.store(true, Ordering::SeqCst);
        app
    }

    /// Switch immediate mode on (tasks run in the caller, on a fresh memory storage) or off
    /// (back to the storage the app had).
    pub fn set_immediate(&self, on: bool) {
        if on == self.is_immediate() {
            return;
        }
        let mut storage = self.inner.storage.write();
        if on {
            let old = std::mem::replace(&mut *storage, Arc::new(MemoryStorage::new()));
            *self.inner.saved_storage.write() = Some(old);
        } else if let Some(old) = self.inner.saved_storage.write().take() {
            *storage = old;
        }
        self.inner.immediate.store(on, Ordering::SeqCst);
    }

    /// Whether enqueue runs tasks at once.
    pub fn is_immediate(&self) -> bool {
        self.inner.immediate.load(Ordering::SeqCst)
    }

    /// Keep stored results for this long only (`None`: until read).
    pub fn set_result_ttl(&self, ttl: Option<Duration>) {
        *self.inner.result_ttl.write() = ttl;
    }

    /// Call `f` with every event in the process that runs the supervisor (or the caller, in
    /// immediate mode). A handler that panics is logged and kept.
    pub fn on_event(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.handlers.write().push(Arc::new(f));
    }

    /// Whether any event handler is registered (events need not be built otherwise).
    pub fn has_event_handlers(&self) -> bool {
        !self.inner.handlers.read().is_empty()
    }

    /// Pass an event to the handlers.
    pub fn emit(&self, e: &Event) {
        let handlers = {
            let h = self.inner.handlers.read();
            if h.is_empty() {
                return;
            }
            h.clone()
        };
        for h in handlers {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(e))) {
                tracing::error!(
                    "event handler panicked on {} of {}: {}",
                    e.kind,
                    e.id,
                    crate::registry::panic_message(&*p)
                );
            }
        }
    }

    /// Run `f` in the worker before each task; `Err(reason)` cancels the task (no retry; event
    /// `Canceled`). A hook that panics is logged and skipped.
    pub fn pre_execute(
        &self,
        f: impl Fn(&TaskContext) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        self.inner.hooks.write().pre.push(Arc::new(f));
    }

    /// Run `f` in the worker after each task with its failure (`None`: it succeeded).
    pub fn post_execute(&self, f: impl Fn(&TaskContext, Option<&Failure>) + Send + Sync + 'static) {
        self.inner.hooks.write().post.push(Arc::new(f));
    }

    /// Run `f` when each worker (process or thread) starts, before its first task. Process
    /// workers run the app's registration code, so hooks registered there run in them.
    pub fn on_startup(&self, f: impl Fn(&Huey) + Send + Sync + 'static) {
        self.inner.hooks.write().startup.push(Arc::new(f));
    }

    /// Run `f` when each worker stops normally.
    pub fn on_shutdown(&self, f: impl Fn(&Huey) + Send + Sync + 'static) {
        self.inner.hooks.write().shutdown.push(Arc::new(f));
    }

    /// Run the startup hooks (workers call this once as they start).
    pub fn run_startup_hooks(&self) {
        let hooks = self.inner.hooks.read().startup.clone();
        for h in hooks {
            guarded("a startup hook", || h(self));
        }
    }

    /// Run the shutdown hooks (workers call this once as they stop).
    pub fn run_shutdown_hooks(&self) {
        let hooks = self.inner.hooks.read().shutdown.clone();
        for h in hooks {
            guarded("a shutdown hook", || h(self));
        }
    }

    /// A named lock shared by every consumer of this storage (see [`crate::lock`]).
    pub fn lock_task(&self, name: impl Into<String>) -> crate::lock::TaskLock {
        crate::lock::TaskLock::new(self.clone(), name.into())
    }

    /// Break every lock (as `hueyd --flush-locks` does at start).
    pub fn flush_locks(&self) -> Result<()> {
        self.storage().flush(crate::storage::Flush {
            locks: true,
            ..Default::default()
        })
    }

    /// Count one use of the rate limit `name`: at most `limit` per `period` (fixed windows,
    /// shared by every consumer of this storage). Over the limit: `Err(Error::RateLimited)`,
    /// which, returned from a task with `?`, reschedules it for the next window without using
    /// up a retry.
    pub fn rate_limit(&self, name: &str, limit: u64, period: Duration) -> Result<()> {
        crate::lock::rate_limit(self, name, limit, period)
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The storage in use.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner.storage.read().clone()
    }

    /// Start registering a task under a name.
    pub fn task(&self, name: impl Into<String>) -> TaskBuilder {
        TaskBuilder {
            app: self.clone(),
            name: name.into(),
            options: TaskOptions::default(),
            periodic: None,
        }
    }

    pub(crate) fn register_handler(
        &self,
        name: &str,
        options: TaskOptions,
        periodic: Option<Crontab>,
        handler: Arc<dyn Handler>,
    ) -> Result<()> {
        let mut tasks = self.inner.tasks.write();
        if tasks.contains_key(name) {
            return Err(Error::DuplicateTask(name.to_string()));
        }
        tasks.insert(
            name.to_string(),
            Arc::new(TaskDef {
                name: name.to_string(),
                options,
                periodic,
                handler,
            }),
        );
        Ok(())
    }

    /// A registered task by name.
    pub fn task_def(&self, name: &str) -> Option<Arc<TaskDef>> {
        self.inner.tasks.read().get(name).cloned()
    }

    /// Every registered task, sorted by name.
    pub fn task_defs(&self) -> Vec<Arc<TaskDef>> {
        let mut v: Vec<_> = self.inner.tasks.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A result handle for a task id (e.g. one read from a log or `hueyd enqueue`).
    pub fn result<R: DeserializeOwned>(&self, id: impl Into<String>) -> TaskResult<R> {
        TaskResult::new(self.clone(), id.into(), None)
    }

    pub(crate) fn enqueue_calls<A: Serialize, R: DeserializeOwned>(
        &self,
        calls: Vec<Call<A, R>>,
    ) -> Result<Vec<TaskResult<R>>> {
        let msgs = calls
            .iter()
            .map(|c| c.to_message())
            .collect::<Result<Vec<_>>>()?;
        self.enqueue_messages(&msgs)?;
        Ok(msgs
            .into_iter()
            .map(|m| TaskResult::new(self.clone(), m.id.clone(), Some(m)))
            .collect())
    }

    /// Enqueue (or schedule, when they have an eta) messages in one storage write.
    pub fn enqueue_messages(&self, msgs: &[Message]) -> Result<()> {
        let mut batch = Batch::default();
        let mut run_now = Vec::new();
        for m in msgs {
            if self.is_immediate() && m.eta_ms.is_none() {
                run_now.push(m.clone());
            } else {
                push_message(&mut batch, m)?;
            }
        }
        if !batch.is_empty() {
            self.storage().apply(&batch)?;
        }
        for m in msgs {
            let kind = if m.eta_ms.is_some_and(|eta| eta > now_ms()) {
                EventKind::Scheduled
            } else {
                EventKind::Enqueued
            };
            self.emit(&Event::for_message(kind, m));
        }
        for m in run_now {
            self.execute_inline(m)?;
        }
        Ok(())
    }

    /// Run a message in this thread, as immediate mode does: checks, run, completion, and any
    /// retries or follow-up tasks that are ready at once.
    fn execute_inline(&self, msg: Message) -> Result<()> {
        let mut todo = vec![msg];
        while let Some(msg) = todo.pop() {
            let storage = self.storage();
            let revocations = self.revocations()?;
            let mut batch = Batch::default();
            let mut events = Vec::new();
            if let Some(msg) =
                self.check(None, msg, &revocations, now_ms(), &mut batch, &mut events)?
            {
                events.push(Event::for_message(EventKind::Executing, &msg));
                let outcome = self.run_attempt(&msg);
                self.complete(None, &msg, outcome, &mut batch, &mut events);
            }
            for r in batch.enqueue.drain(..) {
                todo.push(Message::decode(&r.payload)?);
            }
            storage.apply(&batch)?;
            for e in &events {
                self.emit(e);
            }
        }
        Ok(())
    }

    // ----- revocation -------------------------------------------------------------------

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
    pub fn revocations(&self) -> Result<Revocations> {
        let entries = self
            .storage()
            .list(Ns::Revoked)?
            .into_iter()
            .filter_map(|(k, v)| postcard::from_bytes::<Revoke>(&v).ok().map(|r| (k, r)))
            .collect();
        Ok(Revocations { entries })
    }

    /// Whether `msg` is revoked now by id or task name (consumes revoke-once entries).
    pub fn is_revoked(&self, msg: &Message, rev: &Revocations) -> Result<bool> {
        self.consume_revocation(msg, rev, now_ms())
    }

    /// Whether `msg` is revoked now; consumes revoke-once entries that apply.
    fn consume_revocation(&self, msg: &Message, rev: &Revocations, now: u64) -> Result<bool> {
        if rev.entries.is_empty() {
            return Ok(false); // the usual case: no key to build per task
        }
        for key in [id_key(&msg.id), task_key(&msg.task)] {
            if let Some(r) = rev.entries.get(&key) {
                if r.once {
                    // Only the consumer that takes the entry skips the task.
                    if self.storage().take(Ns::Revoked, &key)?.is_some() {
                        return Ok(true);
                    }
                } else if r.active(now) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    // ----- the execute path -------------------------------------------------------------

    /// Decode a delivery and decide whether it runs. Undecodable messages and unknown tasks go
    /// to the dead-letter place; revoked and expired ones are recorded and acknowledged.
    pub fn prepare(
        &self,
        d: &Delivery,
        rev: &Revocations,
        now: u64,
        batch: &mut Batch,
        events: &mut Vec<Event>,
    ) -> Result<Option<Message>> {
        let msg = match Message::decode(&d.payload) {
            Ok(m) => m,
            Err(e) => {
                batch.ack.push(d.lease.clone());
                batch.dead.push(DeadPut {
                    id: String::new(),
                    queue: d.queue.clone(),
                    payload: d.payload.clone(),
                    error: e.to_string(),
                });
                events
                    .push(Event::new(EventKind::DeadLettered, "", "", 0).with_error(e.to_string()));
                return Ok(None);
            }
        };
        self.check(Some(&d.lease), msg, rev, now, batch, events)
    }

    fn check(
        &self,
        lease: Option<&Lease>,
        msg: Message,
        rev: &Revocations,
        now: u64,
        batch: &mut Batch,
        events: &mut Vec<Event>,
    ) -> Result<Option<Message>> {
        let ack = |batch: &mut Batch| {
            if let Some(l) = lease {
                batch.ack.push(l.clone());
            }
        };
        if self.task_def(&msg.task).is_none() {
            let err = Error::UnknownTask(msg.task.clone()).to_string();
            ack(batch);
            batch.dead.push(DeadPut {
                id: msg.id.clone(),
                queue: msg.queue().to_string(),
                payload: msg.encode()?,
                error: err.clone(),
            });
            self.finish_failure(
                &msg,
                Failure::new(FailureKind::UnknownTask, &err),
                batch,
                events,
            );
            events.push(Event::for_message(EventKind::DeadLettered, &msg).with_error(err));
            return Ok(None);
        }
        if msg.eta_ms.is_some_and(|eta| eta > now) {
            // Made ready early (e.g. a message enqueued straight to the queue): back to the schedule.
            ack(batch);
            push_message(batch, &msg)?;
            events.push(Event::for_message(EventKind::Scheduled, &msg));
            return Ok(None);
        }
        if self.consume_revocation(&msg, rev, now)? {
            ack(batch);
            self.finish_failure(
                &msg,
                Failure::new(FailureKind::Revoked, "revoked"),
                batch,
                events,
            );
            events.push(Event::for_message(EventKind::Revoked, &msg));
            return Ok(None);
        }
        if msg.options.expires_at_ms.is_some_and(|e| e <= now) {
            ack(batch);
            self.finish_failure(
                &msg,
                Failure::new(FailureKind::Expired, "expired before it ran"),
                batch,
                events,
            );
            events.push(Event::for_message(EventKind::Expired, &msg));
            return Ok(None);
        }
        Ok(Some(msg))
    }

    /// Run one attempt of a message in this thread (what a worker does).
    pub fn run_attempt(&self, msg: &Message) -> std::result::Result<Output, Failure> {
        let def = self.task_def(&msg.task).ok_or_else(|| {
            Failure::new(
                FailureKind::UnknownTask,
                Error::UnknownTask(msg.task.clone()).to_string(),
            )
        })?;
        let ctx = TaskContext {
            app: self.clone(),
            id: msg.id.clone(),
            task: msg.task.clone(),
            attempt: msg.attempt,
            retries_left: msg.options.retries,
            deadline: msg
                .options
                .timeout_ms
                .map(|t| Instant::now() + Duration::from_millis(t)),
        };
        let hooks = self.inner.hooks.read().clone();
        for h in &hooks.pre {
            if let Some(Err(reason)) = guarded("a pre-execute hook", || h(&ctx)) {
                let f = Failure::new(FailureKind::Canceled, reason);
                for h in &hooks.post {
                    guarded("a post-execute hook", || h(&ctx, Some(&f)));
                }
                return Err(f);
            }
        }
        let outcome = self.run_guarded(&def, msg, &ctx);
        for h in &hooks.post {
            guarded("a post-execute hook", || h(&ctx, outcome.as_ref().err()));
        }
        outcome
    }

    /// The task's rate limit and lock options around its code.
    fn run_guarded(
        &self,
        def: &TaskDef,
        msg: &Message,
        ctx: &TaskContext,
    ) -> std::result::Result<Output, Failure> {
        let as_failure = |e: Error| crate::task::IntoFailure::into_failure(e);
        if let Some(r) = &def.options.rate_limit {
            self.rate_limit(&r.name, r.limit, r.period)
                .map_err(as_failure)?;
        }
        let _guard = match &def.options.lock {
            Some(l) => {
                let mut lock = self.lock_task(l.name.clone());
                if let Some(ttl) = l.ttl {
                    lock = lock.ttl(ttl);
                }
                Some(lock.acquire().map_err(as_failure)?)
            }
            None => None,
        };
        def.handler.run(&msg.args, ctx)
    }

    fn result_ttl(&self) -> Option<Duration> {
        *self.inner.result_ttl.read()
    }

    fn store_failure(&self, msg: &Message, f: Failure, batch: &mut Batch) -> StoredResult {
        let err = TaskError {
            id: msg.id.clone(),
            task: msg.task.clone(),
            attempt: msg.attempt,
            kind: f.kind,
            message: f.message,
        };
        let stored = StoredResult::Err(err);
        batch.results.push(ResultPut {
            id: msg.id.clone(),
            value: stored.encode(),
            ttl: self.result_ttl(),
        });
        stored
    }

    /// Store a task's final failure and count it in its chord, if it is in one.
    fn finish_failure(
        &self,
        msg: &Message,
        f: Failure,
        batch: &mut Batch,
        events: &mut Vec<Event>,
    ) {
        let stored = self.store_failure(msg, f, batch);
        crate::flow::member_finished(self, msg, &stored, batch, events);
    }

    /// Record an attempt's outcome: the result or error, retries, pipeline continuations, the
    /// ack. Everything goes into `batch`, written in one step by the caller.
    pub fn complete(
        &self,
        lease: Option<&Lease>,
        msg: &Message,
        outcome: std::result::Result<Output, Failure>,
        batch: &mut Batch,
        events: &mut Vec<Event>,
    ) {
        if let Some(l) = lease {
            batch.ack.push(l.clone());
        }
        match outcome {
            Ok(out) => {
                let store = msg.options.store_result.unwrap_or(!out.is_empty);
                if let Some(next) = &msg.on_complete {
                    let mut next = (**next).clone();
                    let mut args = out.value.clone();
                    args.extend_from_slice(&next.args);
                    next.args = args;
                    next.enqueued_ms = now_ms();
                    push_encoded(batch, &next, events);
                }
                let stored = StoredResult::Ok {
                    task: msg.task.clone(),
                    value: out.value,
                };
                if store {
                    batch.results.push(ResultPut {
                        id: msg.id.clone(),
                        value: stored.encode(),
                        ttl: self.result_ttl(),
                    });
                }
                crate::flow::member_finished(self, msg, &stored, batch, events);
                events.push(Event::for_message(EventKind::Complete, msg));
            }
            Err(f) if f.retry_delay_ms.is_some() && f.kind != FailureKind::Canceled => {
                // Rate limited, or asked for by the task: again later, no retry used up.
                let mut next = msg.clone();
                next.attempt += 1;
                let delay = f.retry_delay_ms.unwrap_or(0);
                next.eta_ms = (delay > 0).then(|| now_ms() + delay);
                if msg.options.store_errors_between_retries {
                    let _ = self.store_failure(msg, f.clone(), batch);
                }
                push_encoded(batch, &next, events);
                let kind = if f.kind == FailureKind::RateLimited {
                    EventKind::RateLimited
                } else {
                    EventKind::Retrying
                };
                events.push(Event::for_message(kind, msg).with_failure(&f));
            }
            Err(f) if f.kind.is_retryable() && msg.options.retries > 0 => {
                if f.kind == FailureKind::Locked {
                    events.push(Event::for_message(EventKind::Locked, msg).with_failure(&f));
                }
                let mut next = msg.clone();
                next.attempt += 1;
                next.options.retries -= 1;
                let delay = msg.options.retry_delay_ms;
                next.options.retry_delay_ms =
                    (delay as f64 * f64::from(msg.options.retry_backoff.max(0.0))) as u64;
                next.eta_ms = (delay > 0).then(|| now_ms() + delay);
                if msg.options.store_errors_between_retries {
                    let _ = self.store_failure(msg, f.clone(), batch);
                }
                push_encoded(batch, &next, events);
                events.push(Event::for_message(EventKind::Retrying, msg).with_failure(&f));
            }
            Err(f) => {
                if f.kind == FailureKind::WorkerLost {
                    if let Ok(payload) = msg.encode() {
                        batch.dead.push(DeadPut {
                            id: msg.id.clone(),
                            queue: msg.queue().to_string(),
                            payload,
                            error: format!("{}: {}", f.kind, f.message),
                        });
                        events.push(
                            Event::for_message(EventKind::DeadLettered, msg).with_failure(&f),
                        );
                    }
                }
                if let Some(handler) = &msg.on_error {
                    let mut next = (**handler).clone();
                    let err = TaskError {
                        id: msg.id.clone(),
                        task: msg.task.clone(),
                        attempt: msg.attempt,
                        kind: f.kind,
                        message: f.message.clone(),
                    };
                    if let Ok(mut args) = postcard::to_allocvec(&err) {
                        args.extend_from_slice(&next.args);
                        next.args = args;
                        next.enqueued_ms = now_ms();
                        push_encoded(batch, &next, events);
                    }
                }
                events.push(Event::for_message(f.kind.into(), msg).with_failure(&f));
                self.finish_failure(msg, f, batch, events);
            }
        }
    }

    /// Dequeue-free execution of one delivery (checks, run, completion, one write), then the
    /// events to the app's handlers. The supervisor splits these steps across processes; this
    /// is the same path in one thread.
    pub fn execute(&self, d: &Delivery) -> Result<Vec<Event>> {
        let rev = self.revocations()?;
        let mut batch = Batch::default();
        let mut events = Vec::new();
        if let Some(msg) = self.prepare(d, &rev, now_ms(), &mut batch, &mut events)? {
            events.push(Event::for_message(EventKind::Executing, &msg));
            let outcome = self.run_attempt(&msg);
            self.complete(Some(&d.lease), &msg, outcome, &mut batch, &mut events);
        }
        self.storage().apply(&batch)?;
        for e in &events {
            self.emit(e);
        }
        Ok(events)
    }
}

/// Add a message to a batch: to the schedule if it has a future eta, else the ready queue.
pub(crate) fn push_message(batch: &mut Batch, m: &Message) -> Result<()> {
    let ready = Ready {
        id: m.id.clone(),
        queue: m.queue().to_string(),
        priority: m.priority(),
        payload: m.encode()?,
    };
    match m.eta_ms {
        Some(eta) if eta > now_ms() => batch.schedule.push(Scheduled { eta_ms: eta, ready }),
        _ => batch.enqueue.push(ready),
    }
    Ok(())
}

fn push_encoded(batch: &mut Batch, m: &Message, events: &mut Vec<Event>) {
    if let Err(e) = push_message(batch, m) {
        events.push(Event::for_message(EventKind::Error, m).with_error(e.to_string()));
    }
}
