//! Admin subcommands: enqueue, result, status, revoke/restore, flush, tasks, pending and
//! scheduled listings, dead letters.
//!
//! Every command that prints data takes `--json` for a machine-readable form (one JSON value
//! per line). Exit status: 0 success, 1 a failure at run time (or, for `result`, a task that
//! failed), 2 bad input (unknown task, arguments that do not fit, bad times, unknown keys...),
//! 3 a result not ready.
//!
//! The `status --json` object is stable: `app` (string), `storage` (backend name), the integer
//! counts `ready`, `scheduled`, `in_flight`, `results`, `dead`, `revoked`, `locks`, and
//! `tasks` (the registered task names, sorted).
//!
//! `result` prints the value as JSON (decoded with the task's result type); for a task that
//! failed it prints `{"id", "task", "attempt", "kind", "message"}` and exits 1. With `--json`
//! it prints `{"id", "status": "ok", "task", "value"}`, `{"id", "status": "error", "task",
//! "error": {...}}` or `{"id", "status": "pending"}`. A stored result names the task that
//! returned it, whose result type decodes it (`--task` overrides). Should that task no longer
//! be registered, every registered result type is tried, and when they disagree the command
//! prints `{"status": "ambiguous", "candidates": {task: value}, "bytes": [...]}`, exits 2 and
//! leaves the result in storage. Results are read first and deleted only once printed (unless
//! `--preserve`), so a result that cannot be shown is never lost.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use crate::app::{Huey, Revoke};
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::registry::TaskDef;
use crate::result::StoredResult;
use crate::storage::{Flush, Ns};
use crate::task::{Expires, TaskError};

/// Exit status of `result` when there is no result (yet).
pub const EXIT_NOT_READY: u8 = 3;

/// Messages written per storage call by `enqueue --count`.
const ENQUEUE_BATCH: usize = 1000;

/// The admin subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Enqueue a registered task with JSON arguments; prints each new task id.
    Enqueue(EnqueueArgs),
    /// Read a task's result (exit 1 if the task failed, 3 if there is no result yet).
    Result(ResultArgs),
    /// Counts of ready, scheduled, in-flight, results and dead-letter messages, revocations
    /// and locks, and the registered tasks.
    Status(StatusArgs),
    /// Revoke a task instance by id, or every instance of a task by name.
    Revoke(RevokeArgs),
    /// Undo a revocation by id or by task name.
    Restore(RestoreArgs),
    /// Empty parts of the storage.
    Flush(FlushArgs),
    /// The registered tasks and their options.
    Tasks(JsonArgs),
    /// Ready messages in the order they would run.
    Pending(ListArgs),
    /// Scheduled messages by eta.
    Scheduled(ListArgs),
    /// List dead-letter messages, or put them back on the queue (`dead retry`).
    Dead(DeadArgs),
}

#[derive(Args, Debug)]
pub struct EnqueueArgs {
    /// The registered task name.
    pub task: String,
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
    /// Print `{"task": ..., "ids": [...], "eta": RFC 3339 or null}` instead of one id per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ResultArgs {
    /// The task id.
    pub id: String,
    /// Wait up to this many seconds for the result.
    #[arg(long, value_parser = non_negative_seconds)]
    pub wait: Option<Duration>,
    /// Leave the result in storage (reads remove it by default).
    #[arg(long)]
    pub preserve: bool,
    /// The task the id belongs to, to decode its result type. Without it every registered
    /// task's result type is tried; when several decode the bytes to different values the
    /// command exits 2 and leaves the result in storage.
    #[arg(long)]
    pub task: Option<String>,
    /// Print one JSON object with the status, the task and the value or error.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print a JSON object (one per line with --watch).
    #[arg(long)]
    pub json: bool,
    /// Refresh every interval until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: stop after this many refreshes.
    #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// With --watch: seconds between refreshes.
    #[arg(long, requires = "watch", default_value = "1", value_parser = positive_seconds)]
    pub interval: Duration,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "task"])))]
