//! `enqueue`: a registered task with JSON arguments, checked against the task's argument type
//! before anything is written; prints each new task id (`--id` chooses it). With `--unique`, a
//! duplicate of a pending task is not written: its id (the existing task's) is printed all the
//! same, stderr says it was a duplicate, and the exit status is [`crate::exit::DUPLICATE`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::values::{format_time, non_negative_seconds, parse_time, positive_seconds};
use super::{lookup, signature, Out};
use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::options::{Expires, TaskOptions};

/// Messages written per storage call by `enqueue --count`.
const ENQUEUE_BATCH: usize = 1000;

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// The registered task name.
    #[arg(required_unless_present = "command", conflicts_with = "command")]
    pub task: Option<String>,
    /// The arguments as JSON, decoded into the task's argument type (omitted: null, for `()`).
    /// A tuple is a JSON array, e.g. '[1, 2]'; a string is quoted, e.g. '"hello"'.
    pub args: Option<String>,
    /// Run no earlier than this many seconds from now.
    #[arg(long, value_parser = non_negative_seconds, conflicts_with = "eta")]
    pub delay: Option<Duration>,
    /// Run no earlier than this time: RFC 3339 (2026-11-26T10:00:00Z) or unix seconds.
    #[arg(long, value_parser = parse_time)]
    pub eta: Option<u64>,
    /// Priority (higher runs first); default: the task's.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Retries after a failure; default: the task's.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Seconds to wait before each retry; default: the task's.
    #[arg(long, value_parser = non_negative_seconds)]
    pub retry_delay: Option<Duration>,
    /// Longest one attempt may run, in seconds; default: the task's.
    #[arg(long, value_parser = positive_seconds)]
    pub timeout: Option<Duration>,
    /// Skip the task if it has not started within this many seconds.
    #[arg(long, value_parser = positive_seconds)]
    pub expires: Option<Duration>,
    /// The named queue; default: the task's.
    #[arg(long)]
    pub queue: Option<String>,
    /// Enqueue this many copies (each with its own id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// The task id (default: a new random one). At most 200 bytes, no control characters.
    #[arg(long, conflicts_with = "count")]
    pub id: Option<String>,
    /// Enqueue only if no task with this id is queued, scheduled or running (with `--id`;
    /// default: the task's). A duplicate is not written: the existing task's id is printed,
    /// stderr says it was a duplicate, and the exit status is 4.
    #[arg(long)]
    pub unique: bool,
    /// Print `{"task": ..., "ids": [...], "duplicates": [...], "eta": RFC 3339 or null}`
    /// instead of one id per line.
    #[arg(long)]
    pub json: bool,
    /// Enqueue the command task (`huey.command`): run the program given after `--` with its
    /// arguments. Consumers run it only with `--allow-commands`.
    #[arg(long, requires = "argv")]
    pub command: bool,
    /// With `--command`: the program and its arguments.
    #[arg(last = true, requires = "command")]
    pub argv: Vec<String>,
}

pub(super) fn run(app: &Huey, a: EnqueueArgs) -> Result<ExitCode> {
    let name = a.task.as_deref().unwrap_or(crate::command::TASK);
    let def = lookup(app, name)?;
    let json: Value = match &a.args {
        None if a.command => json!({"program": a.argv[0], "args": a.argv[1..]}),
        None => Value::Null,
        Some(text) => serde_json::from_str(text).map_err(|e| Error::BadArguments {
            task: def.name.clone(),
            message: format!("{text:?} is not JSON: {e}"),
        })?,
    };
    let args = def
        .handler
        .args_from_json(json)
        .map_err(|e| Error::BadArguments {
            task: def.name.clone(),
            message: format!("{e} (it takes {})", signature(&def).0),
        })?;
    let options = options(&a, def.options.clone())?;
    let eta_ms = match (a.delay, a.eta) {
        (Some(d), _) => Some(now_ms() + crate::clock::ms(d)),
        (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    if let Some(id) = &a.id {
        crate::message::check_id(id)?;
    }
    let mut out = Out::new();
    let mut ids = Vec::new();
    let mut duplicates = Vec::new();
    let mut left = a.count;
    while left > 0 {
        let n = left.min(ENQUEUE_BATCH as u64) as usize;
        let now = now_ms();
        let msg_options = options.to_message_options(now);
        let msgs: Vec<Message> = (0..n)
            .map(|_| {
                let mut m = Message::new(def.name.clone(), args.clone(), msg_options.clone());
                m.eta_ms = eta_ms;
                if let Some(id) = &a.id {
                    m.id = id.clone();
                }
                m
            })
            .collect();
        let written = app.enqueue_messages_unique(&msgs)?;
        for (m, w) in msgs.into_iter().zip(written) {
            if !w {
                eprintln!(
                    "duplicate: task {} is already queued, scheduled or running; not enqueued \
                     again (exit status {})",
                    m.id,
                    crate::exit::DUPLICATE
                );
                if !a.json {
                    // The existing task's id, as a unique call's handle reads that task.
                    out.line(m.id.clone());
                }
                duplicates.push(m.id);
            } else if a.json {
                ids.push(m.id);
            } else {
                out.line(m.id);
            }
        }
        left -= n as u64;
    }
    if a.json {
        out.json(&json!({
            "task": def.name,
            "ids": ids,
            "duplicates": duplicates,
            "eta": eta_ms.map(format_time),
        }));
    }
    if duplicates.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(crate::exit::DUPLICATE))
    }
}

/// The task's options with the flags given applied over them.
fn options(a: &EnqueueArgs, mut options: TaskOptions) -> Result<TaskOptions> {
    if let Some(p) = a.priority {
        options.priority = p;
    }
    if let Some(r) = a.retries {
        options.retries = r;
    }
    if let Some(d) = a.retry_delay {
        options.retry_delay = d;
    }
    if let Some(t) = a.timeout {
        options.timeout = Some(t);
    }
    if let Some(e) = a.expires {
        options.expires = Some(Expires::After(e));
    }
    if a.unique {
        options.unique = true;
    }
    if let Some(q) = &a.queue {
        if q.is_empty() {
            return Err(Error::Config("--queue must not be empty".into()));
        }
        options.queue = q.clone();
    }
    Ok(options)
}
