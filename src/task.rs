//! Typed task handles, task options, and the errors a task can end with.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::Huey;
pub use crate::app::TaskContext;
use crate::clock;
pub use crate::control::{Control, IntoFailure};
use crate::error::{Error, Result};
pub use crate::failure::{Failure, FailureKind, TaskError};
use crate::message::Message;
pub use crate::options::{Expires, LockOption, RateLimit, SemaphoreOption, TaskOptions, When};
use crate::result::TaskResult;

macro_rules! option_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => |$o:ident, $v:ident| $body:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $v: $ty) -> Self {
                let $o = self.options_mut();
                $body;
                self
            }
        )*
    };
}

/// Setters shared by the registration builder and the per-call builder.
macro_rules! impl_option_setters {
    (impl<$($g:ident),*> $t:ty) => {
        impl<$($g),*> $t {
            option_setters! {
                /// Retries after a failure.
                retries: u32 => |o, v| o.retries = v;
                /// Delay before each retry.
                retry_delay: Duration => |o, v| o.retry_delay = v;
                /// Multiplier on the retry delay after each retry.
                retry_backoff: f32 => |o, v| o.retry_backoff = v;
                /// Priority: higher runs first.
                priority: i32 => |o, v| o.priority = v;
                /// Skip the task if it has not started within a delay or by a time.
                expires: impl Into<Expires> => |o, v| o.expires = Some(v.into());
                /// Longest one attempt may run.
                timeout: Duration => |o, v| o.timeout = Some(v);
                /// Store the result (`false`: never; `true`: even unit/`None`).
                store_result: bool => |o, v| o.store_result = Some(v);
                /// Store the error of attempts that will be retried too.
                store_errors_between_retries: bool => |o, v| o.store_errors_between_retries = v;
                /// Route to a named queue.
                queue: impl Into<String> => |o, v| o.queue = v.into();
            }
        }
    };
}

/// A typed handle on a registered task: enqueue it, schedule it, revoke it.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use huey::Huey;
///
/// # fn main() -> huey::Result<()> {
/// let app = Huey::open("docs", "memory:")?;
/// let greet = app.task("greet").register(|name: String| Ok::<_, String>(format!("hello {name}")))?;
/// greet.enqueue("ada".into())?;
/// greet.schedule("bob".into(), Duration::from_secs(60))?;
/// greet.schedule("cy".into(), SystemTime::now() + Duration::from_secs(3600))?;
/// greet.call("dee".into()).priority(9).retries(2).enqueue()?;
/// greet.enqueue_many(["e".to_string(), "f".to_string()])?;
/// let c = app.storage().counts()?;
/// assert_eq!((c.ready, c.scheduled), (4, 2));
/// # Ok(())
/// # }
/// ```
pub struct Task<A, R> {
    pub(crate) app: Huey,
    pub(crate) name: String,
    pub(crate) options: TaskOptions,
    pub(crate) _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        Task {
            app: self.app.clone(),
            name: self.name.clone(),
            options: self.options.clone(),
            _types: PhantomData,
        }
    }
}

impl<A, R> fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").field("name", &self.name).finish()
    }
}

impl<A: 'static, R: 'static> Task<A, R> {
    /// A typed handle on a task already registered on `app` (e.g. by shared registration code
    /// run elsewhere). The types must be the ones it was registered with.
    pub fn from_name(app: &Huey, name: &str) -> Result<Task<A, R>> {
        let def = app
            .task_def(name)
            .ok_or_else(|| Error::UnknownTask(name.to_string()))?;
        let wanted = (std::any::TypeId::of::<A>(), std::any::TypeId::of::<R>());
        if def.handler.type_ids() != wanted {
            let (a, r) = def.handler.signature();
            return Err(Error::Config(format!(
                "task {name:?} takes {a} and returns {r}, not {} and {}",
                std::any::type_name::<A>(),
                std::any::type_name::<R>()
            )));
        }
        Ok(Task {
            app: app.clone(),
            name: name.to_string(),
            options: def.options.clone(),
            _types: PhantomData,
        })
    }
}

impl<A: Serialize, R: DeserializeOwned> Task<A, R> {
    /// The registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's default options.
    pub fn options(&self) -> &TaskOptions {
        &self.options
    }