pub struct RevokeArgs {
    /// The task id to revoke.
    pub id: Option<String>,
    /// Revoke every instance of this registered task instead.
    #[arg(long)]
    pub task: Option<String>,
    /// Only the next time it would run.
    #[arg(long)]
    pub once: bool,
    /// Only until this time: RFC 3339 or unix seconds.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "task"])))]
pub struct RestoreArgs {
    /// The task id to restore.
    pub id: Option<String>,
    /// Restore a task revoked by name instead.
    #[arg(long)]
    pub task: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// The ready queue, in-flight messages included.
    #[arg(long)]
    pub queue: bool,
    /// The schedule.
    #[arg(long)]
    pub schedule: bool,
    /// Stored results and errors.
    #[arg(long)]
    pub results: bool,
    /// Task locks.
    #[arg(long)]
    pub locks: bool,
    /// The dead-letter place.
    #[arg(long)]
    pub dead: bool,
    /// Revocations, periodic-run claims and app data.
    #[arg(long)]
    pub kv: bool,
    /// Everything above.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct DeadArgs {
    #[command(subcommand)]
    pub action: Option<DeadAction>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// At most this many entries, oldest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Subcommand, Debug)]
pub enum DeadAction {
    /// Put dead-letter entries back on the ready queue; prints how many.
    Retry(DeadRetryArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["keys", "all"])))]
pub struct DeadRetryArgs {
    /// Keys as listed by `hueyd dead`.
    pub keys: Vec<String>,
    /// Every dead-letter entry.
    #[arg(long)]
    pub all: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

// ----- value parsers --------------------------------------------------------------------

fn secs(s: &str, allow_zero: bool) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let ok = v.is_finite() && v < 1e10 && if allow_zero { v >= 0.0 } else { v > 0.0 };
    if !ok {
        let what = if allow_zero {
            "zero or more"
        } else {
            "a positive number of"
        };
        return Err(format!("{s} must be {what} seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn non_negative_seconds(s: &str) -> std::result::Result<Duration, String> {
    secs(s, true)
}

fn positive_seconds(s: &str) -> std::result::Result<Duration, String> {
    secs(s, false)
}

/// A time as ms since the epoch: RFC 3339 (`2026-11-26T10:00:00Z`) or unix seconds.
pub fn parse_time(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        if v.is_finite() && (0.0..1e11).contains(&v) {
            return Ok((v * 1000.0).round() as u64);
        }
        return Err(format!("{s} is not a unix time in seconds"));
    }
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) if t.timestamp_millis() >= 0 => Ok(t.timestamp_millis() as u64),
        Ok(_) => Err(format!("{s} is before 1970")),
        Err(e) => Err(format!(
            "{s:?} is not a time ({e}); use RFC 3339 (2026-11-26T10:00:00Z) or unix seconds"
        )),
    }
}

