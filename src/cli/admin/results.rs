//! `results`: stored results and final errors by id, a page at a time (huey's
//! `all_results()`), left in storage. Values are decoded with the result type of the task that
//! returned them. Stored bytes that are not a result are listed as `undecodable`, with why,
//! and the listing goes on.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::{task_error_json, Out};
use crate::app::Huey;
use crate::error::Result;
use crate::message::StoredResult;

#[derive(Args, Debug)]
pub struct ResultsArgs {
    /// At most this many results.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Start after this id (the last id of the previous page).
    #[arg(long, default_value = "")]
    pub after: String,
    /// Print one JSON object per result: `{"id", "status": "ok", "task", "value"}`,
    /// `{"id", "status": "error", "task", "error": {...}}`, or for stored bytes that are not a
    /// result `{"id", "status": "undecodable", "error": "why"}`.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(app: &Huey, a: ResultsArgs) -> Result<ExitCode> {
    let mut out = Out::new();
    for (id, stored) in app.results_page(&a.after, a.limit)? {
        let v = match stored {
            // Listed with why, and the listing goes on (the exit status stays 0).
            Err(e) => json!({ "id": id, "status": "undecodable", "error": e.to_string() }),
            Ok(StoredResult::Ok { task, value }) => {
                let decoded = app
                    .task_def(&task)
                    .and_then(|d| d.handler.result_to_json(&value).ok())
                    .unwrap_or(Value::Null);
                json!({ "id": id, "status": "ok", "task": task, "value": decoded })
            }
            Ok(StoredResult::Err(e)) => {
                json!({ "id": id, "status": "error", "task": e.task, "error": task_error_json(&e) })
            }
        };
        if a.json {
            out.json(&v);
        } else {
            let shown = match v["status"].as_str() {
                Some("ok") => v["value"].to_string(),
                Some("undecodable") => {
                    format!("undecodable: {}", v["error"].as_str().unwrap_or(""))
                }
                _ => format!(
                    "error: {}: {}",
                    v["error"]["kind"].as_str().unwrap_or(""),
                    v["error"]["message"].as_str().unwrap_or("")
                ),
            };
            out.line(format!(
                "{id}\t{}\t{shown}",
                v["task"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