    /// Enqueue a call with the task's default options.
    pub fn enqueue(&self, args: A) -> Result<TaskResult<R>> {
        self.call(args).enqueue()
    }

    /// Enqueue a call that becomes ready after a delay (`Duration`) or at a time (`SystemTime`).
    pub fn schedule(&self, args: A, when: impl Into<When>) -> Result<TaskResult<R>> {
        self.call(args).when(when).enqueue()
    }

    /// A call whose options can be overridden before it is enqueued (huey's `task.s()`).
    pub fn call(&self, args: A) -> Call<A, R> {
        Call {
            task: self.clone(),
            args,
            options: self.options.clone(),
            when: None,
            id: None,
        }
    }

    /// Same as [`Task::call`], by huey's name.
    pub fn s(&self, args: A) -> Call<A, R> {
        self.call(args)
    }

    /// Enqueue many calls in one storage round trip.
    pub fn enqueue_many(&self, args: impl IntoIterator<Item = A>) -> Result<Vec<TaskResult<R>>> {
        let calls: Vec<Call<A, R>> = args.into_iter().map(|a| self.call(a)).collect();
        self.app.enqueue_calls(calls)
    }

    /// Revoke every instance of this task (until restored).
    pub fn revoke(&self) -> Result<()> {
        self.app
            .revoke_task(&self.name, crate::revoke::Revoke::default())
    }

    /// Revoke every instance of this task, with options (once, until a time).
    pub fn revoke_with(&self, how: crate::revoke::Revoke) -> Result<()> {
        self.app.revoke_task(&self.name, how)
    }

    /// Undo [`Task::revoke`]; returns whether it was revoked.
    pub fn restore(&self) -> Result<bool> {
        self.app.restore_task(&self.name)
    }

    /// Whether the task type is revoked right now (changes nothing).
    pub fn is_revoked(&self) -> Result<bool> {
        self.app.is_task_revoked(&self.name)
    }
}

/// One call of a task, with its own options: `task.call(args).priority(9).enqueue()`.
pub struct Call<A, R> {
    pub(crate) task: Task<A, R>,
    pub(crate) args: A,
    pub(crate) options: TaskOptions,
    pub(crate) when: Option<When>,
    pub(crate) id: Option<String>,
}

impl<A, R> Call<A, R> {
    fn options_mut(&mut self) -> &mut TaskOptions {
        &mut self.options
    }

    /// Run after this delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.when = Some(When::Delay(d));
        self
    }

    /// Run at this time.
    pub fn eta(mut self, t: SystemTime) -> Self {
        self.when = Some(When::Eta(t));
        self
    }

    /// Run after a delay or at a time.
    pub fn when(mut self, w: impl Into<When>) -> Self {
        self.when = Some(w.into());
        self
    }

    /// Give the task this id instead of a random one (huey's `schedule(id=...)`): its result
    /// is stored under it, and `app.result(id)` reads it. At most
    /// [`crate::message::MAX_ID_BYTES`] bytes, not empty, no control characters; the enqueue
    /// refuses any other. Without [`Call::unique`], two calls with one id are two tasks that
    /// share a result key.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Enqueue only if no task with this call's id (see [`Call::id`]) is queued, scheduled or
    /// running, retries waiting included. A duplicate is not written: its handle says so
    /// ([`TaskResult::is_duplicate`]) and reads the result of the task already there. The id
    /// can be enqueued again once that task's final outcome (success, final failure, revoked,
    /// expired, dead-lettered) is written. See the guide's "Task ids and unique tasks".
    pub fn unique(mut self) -> Self {
        self.options.unique = true;
        self
    }
}

impl_option_setters!(impl<A, R> Call<A, R>);

impl<A: Serialize, R: DeserializeOwned> Call<A, R> {
    /// The message this call enqueues.
    pub fn to_message(&self) -> Result<Message> {
        let args = postcard::to_allocvec(&self.args).map_err(|e| Error::Encode {
            what: "task arguments",
            message: e.to_string(),
        })?;
        let now = clock::now_ms();
        let mut msg = Message::new(
            self.task.name.clone(),
            args,
            self.options.to_message_options(now),
        );
        msg.eta_ms = self.when.map(When::eta_ms);
        if let Some(id) = &self.id {
            crate::message::check_id(id)?;
            msg.id = id.clone();
        }
        Ok(msg)
    }

