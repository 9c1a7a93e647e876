//! `revoke`: a task instance by id, or every instance of a task by name, for good, once, or
//! until a time.

use std::process::ExitCode;

use clap::{ArgGroup, Args};
use serde_json::json;

use super::values::{format_time, parse_time};
use super::{lookup, Out};
use crate::app::Huey;
use crate::error::Result;
use crate::revoke::Revoke;

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

pub(super) fn run(app: &Huey, a: RevokeArgs) -> Result<ExitCode> {
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
