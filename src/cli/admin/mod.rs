//! Admin subcommands, one module each: enqueue, result, status, revoke/restore, flush, tasks,
//! pending and scheduled listings, dead letters, consumers, inspect, periodic schedules, locks, cron. Here: the subcommand list and what the
//! commands share (task lookup, message summaries, output).
//!
//! Every command that prints data takes `--json` for a machine-readable form (one JSON value
//! per line). Exit status ([`crate::exit`]): 0 success, 1 a failure at run time (or, for
//! `result`, a task that failed), 2 bad input (unknown task, arguments that do not fit, bad
//! times, unknown keys...), 3 a result not ready.
//!
//! `result` prints the value as JSON (decoded with the task's result type); for a task that
//! failed it prints `{"id", "task", "attempt", "kind", "message"}` and exits 1. With `--json`
//! it prints `{"id", "status": "ok", "task", "value"}`, `{"id", "status": "error", "task",
//! "error": {...}}` or `{"id", "status": "pending"}`. A stored result names the task that
//! returned it, whose result type decodes it (`--task` overrides). Should that task no longer
//! be registered, every registered result type is tried, and when they disagree the command
//! prints `{"status": "ambiguous", "candidates": {task: value}, "bytes": [...]}`, exits 2 and
//! leaves the result in storage.

mod consumers;
pub(crate) mod cron;
mod dead;
mod enqueue;
mod flush;
mod inspect;
mod locks;
mod pending;
mod periodic;
mod restore;
mod result;
mod results;
mod revoke;
mod scheduled;
mod status;
mod tasks;
mod values;

use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::app::Huey;
use crate::app::TaskDef;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::task::TaskError;
use values::format_time;

/// The admin subcommands, public so that an app can embed them in its own clap command
/// (`#[command(subcommand)]` or `#[command(flatten)]` into its own subcommand enum) and run
/// them with [`crate::cli::Cli::admin`].
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Enqueue a registered task with JSON arguments; prints each new task id.
    Enqueue(enqueue::EnqueueArgs),
    /// Read a task's result (exit 1 if the task failed, 3 if there is no result yet).
    Result(result::ResultArgs),
    /// List stored results and final errors by id, a page at a time, without consuming them.
    Results(results::ResultsArgs),
    /// Counts of ready, scheduled, in-flight, results and dead-letter messages, revocations
    /// and locks, and the registered tasks.
    Status(status::StatusArgs),
    /// Revoke a task instance by id, or every instance of a task by name.
    Revoke(revoke::RevokeArgs),
    /// Undo a revocation by id or by task name.
    Restore(restore::RestoreArgs),
    /// Empty parts of the storage.
    Flush(flush::FlushArgs),
    /// The registered tasks and their options.
    Tasks(tasks::TasksArgs),
    /// Ready messages in the order they would run.
    Pending(ListArgs),
    /// Scheduled messages by eta.
    Scheduled(ListArgs),
    /// List dead-letter messages, or put them back on the queue (`dead retry`).
    Dead(dead::DeadArgs),
    /// The live consumers (from their heartbeats) and what each worker runs.
    Consumers(consumers::ConsumersArgs),
    /// Where a task is by id: queued, scheduled, running, done, failed, dead-lettered...
    Inspect(inspect::InspectArgs),
    /// Periodic schedules kept in the storage: add, list, pause, resume, remove.
    Periodic(periodic::PeriodicArgs),
    /// The locks held now and the semaphores with permits held.
    Locks(locks::LocksArgs),
    /// Check a crontab expression and print its next run times (needs no storage).
    Cron(cron::CronArgs),
}

impl AdminCommand {
    /// The command's name when it only reads the storage, or changes only what must be in it
    /// already (a periodic schedule to pause, resume or remove), so must not create one.
    /// `tasks` and `cron` do not use the storage at all.
    pub(crate) fn reads_only(&self) -> Option<&'static str> {
        Some(match self {
            AdminCommand::Result(_) => "result",
            AdminCommand::Status(_) => "status",
            AdminCommand::Pending(_) => "pending",
            AdminCommand::Scheduled(_) => "scheduled",
            AdminCommand::Dead(_) => "dead",
            AdminCommand::Consumers(_) => "consumers",
            AdminCommand::Inspect(_) => "inspect",
            AdminCommand::Results(_) => "results",
            AdminCommand::Locks(_) => "locks",
            AdminCommand::Periodic(p) => match p.command {
                periodic::PeriodicCommand::Add { .. } => return None,
                periodic::PeriodicCommand::List { .. } => "periodic list",
                periodic::PeriodicCommand::Pause { .. } => "periodic pause",
                periodic::PeriodicCommand::Resume { .. } => "periodic resume",
                periodic::PeriodicCommand::Remove { .. } => "periodic remove",
            },
            AdminCommand::Enqueue(_)
            | AdminCommand::Revoke(_)
            | AdminCommand::Restore(_)
            | AdminCommand::Flush(_)
            | AdminCommand::Tasks(_)
            | AdminCommand::Cron(_) => return None,
        })
    }
}

