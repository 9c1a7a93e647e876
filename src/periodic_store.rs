//! Periodic schedules edited at run time (`hueyd periodic add/list/pause/resume/remove`, or
//! [`Huey::periodic`]), kept in the storage so every consumer sees them without a restart.
//!
//! Each schedule is one JSON entry in [`Ns::Data`] under `periodic:NAME`. Every change also
//! writes a new random value under `periodic-version`; a consumer's ticker reads that one key
//! each second and lists the schedules again only when it changed, so a change is picked up
//! within a second. The ticker runs a schedule exactly like a code-defined periodic task (one
//! claim per run and time, so several consumers enqueue it once between them). Its arguments
//! are kept as JSON and encoded with the task's argument type when it is enqueued; a run whose
//! arguments do not fit, or whose task this consumer does not know, goes to the dead letters
//! with the error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::Huey;
use crate::crontab::Crontab;
use crate::error::{Error, Result};
use crate::storage::Ns;

/// The prefix of the schedules' keys in [`Ns::Data`].
const KEY_PREFIX: &str = "periodic:";

/// The key whose value changes whenever a schedule does.
pub(crate) const VERSION_KEY: &str = "periodic-version";

/// A periodic schedule kept in the storage: run `task` with `args` at the times of `cron`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSchedule {
    /// The schedule's own name (several may run one task).
    pub name: String,
    /// The crontab expression (see [`crate::crontab`]).
    pub cron: String,
    /// The timezone the expression is evaluated in (UTC when `None`).
    #[serde(default)]
    pub tz: Option<String>,
    /// The task to run.
    pub task: String,
    /// Its arguments, as `hueyd enqueue` takes them.
    #[serde(default)]
    pub args: Value,
    /// Run on this queue instead of the task's own.
    #[serde(default)]
    pub queue: Option<String>,
    /// Run at this priority instead of the task's own.
    #[serde(default)]
    pub priority: Option<i32>,
    /// A paused schedule is kept but does not run.
    #[serde(default)]
    pub paused: bool,
}

impl RuntimeSchedule {
    /// A schedule running `task` with `args` at the times of `cron`.
    pub fn new(
        name: impl Into<String>,
        cron: impl Into<String>,
        task: impl Into<String>,
        args: Value,
    ) -> RuntimeSchedule {
        RuntimeSchedule {
            name: name.into(),
            cron: cron.into(),
            tz: None,
            task: task.into(),
            args,
            queue: None,
            priority: None,
            paused: false,
        }
    }

    /// Evaluate the expression in this timezone (e.g. `"Europe/Paris"`).
    pub fn tz(mut self, tz: impl Into<String>) -> RuntimeSchedule {
        self.tz = Some(tz.into());
        self
    }

    /// Run on this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> RuntimeSchedule {
        self.queue = Some(queue.into());
        self
    }

    /// Run at this priority.
    pub fn priority(mut self, priority: i32) -> RuntimeSchedule {
        self.priority = Some(priority);
        self
    }

    /// The parsed crontab, or an error naming the field that is wrong.
    pub fn crontab(&self) -> Result<Crontab> {
        match &self.tz {
            Some(tz) => Crontab::parse_in_zone(&self.cron, tz),
            None => Crontab::parse(&self.cron),
        }
    }

    /// The task's arguments encoded with its argument type (as the ticker does before each
    /// run), or why they cannot be.
    pub(crate) fn encoded_args(&self, app: &Huey) -> Result<Vec<u8>> {
        let def = app.task_def(&self.task).ok_or_else(|| {
            Error::Config(format!(
                "no task named {:?} is registered in this app",
                self.task
            ))
        })?;
        def.handler
            .args_from_json(self.args.clone())
            .map_err(|message| Error::BadArguments {
                task: self.task.clone(),
                message,
            })
    }
}

/// The schedules of an app's storage: `app.periodic().add(RuntimeSchedule::new(...))`.
#[derive(Debug, Clone)]
pub struct RuntimeSchedules {
    app: Huey,
}

