//! `periodic`: the periodic schedules kept in the storage (see [`crate::periodic_store`]):
//! `add NAME CRON TASK ARGS [--tz ZONE] [--queue Q] [--priority P]`, `list`, `pause NAME`,
//! `resume NAME`, `remove NAME`. Running consumers pick a change up within a second.
//!
//! `list --json` prints one array of objects: `name`, `cron`, `tz`, `task`, `args`, `queue`,
//! `priority`, `paused`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::{lookup, signature, Out};
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::periodic_store::RuntimeSchedule;

#[derive(Args, Debug)]
pub struct PeriodicArgs {
    #[command(subcommand)]
    pub command: PeriodicCommand,
}

#[derive(Subcommand, Debug)]
pub enum PeriodicCommand {
    /// Add a schedule: run TASK with the JSON arguments ARGS at the times of CRON.
    Add {
        /// The schedule's name.
        name: String,
        /// A crontab expression (five fields, or six with seconds first; `@daily`...).
        cron: String,
        /// The registered task to run.
        task: String,
        /// Its arguments as JSON (`null` for none).
        #[arg(default_value = "null")]
        args: String,
        /// Evaluate CRON in this timezone (e.g. Europe/Paris); UTC by default.
        #[arg(long)]
        tz: Option<String>,
        /// Run on this queue instead of the task's own.
        #[arg(long)]
        queue: Option<String>,
        /// Run at this priority instead of the task's own.
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
    },
    /// The schedules, by name.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Stop running a schedule (it is kept).
    Pause { name: String },
    /// Run a paused schedule again.
    Resume { name: String },
    /// Delete a schedule.
    Remove { name: String },
}

pub(super) fn run(app: &Huey, a: PeriodicArgs) -> Result<ExitCode> {
    let schedules = app.periodic();
    match a.command {
        PeriodicCommand::Add {
            name,
            cron,
            task,
            args,
            tz,
            queue,
            priority,
        } => {
            let def = lookup(app, &task)?;
            let json: Value = serde_json::from_str(&args).map_err(|e| Error::BadArguments {
                task: task.clone(),
                message: format!("{args:?} is not JSON: {e}"),
            })?;
            let mut s = RuntimeSchedule::new(name, cron, task, json);
            s.tz = tz;
            s.queue = queue;
            s.priority = priority;
            schedules.add(s).map_err(|e| match e {
                Error::BadArguments { task, message } => Error::BadArguments {
                    task,
                    message: format!("{message} (it takes {})", signature(&def).0),
                },
                e => e,
            })?;
        }
        PeriodicCommand::List { json } => {
            let list = schedules.list()?;
            let mut out = Out::new();
            if json {
                out.json(&serde_json::to_value(&list).unwrap_or_default());
            } else {
                for s in &list {
                    out.line(schedule_line(s));
                }
            }
        }
        PeriodicCommand::Pause { name } => schedules.pause(&name)?,
        PeriodicCommand::Resume { name } => schedules.resume(&name)?,
        PeriodicCommand::Remove { name } => schedules.remove(&name)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One schedule on one line.
pub(super) fn schedule_line(s: &RuntimeSchedule) -> String {
    let mut line = format!("{}  {}({})  periodic: {}", s.name, s.task, s.args, s.cron);
    if let Some(tz) = &s.tz {
        line.push_str(&format!(" ({tz})"));
    }
    if let Some(q) = &s.queue {
        line.push_str(&format!(" queue={q}"));
    }
    if let Some(p) = s.priority {
        line.push_str(&format!(" priority={p}"));
    }
    if s.paused {
        line.push_str("  paused");
    }
    line
}