/// Run one admin command.
pub fn run(app: &Huey, cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Enqueue(a) => enqueue::run(app, a),
        AdminCommand::Result(a) => result::run(app, a),
        AdminCommand::Results(a) => results::run(app, a),
        AdminCommand::Status(a) => status::run(app, a),
        AdminCommand::Revoke(a) => revoke::run(app, a),
        AdminCommand::Restore(a) => restore::run(app, a),
        AdminCommand::Flush(a) => flush::run(app, a),
        AdminCommand::Tasks(a) => tasks::run(app, a),
        AdminCommand::Pending(a) => pending::run(app, a),
        AdminCommand::Scheduled(a) => scheduled::run(app, a),
        AdminCommand::Dead(a) => dead::run(app, a),
        AdminCommand::Consumers(a) => consumers::run(app, a),
        AdminCommand::Inspect(a) => inspect::run(app, a),
        AdminCommand::Periodic(a) => periodic::run(app, a),
        AdminCommand::Locks(a) => locks::run(app, a),
        AdminCommand::Cron(a) => cron::run(a),
    }
}

/// The flags of the message listings (`pending`, `scheduled`).
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

// ----- output ---------------------------------------------------------------------------

/// Write lines to stdout; a closed pipe (`hueyd pending | head`) is not an error.
struct Out(BufWriter<std::io::Stdout>);

impl Out {
    fn new() -> Out {
        Out(BufWriter::new(std::io::stdout()))
    }
    fn line(&mut self, s: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{s}");
    }
    fn json(&mut self, v: &Value) {
        self.line(v);
    }
    /// Clear a terminal and home its cursor (`status --watch`).
    fn clear_screen(&mut self) {
        let _ = write!(self.0, "\x1b[2J\x1b[H");
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

fn note(s: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{s}");
}

// ----- helpers --------------------------------------------------------------------------

/// A registered task, or an error (exit 2) that lists the known ones.
fn lookup(app: &Huey, name: &str) -> Result<std::sync::Arc<TaskDef>> {
    app.task_def(name).ok_or_else(|| {
        let known: Vec<String> = app.task_defs().iter().map(|d| d.name.clone()).collect();
        Error::Config(format!(
            "no task named {name:?} is registered in this app; known tasks: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// A Rust type name without module paths: `Option<alloc::string::String>` → `Option<String>`.
fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(token.rsplit("::").next().unwrap_or(""));
        token.clear();
    };
    for ch in name.chars() {
        if ch.is_alphanumeric() || ch == '_' || ch == ':' {
            token.push(ch);
        } else {
            flush(&mut token, &mut out);
            out.push(ch);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// A task's argument and result types, as short names.
fn signature(d: &TaskDef) -> (String, String) {
    let (a, r) = d.handler.signature();
    (short_type_name(a), short_type_name(r))
}

fn duration_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn task_error_json(e: &TaskError) -> Value {
    json!({
        "id": e.id,
        "task": e.task,
        "attempt": e.attempt,
        "kind": e.kind.as_str(),
        "message": e.message,
    })
}

/// A message summary for listings; undecodable payloads give what is known.
fn message_json(app: &Huey, payload: &[u8]) -> Value {
    match Message::decode(payload) {
        Ok(m) => {
            let args = app
                .task_def(&m.task)
                .and_then(|d| d.handler.args_to_json(&m.args).ok());
            json!({
                "id": m.id,
                "task": m.task,
                "queue": m.queue(),
                "priority": m.priority(),
                "attempt": m.attempt,
                "args": args,
                "eta": m.eta_ms.map(format_time),
                "enqueued_at": format_time(m.enqueued_ms),
            })
        }
        Err(e) => json!({ "undecodable": e.to_string(), "bytes": payload.len() }),
    }
}

/// Print message summaries: one JSON array, or one line each.
fn print_messages(items: Vec<Value>, as_json: bool) {
    let mut out = Out::new();
    if as_json {
        out.json(&Value::Array(items));
        return;
    }
    for v in items {
        if let Some(e) = v.get("undecodable") {
            // The error says "undecodable message: …" itself.
            out.line(format!("({})", e.as_str().unwrap_or("")));
            continue;
        }
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let mut line = format!(
            "{}  {}({})  queue={} priority={}",
            s("id"),
            s("task"),
            if v["args"].is_null() {
                "?".to_string()
            } else {
                v["args"].to_string()
            },
            s("queue"),
            v["priority"]
        );
        if let Some(eta) = v["eta"].as_str() {
            line.push_str(&format!(" eta={eta}"));
        }
        out.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_type_name("core::option::Option<alloc::string::String>"),
            "Option<String>"
        );
        assert_eq!(
            short_type_name("(alloc::string::String, u32)"),
            "(String, u32)"
        );
        assert_eq!(short_type_name("()"), "()");
    }
}