    /// Enqueue this call.
    pub fn enqueue(self) -> Result<TaskResult<R>> {
        let app = self.task.app.clone();
        let mut v = app.enqueue_calls(vec![self])?;
        Ok(v.remove(0))
    }
}

/// Registers a task under a name, with its default options.
///
/// ```
/// use std::time::Duration;
/// use huey::{Huey, TaskContext};
///
/// # fn main() -> huey::Result<()> {
/// let app = Huey::immediate("docs");
/// let add = app
///     .task("add")
///     .retries(2)
///     .retry_delay(Duration::from_secs(1))
///     .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
/// let whoami = app
///     .task("whoami")
///     .register_with_context(|(): (), ctx: &TaskContext| Ok::<_, String>(ctx.attempt()))?;
/// assert_eq!(add.enqueue((2, 2))?.get()?, Some(4));
/// assert_eq!(whoami.enqueue(())?.get()?, Some(1));
/// assert!(app.task("add").register(|x: i64| Ok::<_, String>(x)).is_err(), "names are unique");
/// # Ok(())
/// # }
/// ```
pub struct TaskBuilder {
    pub(crate) app: Huey,
    pub(crate) name: String,
    pub(crate) options: TaskOptions,
    pub(crate) periodic: Option<crate::crontab::Crontab>,
    /// See [`TaskBuilder::rate_limit_retry`] (kept for a rate limit set after it).
    pub(crate) rate_limit_retry: bool,
}

impl TaskBuilder {
    fn options_mut(&mut self) -> &mut TaskOptions {
        &mut self.options
    }

    /// Hold the lock `name` while the task runs: when another holder has it, the attempt fails
    /// with [`FailureKind::Locked`] and the retry policy applies.
    pub fn lock(mut self, name: impl Into<String>) -> Self {
        let ttl = self.options.lock.as_ref().and_then(|l| l.ttl);
        self.options.lock = Some(LockOption {
            name: name.into(),
            ttl,
        });
        self
    }

