//! `dead`: list dead-letter messages, or put them back on the queue (`dead retry`).

use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::values::format_time;
use super::Out;
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::message::Message;

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

pub(super) fn run(app: &Huey, a: DeadArgs) -> Result<ExitCode> {
    match &a.action {
        Some(DeadAction::Retry(r)) => retry(app, r, a.json),
        None => list(app, &a),
    }
}

fn retry(app: &Huey, r: &DeadRetryArgs, json: bool) -> Result<ExitCode> {
    let storage = app.storage();
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
    if r.json || json {
        out.json(&json!({ "retried": n }));
    } else {
        out.line(format!("retried {n}"));
    }
    Ok(ExitCode::SUCCESS)
}

fn list(app: &Huey, a: &DeadArgs) -> Result<ExitCode> {
    let entries = app.storage().dead(a.limit)?;
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
