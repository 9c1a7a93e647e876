//! The app: its name, its storage, its registered tasks, hooks and event handlers — what every
//! part of a consumer and every producer shares. What the app does lives with what it makes:
//! enqueueing and running in `exec`, revocation in `revoke`, task handles in `task`, results in
//! `result`, locks in `lock`; a task's fate in `lifecycle`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::crontab::Crontab;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::failure::Failure;
use crate::lifecycle::Policy;
use crate::message::Output;
use crate::options::RetryJitter;
use crate::options::TaskOptions;
use crate::storage::{IntoStorageUrl, LazyStorage, MemoryStorage, Storage, StorageUrl};

struct Inner {
    name: String,
    /// The URL the storage was opened from (`None` for a storage handed in).
    url: Option<StorageUrl>,
    storage: RwLock<Arc<dyn Storage>>,
    /// The storage to go back to when immediate mode is switched off.
    saved_storage: RwLock<Option<Arc<dyn Storage>>>,
    immediate: AtomicBool,
    /// Store no results or errors (huey's `results=False`).
    no_results: AtomicBool,
    tasks: RwLock<HashMap<String, Arc<TaskDef>>>,
    result_ttl: RwLock<Option<Duration>>,
    retry_jitter: RwLock<RetryJitter>,
    /// The largest message `enqueue` writes (at most the hard limit).
    max_message_bytes: std::sync::atomic::AtomicUsize,
    handlers: RwLock<Vec<(HookId, EventHandler)>>,
    hooks: RwLock<Hooks>,
}

/// What registering an event handler or a hook returns: give it to [`Huey::remove_hook`] to
/// unregister it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HookId(u64);

impl HookId {
    fn next() -> HookId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        HookId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Remove the entry with `id` from `list`; whether there was one.
fn remove_from<T>(list: &mut Vec<(HookId, T)>, id: HookId) -> bool {
    let before = list.len();
    list.retain(|(i, _)| *i != id);
    list.len() != before
}

type EventHandler = Arc<dyn Fn(&Event) + Send + Sync>;
type PreHook = Arc<dyn Fn(&TaskContext) -> std::result::Result<(), String> + Send + Sync>;
type PostHook = Arc<dyn Fn(&TaskContext, Option<&Failure>) + Send + Sync>;
type WorkerHook = Arc<dyn Fn(&Huey) + Send + Sync>;

#[derive(Default, Clone)]
pub(crate) struct Hooks {
    pub(crate) pre: Vec<(HookId, PreHook)>,
    pub(crate) post: Vec<(HookId, PostHook)>,
    startup: Vec<(HookId, WorkerHook)>,
    shutdown: Vec<(HookId, WorkerHook)>,
}

/// Run a hook, logging (never propagating) a panic; `None` when it panicked.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            tracing::error!("{what} panicked: {}", crate::failure::panic_message(&*p));
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
                no_results: AtomicBool::new(false),
                tasks: RwLock::new(HashMap::new()),
                result_ttl: RwLock::new(None),
                retry_jitter: RwLock::new(RetryJitter::None),
                max_message_bytes: crate::message::MAX_MESSAGE_BYTES.into(),
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

    /// Store results and errors (the default), or none at all, whatever the tasks' options
    /// say (huey's `Huey(results=False)`). Off, a `TaskResult` never becomes ready: a producer
    /// that waits on one times out. It is read where tasks run: set it in the code that
    /// registers the tasks, which every process of the app runs.
    pub fn set_store_results(&self, on: bool) {
        self.inner.no_results.store(!on, Ordering::SeqCst);
    }

    /// Whether results are stored (see [`Huey::set_store_results`]).
    pub fn stores_results(&self) -> bool {
        !self.inner.no_results.load(Ordering::SeqCst)
    }

    /// Keep stored results for this long only (`None`: until read).
    pub fn set_result_ttl(&self, ttl: Option<Duration>) {
        *self.inner.result_ttl.write() = ttl;
    }

