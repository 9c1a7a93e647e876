//! `result`: a task's result as JSON, decoded with the result type of the task that returned
//! it. The result is read first and deleted only once printed (unless `--preserve`), so a
//! result that cannot be shown is never lost.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::values::non_negative_seconds;
use super::{lookup, note, signature, task_error_json, Out};
use crate::app::Huey;
use crate::app::TaskDef;
use crate::error::{Error, Result};
use crate::exit;
use crate::message::StoredResult;
use crate::task::TaskError;

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

pub(super) fn run(app: &Huey, a: ResultArgs) -> Result<ExitCode> {
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
        return Ok(ExitCode::from(exit::NOT_READY));
    };
    let consume = || -> Result<()> {
        if !a.preserve {
            storage.delete_result(&a.id)?;
        }
        Ok(())
    };
    match StoredResult::decode(&bytes)? {
        StoredResult::Err(e) => {
            show_error(out, &a, &e);
            consume()?;
            note(format!("error: {e}"));
            Ok(ExitCode::from(exit::FAILURE))
        }
        StoredResult::Ok { task, value } => {
            // The stored task name decides, unless --task overrides it; an unregistered name
            // falls back to trying every registered decoder.
            let def = def.or_else(|| app.task_def(&task));
            let decoded = decode_result(app, def.as_deref(), &value)?;
            show_value(out, &a, decoded, &value, consume)
        }
    }
}

/// Print a task's failure (the caller consumes the result once this is written).
fn show_error(mut out: Out, a: &ResultArgs, e: &TaskError) {
    if a.json {
        out.json(&json!({
            "id": a.id,
            "status": "error",
            "task": e.task,
            "error": task_error_json(e),
        }));
    } else {
        out.json(&task_error_json(e));
    }
}

/// Print a successful result, consuming it only when it could be shown unambiguously.
fn show_value(
    mut out: Out,
    a: &ResultArgs,
    decoded: Decoded,
    bytes: &[u8],
    consume: impl FnOnce() -> Result<()>,
) -> Result<ExitCode> {
    match decoded {
        Decoded::One { task, value } => {
            if a.json {
                out.json(&json!({
                    "id": a.id, "status": "ok", "task": task, "value": value,
                }));
            } else {
                out.json(&value);
            }
            drop(out);
            consume()?;
            Ok(ExitCode::SUCCESS)
        }
        Decoded::Ambiguous(fits) => {
            let candidates: serde_json::Map<String, Value> = fits.into_iter().collect();
            out.json(&json!({
                "id": a.id,
                "status": "ambiguous",
                "candidates": candidates,
                "bytes": bytes,
            }));
            drop(out);
            note(format!(
                "the result of {} decodes differently as the result of several tasks ({}); \
                 pass --task NAME (the result was left in storage)",
                a.id,
                candidates.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
            Ok(ExitCode::from(exit::USAGE))
        }
        Decoded::None => {
            out.json(&json!({ "id": a.id, "status": "undecodable", "bytes": bytes }));
            drop(out);
            note(format!(
                "the result of {} does not decode as the result of any registered task \
                 (the result was left in storage)",
                a.id
            ));
            Ok(ExitCode::from(exit::FAILURE))
        }
    }
}
