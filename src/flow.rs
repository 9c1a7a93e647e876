//! Workflows: pipelines (each stage gets the previous stage's result), groups (many calls in
//! one write, results gathered in order), chords (a group plus a callback that runs once with
//! every member's outcome) and map (a group of calls of one task). A member of a group or chord
//! may itself be a pipeline or a chord (see [`GroupMember`]).
//!
//! # Chords: counted with each member's outcome, fired exactly once
//!
//! Every member message carries its chord's id, its index, the chord's size and the callback.
//! When a member finishes for good (success, final failure, revoked, expired, dead-lettered),
//! its outcome batch — the one atomic write that acknowledges it — also counts it
//! ([`crate::storage::ChordCount`], decided in `lifecycle`): the storage keeps the
//! member's outcome, marks the member counted (a member that runs twice, e.g. after its lease
//! ran out, is counted once), and when the count reaches the size enqueues the callback with
//! every member's outcome in member order, in that same write. There is no window in which a
//! consumer that dies leaves the chord short or fires the callback twice. huey's chords count
//! in one process; these count in storage, across consumers.

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::message::{check_nesting, Message};
use crate::result::{StoredResult, TaskResult};
use crate::task::{Call, Task, TaskError};

/// One member's outcome: its result, or how it failed (also revoked, expired, canceled).
pub type Outcome<R> = std::result::Result<R, TaskError>;

/// What a chord callback receives: every member's outcome, in member order.
pub type Outcomes<R> = Vec<Outcome<R>>;

mod group;
mod pipeline_result;
mod result_group;
pub use group::{Chord, ChordResult, Group, GroupMember, Member};
pub use pipeline_result::PipelineResult;
pub use result_group::{AsCompleted, ResultGroup};

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })
}

/// The message of a later stage or callback: its task's defaults, its own arguments only (the
/// previous result is prepended when it is enqueued).
fn follow_up<A, R>(task: &Task<A, R>, extra: Vec<u8>) -> Message {
    Message::new(
        task.name.clone(),
        extra,
        task.options.to_message_options(crate::clock::now_ms()),
    )
}

// ----- pipelines -----------------------------------------------------------------------------

/// A chain of calls, each enqueued with the previous one's result when it succeeds. `R` is
/// the last stage's result type. A stage that fails for good, is revoked or expires stops the
/// chain (and runs the error handler, if any).
pub struct Pipeline<R> {
    app: Huey,
    stages: Vec<Message>,
    on_error: Option<Message>,
    broken: Option<Error>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Pipeline<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.stages.iter().map(|m| m.task.as_str()).collect();
        f.debug_struct("Pipeline").field("stages", &names).finish()
    }
}

impl<A: Serialize, R: DeserializeOwned> Call<A, R> {
    /// A pipeline of this call alone (add stages with [`Pipeline::then`]).
    pub fn pipeline(self) -> Pipeline<R> {
        let app = self.task.app.clone();
        let (stages, broken) = match self.to_message() {
            Ok(m) => (vec![m], None),
            Err(e) => (Vec::new(), Some(e)),
        };
        Pipeline {
            app,
            stages,
            on_error: None,
            broken,
            _r: PhantomData,
        }
    }

    /// Then run `next` with this call's result and `extra` (`next` takes `(R, E)`).
    pub fn then<E: Serialize, R2: DeserializeOwned>(
        self,
        next: &Task<(R, E), R2>,
        extra: E,
    ) -> Pipeline<R2> {
        self.pipeline().then(next, extra)
    }

    /// Then run `next` with this call's result alone (`next` takes `R`).
    pub fn then_with<R2: DeserializeOwned>(self, next: &Task<R, R2>) -> Pipeline<R2> {
        self.pipeline().then_with(next)
    }

    /// Run `handler` with the [`TaskError`] if this call fails for good.
    pub fn error<H>(self, handler: &Task<TaskError, H>) -> Pipeline<R> {
        self.pipeline().error(handler)
    }
}