    /// Add jitter to the delays of retries after failures (none by default, as huey): see
    /// [`RetryJitter`].
    pub fn set_retry_jitter(&self, jitter: RetryJitter) {
        *self.inner.retry_jitter.write() = jitter;
    }

    /// Refuse to enqueue messages larger than `bytes` (encoded, arguments included). The
    /// default, and the most, is [`crate::message::MAX_MESSAGE_BYTES`]: what fits in a
    /// worker's pipe frame.
    pub fn set_max_message_bytes(&self, bytes: usize) {
        let bytes = bytes.min(crate::message::MAX_MESSAGE_BYTES);
        self.inner.max_message_bytes.store(bytes, Ordering::SeqCst);
    }

    /// The largest message `enqueue` writes.
    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes.load(Ordering::SeqCst)
    }

    /// Call `f` with every event in the process that runs the supervisor (or the caller, in
    /// immediate mode). A handler that panics is logged and kept. Returns an id for
    /// [`Huey::remove_hook`].
    pub fn on_event(&self, f: impl Fn(&Event) + Send + Sync + 'static) -> HookId {
        let id = HookId::next();
        self.inner.handlers.write().push((id, Arc::new(f)));
        id
    }

    /// Unregister an event handler or a hook (pre- or post-execute, startup, shutdown) by
    /// the id its registration returned; returns whether it was registered. A handler being
    /// called at that moment finishes that call.
    pub fn remove_hook(&self, id: HookId) -> bool {
        if remove_from(&mut self.inner.handlers.write(), id) {
            return true;
        }
        let mut h = self.inner.hooks.write();
        remove_from(&mut h.pre, id)
            || remove_from(&mut h.post, id)
            || remove_from(&mut h.startup, id)
            || remove_from(&mut h.shutdown, id)
    }

    /// Whether any event handler is registered (events need not be built otherwise).
    pub(crate) fn has_event_handlers(&self) -> bool {
        !self.inner.handlers.read().is_empty()
    }

    /// Pass an event to the handlers.
    pub(crate) fn emit(&self, e: &Event) {
        let handlers = {
            let h = self.inner.handlers.read();
            if h.is_empty() {
                return;
            }
            h.clone()
        };
        for (_, h) in handlers {
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(e))) {
                tracing::error!(
                    "event handler panicked on {} of {}: {}",
                    e.kind,
                    e.id,
                    crate::failure::panic_message(&*p)
                );
            }
        }
    }

    /// Run `f` in the worker before each task; `Err(reason)` cancels the task (no retry; event
    /// `Canceled`). A hook that panics is logged and skipped.
    pub fn pre_execute(
        &self,
        f: impl Fn(&TaskContext) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> HookId {
        let id = HookId::next();
        self.inner.hooks.write().pre.push((id, Arc::new(f)));
        id
    }

    /// Run `f` in the worker after each task with its failure (`None`: it succeeded).
    pub fn post_execute(
        &self,
        f: impl Fn(&TaskContext, Option<&Failure>) + Send + Sync + 'static,
    ) -> HookId {
        let id = HookId::next();
        self.inner.hooks.write().post.push((id, Arc::new(f)));
        id
    }

    /// Run `f` when each worker (process or thread) starts, before its first task. Process
    /// workers run the app's registration code, so hooks registered there run in them.
    pub fn on_startup(&self, f: impl Fn(&Huey) + Send + Sync + 'static) -> HookId {
        let id = HookId::next();
        self.inner.hooks.write().startup.push((id, Arc::new(f)));
        id
    }

    /// Run `f` when each worker stops normally.
    pub fn on_shutdown(&self, f: impl Fn(&Huey) + Send + Sync + 'static) -> HookId {
        let id = HookId::next();
        self.inner.hooks.write().shutdown.push((id, Arc::new(f)));
        id
    }

    /// Run the startup hooks (workers call this once as they start).
    pub(crate) fn run_startup_hooks(&self) {
        let hooks = self.inner.hooks.read().startup.clone();
        for (_, h) in hooks {
            guarded("a startup hook", || h(self));
        }
    }

    /// Run the shutdown hooks (workers call this once as they stop).
    pub(crate) fn run_shutdown_hooks(&self) {
        let hooks = self.inner.hooks.read().shutdown.clone();
        for (_, h) in hooks {
            guarded("a shutdown hook", || h(self));
        }
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The storage in use.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.inner.storage.read().clone()
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

    /// The settings a task's fate depends on (see [`crate::lifecycle`]).
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            result_ttl: *self.inner.result_ttl.read(),
            no_results: self.inner.no_results.load(Ordering::SeqCst),
            retry_jitter: *self.inner.retry_jitter.read(),
            random: crate::options::uniform_random(),
        }
    }

    /// The hooks run around each task (cloned: hooks may register more).
    pub(crate) fn hooks(&self) -> Hooks {
        self.inner.hooks.read().clone()
    }
}

