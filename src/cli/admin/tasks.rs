//! `tasks`: the registered tasks with their argument and result types and their options.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::values::format_time;
use super::{duration_secs, signature, Out};
use crate::app::Huey;
use crate::app::TaskDef;
use crate::error::Result;
use crate::task::Expires;

#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
        "lock": o.lock.as_ref().map(|l| l.name.clone()),
        "semaphore": o.semaphore.as_ref().map(|s| json!({
            "name": s.name,
            "permits": s.permits,
            "ttl": duration_secs(s.ttl_for(o.timeout)),
        })),
        "periodic": d.periodic.as_ref().map(|c| c.to_string()),
        "source": "code",
    })
}

pub(super) fn run(app: &Huey, a: TasksArgs) -> Result<ExitCode> {
    let defs = app.task_defs();
    // The schedules in storage: without them (storage unreachable) the tasks are still listed.
    let stored = app.periodic().list().unwrap_or_else(|e| {
        super::note(format!(
            "could not read the periodic schedules in storage: {e}"
        ));
        Vec::new()
    });
    let mut out = Out::new();
    if a.json {
        let mut all: Vec<Value> = defs.iter().map(|d| task_json(d)).collect();
        all.extend(stored.iter().map(|s| {
            json!({
                "schedule": s.name,
                "task": s.task,
                "args": s.args,
                "periodic": s.cron,
                "tz": s.tz,
                "queue": s.queue,
                "priority": s.priority,
                "paused": s.paused,
                "source": "storage",
            })
        }));
        out.json(&Value::Array(all));
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
        if let Some(l) = &o.lock {
            line.push_str(&format!(" lock={}", l.name));
        }
        if let Some(s) = &o.semaphore {
            line.push_str(&format!(" semaphore={}/{}", s.name, s.permits));
        }
        if let Some(c) = &d.periodic {
            line.push_str(&format!("  periodic: {c} (in code)"));
        }
        out.line(line);
    }
    for s in &stored {
        out.line(format!(
            "schedule {}  (in storage: hueyd periodic)",
            super::periodic::schedule_line(s)
        ));
    }
    Ok(ExitCode::SUCCESS)
}