    /// Let the task's lock (see [`TaskBuilder::lock`]; the task's name when none was given)
    /// expire after `ttl`, so a holder that crashed cannot block it for ever.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        let name = self
            .options
            .lock
            .as_ref()
            .map(|l| l.name.clone())
            .unwrap_or_else(|| self.name.clone());
        self.options.lock = Some(LockOption {
            name,
            ttl: Some(ttl),
        });
        self
    }

    /// Hold a permit of the semaphore `name` (at most `permits` holders across every consumer)
    /// while the task runs: when all are held, the attempt fails with [`FailureKind::Locked`]
    /// and the retry policy applies, as for [`TaskBuilder::lock`]. The permit is renewed while
    /// the task runs, however long; one whose worker was killed expires after the TTL (the
    /// task's timeout, one hour without one; see [`TaskBuilder::semaphore_ttl`]).
    pub fn semaphore(mut self, name: impl Into<String>, permits: u32) -> Self {
        let ttl = self.options.semaphore.as_ref().and_then(|s| s.ttl);
        self.options.semaphore = Some(SemaphoreOption {
            name: name.into(),
            permits,
            ttl,
        });
        self
    }

    /// Let the task's semaphore permits (see [`TaskBuilder::semaphore`]) expire `ttl` after
    /// their holder stopped renewing them (it died).
    /// Without a semaphore this does nothing.
    pub fn semaphore_ttl(mut self, ttl: Duration) -> Self {
        if let Some(s) = self.options.semaphore.as_mut() {
            s.ttl = Some(ttl);
        }
        self
    }

    /// Run at most `limit` times per `period` under the limit `name` (shared by every task and
    /// consumer using that name). Over the limit, the task is rescheduled for the next window
    /// without using up a retry.
    pub fn rate_limit(mut self, name: impl Into<String>, limit: u64, period: Duration) -> Self {
        self.options.rate_limit = Some(RateLimit {
            name: name.into(),
            limit,
            period,
            retry: self.rate_limit_retry,
        });
        self
    }

    /// `false`: over the task's rate limit, the attempt fails with
    /// [`FailureKind::RateLimited`] under the retry policy (a retry is used up, and with none
    /// left the task fails for good) instead of being rescheduled for the next window (huey's
    /// `rate_limit(..., retry=False)`). Default `true`.
    pub fn rate_limit_retry(mut self, retry: bool) -> Self {
        self.rate_limit_retry = retry;
        if let Some(r) = &mut self.options.rate_limit {
            r.retry = retry;
        }
        self
    }

    /// Make every call unique by default (see [`Call::unique`]); a call without
    /// [`Call::id`] has a fresh random id, so this matters for calls given their id.
    pub fn unique(mut self, unique: bool) -> Self {
        self.options.unique = unique;
        self
    }

    /// Run this task periodically on a crontab schedule (it then takes `()` arguments).
    pub fn periodic(mut self, schedule: crate::crontab::Crontab) -> Self {
        self.periodic = Some(schedule);
        self
    }

    /// Register a function of the arguments.
    pub fn register<A, R, E, F>(self, f: F) -> Result<Task<A, R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        E: IntoFailure + 'static,
        F: Fn(A) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        self.register_with_context(move |a, _ctx: &TaskContext| f(a))
    }

    /// Register a function of the arguments and the [`TaskContext`].
    pub fn register_with_context<A, R, E, F>(self, f: F) -> Result<Task<A, R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        E: IntoFailure + 'static,
        F: Fn(A, &TaskContext) -> std::result::Result<R, E> + Send + Sync + 'static,
    {
        let handler = crate::registry::typed_handler::<A, R, E, F>(f);
        self.register_handler(handler)
    }

    /// Register an async function of the arguments: `--kind async` and process workers with
    /// `--concurrency` run many of its attempts at once, and drop an attempt's future to cancel
    /// it (past its timeout, or revoked while running). Every other path runs it to its end on
    /// a small runtime of the thread.
    ///
    /// ```
    /// use huey::Huey;
    ///
    /// # fn main() -> huey::Result<()> {
    /// let app = Huey::immediate("docs");
    /// let double = app.task("double").register_async(|n: i64| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///     Ok::<_, String>(n * 2)
    /// })?;
    /// assert_eq!(double.enqueue(21)?.get()?, Some(42));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "async")]
    pub fn register_async<A, R, E, F, Fut>(self, f: F) -> Result<Task<A, R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        E: IntoFailure + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<R, E>> + Send + 'static,
    {
        self.register_async_with_context(move |a, _ctx: TaskContext| f(a))
    }

    /// Register an async function of the arguments and the [`TaskContext`] (owned, so the
    /// future can keep it across awaits).
    #[cfg(feature = "async")]
    pub fn register_async_with_context<A, R, E, F, Fut>(self, f: F) -> Result<Task<A, R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        E: IntoFailure + 'static,
        F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = std::result::Result<R, E>> + Send + 'static,
    {
        let handler = crate::registry::typed_async_handler::<A, R, E, F, Fut>(f);
        self.register_handler(handler)
    }

    fn register_handler<A, R>(
        self,
        handler: std::sync::Arc<dyn crate::app::Handler>,
    ) -> Result<Task<A, R>> {
        self.app
            .register_handler(&self.name, self.options.clone(), self.periodic, handler)?;
        Ok(Task {
            app: self.app,
            name: self.name,
            options: self.options,
            _types: PhantomData,
        })
    }
}

impl_option_setters!(impl<> TaskBuilder);

impl Huey {
    /// Start registering a task under a name.
    pub fn task(&self, name: impl Into<String>) -> TaskBuilder {
        TaskBuilder {
            app: self.clone(),
            name: name.into(),
            options: TaskOptions::default(),
            periodic: None,
            rate_limit_retry: true,
        }
    }

    pub(crate) fn enqueue_calls<A: Serialize, R: DeserializeOwned>(
        &self,
        calls: Vec<Call<A, R>>,
    ) -> Result<Vec<TaskResult<R>>> {
        let msgs = calls
            .iter()
            .map(|c| c.to_message())
            .collect::<Result<Vec<_>>>()?;
        let written = self.enqueue_messages_unique(&msgs)?;
        Ok(msgs
            .into_iter()
            .zip(written)
            .map(|(m, w)| TaskResult::enqueued(self.clone(), m, w))
            .collect())
    }
}

#[cfg(feature = "async")]
mod async_enqueue;
#[cfg(feature = "postgres")]
mod enqueue_in;