impl RuntimeSchedules {
    /// Add a schedule. Refused (with nothing written) when its name is empty, taken or holds a
    /// control character, its expression or timezone is wrong (the error names the field), its
    /// task is not registered in this app, or its arguments do not fit the task's argument
    /// type or are larger encoded than [`Huey::max_message_bytes`].
    pub fn add(&self, s: RuntimeSchedule) -> Result<()> {
        if s.name.is_empty() {
            return Err(Error::Config("a schedule needs a name".into()));
        }
        // The name is printed one schedule a line (`hueyd periodic list`) and typed back to
        // pause or remove it.
        if s.name.chars().any(char::is_control) {
            return Err(Error::Config(format!(
                "the schedule name {:?} contains a control character",
                s.name
            )));
        }
        s.crontab()?;
        if self.app.task_def(&s.task).is_none() {
            let known: Vec<String> = self
                .app
                .task_defs()
                .iter()
                .map(|d| d.name.clone())
                .collect();
            return Err(Error::Config(format!(
                "no task named {:?} is registered in this app; known tasks: {}",
                s.task,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        // Each run is a message carrying these arguments: one over the app's limit could never
        // be enqueued.
        let args = s.encoded_args(&self.app)?;
        let limit = self.app.max_message_bytes();
        if args.len() > limit {
            return Err(Error::Encode {
                what: "a periodic schedule's arguments",
                message: format!(
                    "{} bytes encoded, over the message limit of {limit} bytes",
                    args.len()
                ),
            });
        }
        let value = encode(&s)?;
        if !self
            .app
            .storage()
            .put_if_empty(Ns::Data, &key(&s.name), &value, None)?
        {
            return Err(Error::Config(format!(
                "a schedule named {:?} exists already (remove it first)",
                s.name
            )));
        }
        self.changed()
    }

    /// Every schedule, by name.
    pub fn list(&self) -> Result<Vec<RuntimeSchedule>> {
        let mut out = Vec::new();
        for (k, v) in self.app.storage().list(Ns::Data)? {
            if !k.starts_with(KEY_PREFIX) {
                continue;
            }
            match serde_json::from_slice::<RuntimeSchedule>(&v) {
                Ok(s) => out.push(s),
                Err(e) => tracing::error!(key = %k, "unreadable periodic schedule: {e}"),
            }
        }
        Ok(out)
    }

    /// One schedule by name.
    pub fn get(&self, name: &str) -> Result<Option<RuntimeSchedule>> {
        match self.app.storage().get(Ns::Data, &key(name))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::Config(format!("the schedule {name:?} is unreadable: {e}"))),
        }
    }

    /// Stop running a schedule (kept until removed).
    pub fn pause(&self, name: &str) -> Result<()> {
        self.set_paused(name, true)
    }

    /// Run a paused schedule again.
    pub fn resume(&self, name: &str) -> Result<()> {
        self.set_paused(name, false)
    }

    /// Delete a schedule; an error when there is none of that name.
    pub fn remove(&self, name: &str) -> Result<()> {
        if self.app.storage().take(Ns::Data, &key(name))?.is_none() {
            return Err(no_such(name));
        }
        self.changed()
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let mut s = self.get(name)?.ok_or_else(|| no_such(name))?;
        s.paused = paused;
        self.app
            .storage()
            .put(Ns::Data, &key(name), &encode(&s)?, None)?;
        self.changed()
    }

    fn changed(&self) -> Result<()> {
        let v = crate::message::new_id();
        self.app
            .storage()
            .put(Ns::Data, VERSION_KEY, v.as_bytes(), None)
    }
}

fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

fn encode(s: &RuntimeSchedule) -> Result<Vec<u8>> {
    serde_json::to_vec(s).map_err(|e| Error::Encode {
        what: "a periodic schedule",
        message: e.to_string(),
    })
}

fn no_such(name: &str) -> Error {
    Error::Config(format!("no periodic schedule named {name:?}"))
}

impl Huey {
    /// The periodic schedules kept in the storage, editable while consumers run (see
    /// [`crate::periodic_store`]).
    pub fn periodic(&self) -> RuntimeSchedules {
        RuntimeSchedules { app: self.clone() }
    }
}
