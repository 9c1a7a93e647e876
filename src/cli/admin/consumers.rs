//! `consumers`: the live consumers of the app, from their heartbeat records, and what each
//! worker runs.
//!
//! `--json` prints one array of objects: `id`, `host`, `pid`, `app`, `version`, `kind`,
//! `workers`, `queues`, `started_ms`, `last_seen_ms`, and `workers_now` (objects `pid`,
//! `task_id`, `task_name`, `since_ms`; null fields when a worker is idle).

use std::process::ExitCode;

use clap::Args;

use super::values::format_time;
use super::Out;
use crate::app::Huey;
use crate::error::Result;
use crate::observe::ConsumerInfo;

#[derive(Args, Debug)]
pub struct ConsumersArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// The lines describing one consumer.
pub(super) fn consumer_text(c: &ConsumerInfo) -> Vec<String> {
    let mut lines = vec![format!(
        "{}  {} {} workers  queues={}  v{}  up since {}  seen {}",
        c.id,
        c.workers,
        c.kind,
        c.queues.join(","),
        c.version,
        format_time(c.started_ms),
        format_time(c.last_seen_ms),
    )];
    for w in &c.workers_now {
        lines.push(match (&w.task_id, &w.task_name) {
            (Some(id), name) => format!(
                "  worker {:<8} {} {}  since {}",
                w.pid,
                name.as_deref().unwrap_or("?"),
                id,
                w.since_ms.map(format_time).unwrap_or_default()
            ),
            (None, _) => format!("  worker {:<8} idle", w.pid),
        });
    }
    lines
}

pub(super) fn run(app: &Huey, a: ConsumersArgs) -> Result<ExitCode> {
    let consumers = app.consumers()?;
    let mut out = Out::new();
    if a.json {
        out.json(&serde_json::to_value(&consumers).unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if consumers.is_empty() {
        out.line("no live consumer");
    }
    for c in &consumers {
        for l in consumer_text(c) {
            out.line(l);
        }
    }
    Ok(ExitCode::SUCCESS)
}
