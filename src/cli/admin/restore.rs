//! `restore`: undo a revocation by id or by task name.

use std::process::ExitCode;

use clap::{ArgGroup, Args};
use serde_json::json;

use super::Out;
use crate::app::Huey;
use crate::error::Result;

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

pub(super) fn run(app: &Huey, a: RestoreArgs) -> Result<ExitCode> {
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
