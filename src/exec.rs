//! Running tasks in this thread: one attempt (hooks, rate limit, lock, the task's code), the
//! enqueue path (which immediate mode short-circuits into running at once), and
//! [`Huey::execute`], a delivery's whole path in one thread. The decisions come from
//! [`crate::lifecycle`]; this module does the I/O around them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{guarded, Hooks, Huey, TaskContext, TaskDef};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::failure::{Failure, FailureKind};
use crate::lifecycle::{self, Admission, Effects};
use crate::message::{unique_claim, Message, Output, UNIQUE_CLAIM_TTL};
use crate::revoke::Revocations;
use crate::storage::{Batch, Claim, Delivery, DequeueRequest, Lease};

impl Huey {
    /// The error for a batch holding a message over [`Huey::max_message_bytes`].
    pub(crate) fn check_sizes(&self, batch: &Batch) -> Result<()> {
        let limit = self.max_message_bytes();
        let sizes = batch
            .enqueue
            .iter()
            .chain(batch.schedule.iter().map(|s| &s.ready));
        match sizes.map(|r| r.payload.len()).find(|&n| n > limit) {
            Some(big) => Err(Error::Encode {
                what: "message",
                message: format!("{big} bytes encoded, over the limit of {limit} bytes"),
            }),
            None => Ok(()),
        }
    }

    /// Enqueue (or schedule, when they have an eta) messages in one storage write. In immediate
    /// mode the ready ones run at once instead, in this thread.
    pub fn enqueue_messages(&self, msgs: &[Message]) -> Result<()> {
        self.enqueue_messages_unique(msgs).map(drop)
    }

