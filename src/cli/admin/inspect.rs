//! `inspect ID`: where a task is — queued, scheduled, running, done, failed, revoked,
//! expired, dead-lettered or unknown — read from the storage without changing anything.
//!
//! `--json` prints one object: `id`, `state` (the name), and the state's fields: `queue`,
//! `position`, `priority` (queued); `eta_ms` (scheduled); `consumer`, `worker`, `since_ms`,
//! `attempt` (running); `error` (failed, dead-lettered); and `progress` (`done`, `total`,
//! `message`, `at_ms`) when the task reported some.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::values::format_time;
use super::Out;
use crate::app::Huey;
use crate::error::Result;
use crate::observe::TaskState;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The task id.
    pub id: String,
    /// Print a JSON object.
    #[arg(long)]
    pub json: bool,
}

fn text(id: &str, s: &TaskState) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "?".into());
    let detail = match s {
        TaskState::Queued {
            queue,
            position,
            priority,
        } => format!(
            "in queue {queue} (priority {priority}), {} ahead of it",
            opt(position.map(|p| p.to_string()))
        ),
        TaskState::Scheduled { eta_ms } => format!("due at {}", format_time(*eta_ms)),
        TaskState::Running {
            consumer,
            worker,
            since_ms,
            attempt,
        } => format!(
            "attempt {attempt} on consumer {}, worker {}, since {}",
            opt(consumer.clone()),
            opt(worker.map(|w| w.to_string())),
            opt(since_ms.map(format_time))
        ),
        TaskState::Failed { error } | TaskState::DeadLettered { error } => error.clone(),
        _ => String::new(),
    };
    let mut line = format!("{id}  {}", s.name());
    if !detail.is_empty() {
        line.push_str("  ");
        line.push_str(&detail);
    }
    line
}

pub(super) fn run(app: &Huey, a: InspectArgs) -> Result<ExitCode> {
    let state = app.task_state(&a.id)?;
    let progress = crate::progress::read(&*app.storage(), &a.id)?;
    let mut out = Out::new();
    if a.json {
        let mut v = serde_json::to_value(&state).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("id".into(), Value::String(a.id.clone()));
            if let Some(p) = &progress {
                m.insert("progress".into(), json!(p));
            }
        }
        out.json(&v);
    } else {
        let mut line = text(&a.id, &state);
        if let Some(p) = &progress {
            line.push_str(&format!(
                "  progress {}/{} {} (at {})",
                p.done,
                p.total,
                p.message,
                format_time(p.at_ms)
            ));
        }
        out.line(line);
    }
    Ok(ExitCode::SUCCESS)
}