/// A time in ms since the epoch as RFC 3339 (UTC, milliseconds).
pub fn format_time(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
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
pub fn short_type_name(name: &str) -> String {
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

// ----- the commands ---------------------------------------------------------------------

/// Run one admin command.
pub fn run(app: &Huey, cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Enqueue(a) => enqueue(app, a),
        AdminCommand::Result(a) => result(app, a),
        AdminCommand::Status(a) => status(app, a),
        AdminCommand::Revoke(a) => revoke(app, a),
        AdminCommand::Restore(a) => restore(app, a),
        AdminCommand::Flush(a) => flush(app, a),
        AdminCommand::Tasks(a) => tasks(app, a),
        AdminCommand::Pending(a) => pending(app, a),
        AdminCommand::Scheduled(a) => scheduled(app, a),
        AdminCommand::Dead(a) => dead(app, a),
    }
}

fn enqueue(app: &Huey, a: EnqueueArgs) -> Result<ExitCode> {
    let def = lookup(app, &a.task)?;
    let json: Value = match &a.args {
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
    let mut options = def.options.clone();
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
    if let Some(q) = &a.queue {
        if q.is_empty() {
            return Err(Error::Config("--queue must not be empty".into()));
        }
        options.queue = q.clone();
    }
    let eta_ms = match (a.delay, a.eta) {
        (Some(d), _) => Some(now_ms() + crate::clock::ms(d)),
        (None, Some(t)) => Some(t),
        (None, None) => None,
    };
    let mut out = Out::new();
    let mut ids = Vec::new();
    let mut left = a.count;
    while left > 0 {
        let n = left.min(ENQUEUE_BATCH as u64) as usize;
        let now = now_ms();
        let msg_options = options.to_message_options(now);
        let msgs: Vec<Message> = (0..n)
            .map(|_| {
                let mut m = Message::new(def.name.clone(), args.clone(), msg_options.clone());
                m.eta_ms = eta_ms;
                m
            })
            .collect();
        app.enqueue_messages(&msgs)?;
        for m in msgs {
            if a.json {
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
            "eta": eta_ms.map(format_time),
        }));
    }
    Ok(ExitCode::SUCCESS)
}

/// How the bytes of a successful result read as JSON.
enum Decoded {
    One { task: Option<String>, value: Value },
    Ambiguous(Vec<(String, Value)>),
    None,
}

fn decode_result(app: &Huey, task: Option<&TaskDef>, bytes: &[u8]) -> Result<Decoded> {
    if let Some(def) = task {
        let value = def.handler.result_to_json(bytes).map_err(|e| {
            Error::Config(format!(
                "the result does not decode as the result type of task {:?} ({}): {e}",
                def.name,
                signature(def).1
            ))
        })?;
        return Ok(Decoded::One {
            task: Some(def.name.clone()),
            value,
        });
    }
    let fits: Vec<(String, Value)> = app
        .task_defs()
        .iter()
        .filter_map(|d| {
            d.handler
                .result_to_json(bytes)
                .ok()
                .map(|v| (d.name.clone(), v))
        })
        .collect();
    Ok(match fits.as_slice() {
        [] => Decoded::None,
        [(name, v)] => Decoded::One {
            task: Some(name.clone()),
            value: v.clone(),
        },
        [(_, first), rest @ ..] if rest.iter().all(|(_, v)| v == first) => Decoded::One {
            task: None,
            value: first.clone(),
        },
        _ => Decoded::Ambiguous(fits),
    })
}

fn result(app: &Huey, a: ResultArgs) -> Result<ExitCode> {
    let def = a.task.as_deref().map(|t| lookup(app, t)).transpose()?;
    let storage = app.storage();
    // Read without taking, and delete only once the result has been decoded and printed, so a
    // result that cannot be shown is not lost.
    let bytes = match a.wait {
        Some(t) if !t.is_zero() => storage.wait_result(&a.id, false, t)?,
        _ => storage.result(&a.id, false)?,
    };
    let mut out = Out::new();
    let Some(bytes) = bytes else {
        if a.json {
            out.json(&json!({ "id": a.id, "status": "pending" }));
        }
        note(format!(
            "no result for {} (not finished, unknown, already read, or expired)",
            a.id
        ));
        return Ok(ExitCode::from(EXIT_NOT_READY));
    };
    let consume = |storage: &dyn crate::storage::Storage| -> Result<()> {
        if !a.preserve {
            storage.delete_result(&a.id)?;
        }
        Ok(())
    };
    match StoredResult::decode(&bytes)? {
        StoredResult::Err(e) => {
            if a.json {
                out.json(&json!({
                    "id": a.id,
                    "status": "error",
                    "task": e.task,
                    "error": task_error_json(&e),
                }));
            } else {
                out.json(&task_error_json(&e));
            }
            drop(out);
            consume(&*storage)?;
            note(format!("error: {e}"));
            Ok(ExitCode::from(1))
        }
        StoredResult::Ok { task, value } => {
            // The stored task name decides, unless --task overrides it; an unregistered name
            // falls back to trying every registered decoder.
            let def = def.or_else(|| app.task_def(&task));
            match decode_result(app, def.as_deref(), &value)? {
                Decoded::One { task, value } => {
                    if a.json {
                        out.json(&json!({
                            "id": a.id, "status": "ok", "task": task, "value": value,
                        }));
                    } else {
                        out.json(&value);
                    }
                    drop(out);
                    consume(&*storage)?;
                    Ok(ExitCode::SUCCESS)
                }
                Decoded::Ambiguous(fits) => {
                    let candidates: serde_json::Map<String, Value> = fits.into_iter().collect();
                    out.json(&json!({
                        "id": a.id,
                        "status": "ambiguous",
                        "candidates": candidates,
                        "bytes": value,
                    }));
                    drop(out);
                    note(format!(
                    "the result of {} decodes differently as the result of several tasks ({}); \
                     pass --task NAME (the result was left in storage)",
                    a.id,
                    candidates.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                    Ok(ExitCode::from(crate::cli::EXIT_USAGE))
                }
                Decoded::None => {
                    out.json(&json!({ "id": a.id, "status": "undecodable", "bytes": value }));
                    drop(out);
                    note(format!(
                        "the result of {} does not decode as the result of any registered task \
                     (the result was left in storage)",
                        a.id
                    ));
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// The `status --json` object.
pub fn status_json(app: &Huey) -> Result<Value> {
    let storage = app.storage();
    let c = storage.counts()?;
    let revoked = storage.list(Ns::Revoked)?.len();
    let locks = storage.list(Ns::Locks)?.len();
    let tasks: Vec<String> = app.task_defs().iter().map(|d| d.name.clone()).collect();
    Ok(json!({
        "app": app.name(),
        "storage": storage.backend(),
        "ready": c.ready,
        "scheduled": c.scheduled,
        "in_flight": c.in_flight,
        "results": c.results,
        "dead": c.dead,
        "revoked": revoked,
        "locks": locks,
        "tasks": tasks,
    }))
}

fn status_text(v: &Value) -> String {
    let mut s = String::new();
    let field = |k: &str| v[k].to_string().trim_matches('"').to_string();
    s.push_str(&format!("app        {}\n", field("app")));
    s.push_str(&format!("storage    {}\n", field("storage")));
    for (label, key) in [
        ("ready", "ready"),
        ("scheduled", "scheduled"),
        ("in flight", "in_flight"),
        ("results", "results"),
        ("dead", "dead"),
        ("revoked", "revoked"),
        ("locks", "locks"),
    ] {
        s.push_str(&format!("{label:<10} {}\n", field(key)));
    }
    let tasks: Vec<&str> = v["tasks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    s.push_str(&format!(
        "tasks      {} ({})",
        tasks.len(),
        tasks.join(", ")
    ));
    s
}

fn status(app: &Huey, a: StatusArgs) -> Result<ExitCode> {
    let clear = a.watch && !a.json && std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        let v = status_json(app)?;
        {
            let mut out = Out::new();
            if clear {
                let _ = write!(out.0, "\x1b[2J\x1b[H");
            }
            if a.json {
                out.json(&v);
            } else {
                out.line(status_text(&v));
                if a.watch && !clear {
                    out.line("");
                }
            }
        }
        n += 1;
        if !a.watch || a.count.is_some_and(|c| n >= c) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(a.interval);
    }
}

fn revoke(app: &Huey, a: RevokeArgs) -> Result<ExitCode> {
    let how = Revoke {
        once: a.once,
        until_ms: a.until,
    };
    let (target, value) = match (&a.id, &a.task) {
        (_, Some(task)) => {
            lookup(app, task)?;
            app.revoke_task(task, how)?;
            ("task", task.clone())
        }
        (Some(id), None) => {
            app.revoke_id(id, how)?;
            ("id", id.clone())
        }
        (None, None) => unreachable!("clap requires an id or --task"),
    };
    let mut out = Out::new();
    if a.json {
        out.json(&json!({
            "action": "revoke",
            target: value,
            "once": how.once,
            "until": how.until_ms.map(format_time),
        }));
    } else {
        let mut line = format!("revoked {target} {value}");
        if how.once {
            line.push_str(" for its next run only");
        }
        if let Some(u) = how.until_ms {
            line.push_str(&format!(" until {}", format_time(u)));
        }
        out.line(line);
    }
    Ok(ExitCode::SUCCESS)
}

fn restore(app: &Huey, a: RestoreArgs) -> Result<ExitCode> {
    let (target, value, restored) = match (&a.id, &a.task) {
        (_, Some(task)) => ("task", task.clone(), app.restore_task(task)?),
        (Some(id), None) => ("id", id.clone(), app.restore_id(id)?),
        (None, None) => unreachable!("clap requires an id or --task"),
    };
    let mut out = Out::new();
    if a.json {
        out.json(&json!({ "action": "restore", target: value, "restored": restored }));
    } else if restored {
        out.line(format!("restored {target} {value}"));
    } else {
        out.line(format!("{target} {value} was not revoked: nothing to do"));
    }
    Ok(ExitCode::SUCCESS)
}

fn flush(app: &Huey, a: FlushArgs) -> Result<ExitCode> {
    let what = if a.all {
        Flush::all()
    } else {
        Flush {
            queue: a.queue,
            schedule: a.schedule,
            results: a.results,
            locks: a.locks,
            dead: a.dead,
            kv: a.kv,
        }
    };
    let parts: Vec<&str> = [
        (what.queue, "queue"),
        (what.schedule, "schedule"),
        (what.results, "results"),
        (what.locks, "locks"),
        (what.dead, "dead"),
        (what.kv, "kv"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if parts.is_empty() {
        return Err(Error::Config(
            "choose what to flush: --queue, --schedule, --results, --locks, --dead, --kv, or --all"
                .into(),
        ));
    }
    app.storage().flush(what)?;
    Out::new().line(format!("flushed {}", parts.join(", ")));
    Ok(ExitCode::SUCCESS)
}

fn task_json(d: &TaskDef) -> Value {
    let (args, result) = signature(d);
    let o = &d.options;
    json!({
        "name": d.name,
        "args": args,
        "result": result,
        "queue": o.queue,
        "priority": o.priority,
        "retries": o.retries,
        "retry_delay": duration_secs(o.retry_delay),
        "retry_backoff": o.retry_backoff,
        "timeout": o.timeout.map(duration_secs),
        "expires": o.expires.map(|e| match e {
            Expires::After(d) => json!({ "after": duration_secs(d) }),
            Expires::At(t) => json!({ "at": format_time(crate::clock::to_ms(t)) }),
        }),
        "store_result": o.store_result,
        "store_errors_between_retries": o.store_errors_between_retries,
        "periodic": d.periodic.as_ref().map(|c| c.to_string()),
    })
}

fn tasks(app: &Huey, a: JsonArgs) -> Result<ExitCode> {
    let defs = app.task_defs();
    let mut out = Out::new();
    if a.json {
        out.json(&Value::Array(defs.iter().map(|d| task_json(d)).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    for d in &defs {
        let (args, result) = signature(d);
        let o = &d.options;
        let mut line = format!(
            "{}({args}) -> {result}  queue={} priority={} retries={}",
            d.name, o.queue, o.priority, o.retries
        );
        if !o.retry_delay.is_zero() {
            line.push_str(&format!(" retry_delay={}s", duration_secs(o.retry_delay)));
        }
        if let Some(t) = o.timeout {
            line.push_str(&format!(" timeout={}s", duration_secs(t)));
        }
        if let Some(c) = &d.periodic {
            line.push_str(&format!("  periodic: {c}"));
        }
        out.line(line);
    }
    Ok(ExitCode::SUCCESS)
}

fn pending(app: &Huey, a: ListArgs) -> Result<ExitCode> {
    let items: Vec<Value> = app
        .storage()
        .pending(a.limit)?
        .iter()
        .map(|p| message_json(app, p))
        .collect();
    print_messages(items, a.json);
    Ok(ExitCode::SUCCESS)
}

fn scheduled(app: &Huey, a: ListArgs) -> Result<ExitCode> {
    let items: Vec<Value> = app
        .storage()
        .scheduled(a.limit)?
        .iter()
        .map(|(eta, p)| {
            let mut v = message_json(app, p);
            v["eta"] = json!(format_time(*eta));
            v
        })
        .collect();
    print_messages(items, a.json);
    Ok(ExitCode::SUCCESS)
}

fn print_messages(items: Vec<Value>, as_json: bool) {
    let mut out = Out::new();
    if as_json {
        out.json(&Value::Array(items));
        return;
    }
    for v in items {
        if let Some(e) = v.get("undecodable") {
            out.line(format!(
                "(undecodable message: {})",
                e.as_str().unwrap_or("")
            ));
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

fn dead(app: &Huey, a: DeadArgs) -> Result<ExitCode> {
    let storage = app.storage();
    if let Some(DeadAction::Retry(r)) = a.action {
        let n = if r.all {
            storage.retry_dead(None)?
        } else {
            let known: std::collections::HashSet<String> = storage
                .dead(usize::MAX)?
                .into_iter()
                .map(|d| d.key)
                .collect();
            let unknown: Vec<&str> = r
                .keys
                .iter()
                .filter(|k| !known.contains(*k))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(Error::Config(format!(
                    "no dead-letter entry with key {} (see `hueyd dead`)",
                    unknown.join(", ")
                )));
            }
            storage.retry_dead(Some(&r.keys))?
        };
        let mut out = Out::new();
        if r.json || a.json {
            out.json(&json!({ "retried": n }));
        } else {
            out.line(format!("retried {n}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let entries = storage.dead(a.limit)?;
    let items: Vec<Value> = entries
        .iter()
        .map(|d| {
            let task = Message::decode(&d.payload).ok().map(|m| m.task);
            json!({
                "key": d.key,
                "id": (!d.id.is_empty()).then_some(&d.id),
                "task": task,
                "queue": d.queue,
                "error": d.error,
                "at": format_time(d.at_ms),
                "at_ms": d.at_ms,
            })
        })
        .collect();
    let mut out = Out::new();
    if a.json {
        out.json(&Value::Array(items));
        return Ok(ExitCode::SUCCESS);
    }
    for v in items {
        out.line(format!(
            "{}  {}  id={} task={} queue={}  {}",
            v["key"].as_str().unwrap_or(""),
            v["at"].as_str().unwrap_or(""),
            v["id"].as_str().unwrap_or("-"),
            v["task"].as_str().unwrap_or("-"),
            v["queue"].as_str().unwrap_or(""),
            v["error"].as_str().unwrap_or(""),
        ));
    }
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn times_parse_as_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2026-11-26T10:00:00Z"), Ok(1_795_687_200_000));
        assert_eq!(
            parse_time("2026-11-26T11:00:00+01:00"),
            Ok(1_795_687_200_000)
        );
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("-5").is_err());
        assert_eq!(format_time(1_795_687_200_000), "2026-11-26T10:00:00.000Z");
    }
}