    /// [`Huey::enqueue_messages`], telling per message whether it was enqueued: `false` for a
    /// unique one ([`crate::task::Call::unique`]) whose id was queued, scheduled or running
    /// already (it was not written). Each unique message is its own batch, written only if it
    /// takes its claim ([`crate::message::unique_claim`]); all batches go in one storage call.
    pub fn enqueue_messages_unique(&self, msgs: &[Message]) -> Result<Vec<bool>> {
        let now = now_ms();
        let immediate = self.is_immediate();
        let mut shared = Batch::default();
        let mut batches = Vec::new();
        // Per message: the batch that writes it (None: the shared one; always written).
        let mut owner = Vec::with_capacity(msgs.len());
        let mut run_now = Vec::new();
        // Only a message whose own enqueue takes its claim releases one: stages nested in it
        // are written later without a claim, so they are not unique.
        let cleared: Vec<Message>;
        let msgs = if msgs.iter().any(Message::has_nested_unique) {
            cleared = msgs
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    m.clear_nested_unique();
                    m
                })
                .collect();
            &cleared[..]
        } else {
            msgs
        };
        for m in msgs {
            let ready_now = m.eta_ms.is_none_or(|eta| eta <= now);
            let inline = immediate && ready_now;
            if inline {
                // Not written, but refused as a write would be (too large, nested too deep):
                // what it leads to is encoded as it runs, and would be lost there.
                m.encode()?;
            }
            if m.options.unique {
                let eta_in = m.eta_ms.map_or(0, |eta| eta.saturating_sub(now));
                let mut own = Batch {
                    claim: Some(Claim {
                        key: unique_claim(&m.id),
                        ttl: UNIQUE_CLAIM_TTL + Duration::from_millis(eta_in),
                    }),
                    ..Batch::default()
                };
                // Run inline, the batch only takes the claim (released by the outcome).
                if !inline {
                    lifecycle::push_message(&mut own, m, now)?;
                }
                self.check_sizes(&own)?;
                owner.push(Some(batches.len()));
                batches.push(own);
            } else {
                if !inline {
                    lifecycle::push_message(&mut shared, m, now)?;
                }
                owner.push(None);
            }
        }
        self.check_sizes(&shared)?;
        if !shared.is_empty() {
            batches.push(shared);
        }
        let written = if batches.is_empty() {
            Vec::new()
        } else {
            self.storage().apply_all(&batches)?
        };
        let mut out = Vec::with_capacity(msgs.len());
        for (m, own) in msgs.iter().zip(owner) {
            let done = own.is_none_or(|b| written.get(b).copied().unwrap_or(false));
            out.push(done);
            if !done {
                continue;
            }
            if immediate && m.eta_ms.is_none_or(|eta| eta <= now) {
                run_now.push((None, m.clone()));
            }
            let kind = if m.eta_ms.is_some_and(|eta| eta > now) {
                EventKind::Scheduled
            } else {
                EventKind::Enqueued
            };
            self.emit(&Event::for_message(kind, m));
        }
        self.run_inline(run_now)?;
        Ok(out)
    }

    /// Immediate mode: run messages in this thread with everything they lead to that is ready at
    /// once (retries without delay, next stages, error handlers, chord callbacks). Only this
    /// call's own work runs here, never another thread's: a chord callback that one of these
    /// outcomes fires is routed to a queue private to this call and taken from there.
    fn run_inline(&self, mut todo: Vec<(Option<Lease>, Message)>) -> Result<()> {
        if todo.is_empty() {
            return Ok(());
        }
        let private = format!("immediate:{}", crate::message::new_id());
        while let Some((lease, msg)) = todo.pop() {
            let rev = self.revocations_for([&msg], None)?;
            let mut fx = Effects::default();
            let lease = lease.as_ref();
            if let Some(msg) = self.admit(lease, msg, &rev, now_ms(), &mut fx)? {
                fx.events
                    .push(Event::for_message(EventKind::Executing, &msg));
                let outcome = self.run_attempt(&msg);
                lifecycle::complete(lease, &msg, outcome, now_ms(), self.policy(), &mut fx);
            }
            for r in fx.batch.enqueue.drain(..) {
                todo.push((None, Message::decode(&r.payload)?));
            }
            let counts_chords = !fx.batch.chords.is_empty();
            for c in &mut fx.batch.chords {
                c.callback.queue = private.clone();
            }
            self.write(fx)?;
            if counts_chords {
                todo.extend(self.take_private(&private)?);
            }
        }
        Ok(())
    }

    /// The chord callbacks fired into this call's private queue, leased to it.
    fn take_private(&self, queue: &str) -> Result<Vec<(Option<Lease>, Message)>> {
        let req = DequeueRequest {
            consumer: "immediate".into(),
            queues: vec![queue.to_string()],
            max: 16,
            lease: Duration::from_secs(3600),
            wait: Duration::ZERO,
            max_deliveries: u32::MAX,
        };
        self.storage()
            .dequeue(&req)?
            .into_iter()
            .map(|d| Ok((Some(d.lease), Message::decode(&d.payload)?)))
            .collect()
    }

    /// A delivery's whole path in this thread: decode, admit, run, complete, one write, then
    /// the events to the app's handlers (returned too; none when the outcome was fenced off
    /// because the lease had expired and passed to someone else). The supervisor splits these steps
    /// across processes; this is the same path in one thread.
    pub fn execute(&self, d: &Delivery) -> Result<Vec<Event>> {
        let mut fx = Effects::default();
        let lease = Some(&d.lease);
        if let Some(msg) = lifecycle::decode(lease, &d.queue, &d.payload, &mut fx) {
            let rev = self.revocations_for([&msg], None)?;
            if let Some(msg) = self.admit(lease, msg, &rev, now_ms(), &mut fx)? {
                fx.events
                    .push(Event::for_message(EventKind::Executing, &msg));
                let outcome = self.run_attempt(&msg);
                lifecycle::complete(lease, &msg, outcome, now_ms(), self.policy(), &mut fx);
            }
        }
        let events = fx.events.clone();
        if self.write(fx)? {
            Ok(events)
        } else {
            Ok(Vec::new())
        }
    }

    /// Run one attempt of a message in this thread (what a worker does).
    pub(crate) fn run_attempt(&self, msg: &Message) -> std::result::Result<Output, Failure> {
        let (def, ctx) = self.attempt_context(msg)?;
        let hooks = self.hooks();
        pre_hooks(&hooks, &ctx)?;
        let outcome = self.run_guarded(&def, msg, &ctx);
        post_hooks(&hooks, &ctx, &outcome);
        outcome
    }

    /// One attempt of an async task as a future (what an async worker polls): the same steps
    /// as [`Huey::run_attempt`], the storage calls of the rate limit and the lock on the
    /// runtime's blocking pool, and the task's future dropped at its deadline. Dropping this
    /// future cancels the attempt and releases its lock.
    #[cfg(feature = "async")]
    pub(crate) async fn run_attempt_async(
        self,
        msg: Message,
    ) -> std::result::Result<Output, Failure> {
        let (def, ctx) = self.attempt_context(&msg)?;
        let hooks = self.hooks();
        pre_hooks(&hooks, &ctx)?;
        let outcome = self.run_guarded_async(def, msg, ctx.clone()).await;
        post_hooks(&hooks, &ctx, &outcome);
        outcome
    }

    /// The task's definition and the context of an attempt starting now.
    fn attempt_context(
        &self,
        msg: &Message,
    ) -> std::result::Result<(Arc<TaskDef>, TaskContext), Failure> {
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
            progress: Default::default(),
        };
        Ok((def, ctx))
    }

    /// The task's rate limit and lock options around its code.
    fn run_guarded(
        &self,
        def: &TaskDef,
        msg: &Message,
        ctx: &TaskContext,
    ) -> std::result::Result<Output, Failure> {
        let _guard = self.take_guards(def)?;
        def.handler.run(&msg.args, ctx)
    }

    #[cfg(feature = "async")]
    async fn run_guarded_async(
        &self,
        def: Arc<TaskDef>,
        msg: Message,
        ctx: TaskContext,
    ) -> std::result::Result<Output, Failure> {
        // Only a rate limit, a lock or a semaphore needs storage calls (on the blocking pool);
        // without them the attempt needs no blocking thread, so sync tasks that fill that pool
        // cannot hold it up.
        let o = &def.options;
        let guarded = o.rate_limit.is_some() || o.lock.is_some() || o.semaphore.is_some();
        let _guard = if guarded {
            let app = self.clone();
            let d = def.clone();
            tokio::task::spawn_blocking(move || app.take_guards(&d))
                .await
                .map_err(|e| Failure::new(FailureKind::Error, format!("taking the lock: {e}")))??
        } else {
            Guards::default()
        };
        let deadline = ctx.deadline;
        let Some(fut) = def.handler.run_async(&msg.args, ctx) else {
            return Err(Failure::new(
                FailureKind::Error,
                "a sync task cannot run as a future",
            ));
        };
        crate::registry::within(deadline, fut).await
    }

    /// Count the attempt against the task's rate limit, take a permit of its semaphore and
    /// take its lock (held until the guards are dropped).
    fn take_guards(&self, def: &TaskDef) -> std::result::Result<Guards, Failure> {
        let as_failure = |e: Error| crate::task::IntoFailure::into_failure(e);
        let o = &def.options;
        if let Some(r) = &o.rate_limit {
            self.rate_limit(&r.name, r.limit, r.period)
                .map_err(|e| match e {
                    // huey's retry=False: an ordinary failure of its kind, under the retry policy.
                    Error::RateLimited { .. } if !r.retry => {
                        Failure::new(FailureKind::RateLimited, e.to_string())
                    }
                    e => as_failure(e),
                })?;
        }
        let mut guards = Guards::default();
        if let Some(s) = &o.semaphore {
            let ttl = s.ttl_for(o.timeout);
            let sem = self.semaphore(s.name.clone(), s.permits, ttl);
            guards._permit = Some(sem.acquire().map_err(as_failure)?);
        }
        if let Some(l) = &o.lock {
            let mut lock = self.lock_task(l.name.clone());
            if let Some(ttl) = l.ttl {
                lock = lock.ttl(ttl);
            }
            guards._lock = Some(lock.acquire().map_err(as_failure)?);
        }
        Ok(guards)
    }

    /// Decide whether a fetched message runs (see [`lifecycle::admit`]). Its one I/O is taking
    /// a revoke-once entry, asked for only once the message is known and due.
    pub(crate) fn admit(
        &self,
        lease: Option<&Lease>,
        msg: Message,
        rev: &Revocations,
        now: u64,
        fx: &mut Effects,
    ) -> Result<Option<Message>> {
        let at = Admission {
            known: self.task_def(&msg.task).is_some(),
            now_ms: now,
        };
        let revoked = |m: &Message| rev.consume(&*self.storage(), m, now);
        lifecycle::admit(lease, msg, at, revoked, self.policy(), fx)
    }

    /// Write an outcome's batch, then tell the handlers its events. `false` (and no events)
    /// when the outcome was fenced off: the delivery's lease had passed to someone else.
    fn write(&self, fx: Effects) -> Result<bool> {
        if !fx.batch.is_empty() && !self.storage().apply(&fx.batch)? {
            return Ok(false);
        }
        for e in &fx.events {
            self.emit(e);
        }
        Ok(true)
    }
}

/// What a task holds while it runs: its lock and its semaphore permit, given back when dropped.
#[derive(Default)]
struct Guards {
    _lock: Option<crate::lock::LockGuard>,
    _permit: Option<crate::semaphore::Permit>,
}

/// Run the pre-execute hooks; the first that refuses cancels the attempt (the post-execute
/// hooks then run with its failure).
fn pre_hooks(hooks: &Hooks, ctx: &TaskContext) -> std::result::Result<(), Failure> {
    for (_, h) in &hooks.pre {
        if let Some(Err(reason)) = guarded("a pre-execute hook", || h(ctx)) {
            let f = Failure::new(FailureKind::Canceled, reason);
            for (_, h) in &hooks.post {
                guarded("a post-execute hook", || h(ctx, Some(&f)));
            }
            return Err(f);
        }
    }
    Ok(())
}

fn post_hooks(hooks: &Hooks, ctx: &TaskContext, outcome: &std::result::Result<Output, Failure>) {
    for (_, h) in &hooks.post {
        guarded("a post-execute hook", || h(ctx, outcome.as_ref().err()));
    }
}