/// One attempt of an async task, type-erased: what an async worker polls (and drops to
/// cancel it).
pub type TaskFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Output, Failure>> + Send>>;

/// A task's code, type-erased.
pub trait Handler: Send + Sync {
    /// Run one attempt from argument bytes. Panics are caught and become failures. An async
    /// task runs to its end (or its timeout) on a small runtime of this thread.
    fn run(&self, args: &[u8], ctx: &TaskContext) -> Result<Output, Failure>;
    /// An async task's attempt as a future, for a worker that runs many at once; `None` for a
    /// task registered with sync code.
    fn run_async(&self, _args: &[u8], _ctx: TaskContext) -> Option<TaskFuture> {
        None
    }
    /// Whether the task was registered with async code.
    fn is_async(&self) -> bool {
        false
    }
    /// JSON arguments to postcard bytes of the argument type.
    fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, String>;
    /// Postcard argument bytes to JSON (all the bytes must be one value).
    fn args_to_json(&self, bytes: &[u8]) -> Result<serde_json::Value, String>;
    /// Postcard result bytes to JSON (all the bytes must be one value).
    fn result_to_json(&self, bytes: &[u8]) -> Result<serde_json::Value, String>;
    /// The Rust type names of the argument and result, for `hueyd tasks`.
    fn signature(&self) -> (&'static str, &'static str);
    /// The argument and result types, to check typed handles made by name.
    fn type_ids(&self) -> (std::any::TypeId, std::any::TypeId);
}

/// A registered task.
pub struct TaskDef {
    /// The name messages carry to find it (unique in the app).
    pub name: String,
    /// Retries, timeouts, queue, priority and the rest, as registered.
    pub options: TaskOptions,
    /// When a periodic task runs (`None` for an ordinary task).
    pub periodic: Option<Crontab>,
    /// The code that runs an attempt.
    pub handler: Arc<dyn Handler>,
}

/// What a running task can know about itself.
#[derive(Clone)]
pub struct TaskContext {
    pub(crate) app: Huey,
    pub(crate) id: String,
    pub(crate) task: String,
    pub(crate) attempt: u32,
    pub(crate) retries_left: u32,
    pub(crate) deadline: Option<Instant>,
    pub(crate) progress: crate::progress::Throttle,
}

impl TaskContext {
    /// The app running the task: enqueue more tasks from inside one with it.
    pub fn app(&self) -> &Huey {
        &self.app
    }
    /// Report progress: `done` of `total` units (0 if unknown), and what is being done.
    /// Readable with [`crate::TaskResult::progress`] and `hueyd inspect`. Throttled to a few
    /// writes a second (a report with `done >= total` is always written); returns whether
    /// this one was written. See [`crate::progress`].
    pub fn progress(&self, done: u64, total: u64, message: &str) -> Result<bool> {
        let storage = self.app.storage();
        crate::progress::report(&*storage, &self.progress, &self.id, done, total, message)
    }

    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }
    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Retries left if this attempt fails.
    pub fn retries_left(&self) -> u32 {
        self.retries_left
    }
    /// Time left before the attempt's timeout, if it has one.
    pub fn time_remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
    /// True once the attempt is past its timeout (thread workers should stop then).
    pub fn is_timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}