impl<R> Pipeline<R> {
    fn push<R2>(mut self, msg: Result<Message>) -> Pipeline<R2> {
        match msg {
            Ok(m) => self.stages.push(m),
            Err(e) => self.broken = self.broken.or(Some(e)),
        }
        Pipeline {
            app: self.app,
            stages: self.stages,
            on_error: self.on_error,
            broken: self.broken,
            _r: PhantomData,
        }
    }

    /// Then run `next` with the last stage's result and `extra` (`next` takes `(R, E)`).
    pub fn then<E: Serialize, R2>(self, next: &Task<(R, E), R2>, extra: E) -> Pipeline<R2> {
        let msg = encode("task arguments", &extra).map(|b| follow_up(next, b));
        self.push(msg)
    }

    /// Then run `next` with the last stage's result alone (`next` takes `R`).
    pub fn then_with<R2>(self, next: &Task<R, R2>) -> Pipeline<R2> {
        self.push(Ok(follow_up(next, Vec::new())))
    }

    /// Run the last stage added this long after the stage before it succeeds (the first stage:
    /// this long after the pipeline is enqueued). Other stages keep their own timing.
    pub fn delay(mut self, delay: Duration) -> Pipeline<R> {
        let first = self.stages.len() == 1;
        if let Some(m) = self.stages.last_mut() {
            let ms = crate::clock::ms(delay);
            // A later stage's eta is kept relative until it is enqueued (see `lifecycle`).
            m.eta_ms = Some(if first {
                crate::clock::now_ms().saturating_add(ms)
            } else {
                ms
            });
        }
        self
    }

    /// Give the last stage added this priority (instead of its task's own).
    pub fn priority(mut self, priority: i32) -> Pipeline<R> {
        if let Some(m) = self.stages.last_mut() {
            m.options.priority = priority;
        }
        self
    }

    /// Run the last stage added on this queue (instead of its task's own).
    pub fn queue(mut self, queue: impl Into<String>) -> Pipeline<R> {
        if let Some(m) = self.stages.last_mut() {
            m.options.queue = queue.into();
        }
        self
    }

    /// Run `handler` with the [`TaskError`] of whichever stage fails for good (once: the
    /// chain stops there). Replaces an earlier handler.
    pub fn error<H>(mut self, handler: &Task<TaskError, H>) -> Pipeline<R> {
        self.on_error = Some(follow_up(handler, Vec::new()));
        self
    }

    /// How many stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether it has no stage (only when the first call's arguments could not be encoded).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The first stage's message, with every later stage nested as its continuation.
    pub fn to_message(&self) -> Result<Message> {
        if let Some(e) = &self.broken {
            return Err(Error::Encode {
                what: "pipeline",
                message: e.to_string(),
            });
        }
        // Each stage nests in the one before: refused before a value too deep is built.
        check_nesting("pipeline", self.stages.len())?;
        let mut next: Option<Box<Message>> = None;
        for stage in self.stages.iter().rev() {
            let mut m = stage.clone();
            m.on_complete = next.take();
            if let Some(h) = &self.on_error {
                m.on_error = Some(Box::new(h.clone()));
            }
            next = Some(Box::new(m));
        }
        next.map(|m| *m)
            .ok_or_else(|| Error::Config("a pipeline needs at least one stage".into()))
    }
}

impl<R: DeserializeOwned> Pipeline<R> {
    /// Enqueue the first stage (the rest follow as each one succeeds).
    pub fn enqueue(self) -> Result<PipelineResult<R>> {
        let app = self.app.clone();
        app.enqueue_pipeline(self)
    }
}

impl Huey {
    /// Enqueue a pipeline; returns a handle on every stage's result.
    pub fn enqueue_pipeline<R: DeserializeOwned>(
        &self,
        p: Pipeline<R>,
    ) -> Result<PipelineResult<R>> {
        let first = p.to_message()?;
        let stages: Vec<(String, String)> = p
            .stages
            .iter()
            .map(|m| (m.id.clone(), m.task.clone()))
            .collect();
        self.enqueue_messages(std::slice::from_ref(&first))?;
        let (last_id, _) = stages.last().cloned().expect("a pipeline has a stage");
        Ok(PipelineResult {
            app: self.clone(),
            stages,
            error_id: p.on_error.map(|m| m.id),
            last: TaskResult::new(self.clone(), last_id, None),
        })
    }
}
