//! `status`: counts of every part of the storage, revocations, locks and the registered tasks,
//! once or refreshed with `--watch`.
//!
//! The `--json` object is stable: `app` (string), `storage` (backend name), the integer counts
//! `ready`, `scheduled`, `in_flight`, `results`, `dead`, `revoked`, `locks`, and `tasks` (the
//! registered task names, sorted), `consumers` (the live consumers, as `consumers --json`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::values::positive_seconds;
use super::Out;
use crate::app::Huey;
use crate::error::Result;
use crate::observe::ConsumerInfo;
use crate::storage::Ns;

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

/// The `status --json` object.
fn status_json(app: &Huey) -> Result<Value> {
    let storage = app.storage();
    let c = storage.counts()?;
    let revoked = storage.list(Ns::Revoked)?.len();
    let locks = storage.list(Ns::Locks)?.len();
    let tasks: Vec<String> = app.task_defs().iter().map(|d| d.name.clone()).collect();
    let consumers = serde_json::to_value(app.consumers()?).unwrap_or_default();
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
        "consumers": consumers,
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
    let consumers: Vec<ConsumerInfo> =
        serde_json::from_value(v["consumers"].clone()).unwrap_or_default();
    s.push_str(&format!("\nconsumers  {}", consumers.len()));
    for c in &consumers {
        for l in super::consumers::consumer_text(c) {
            s.push_str(&format!("\n  {l}"));
        }
    }
    s
}

pub(super) fn run(app: &Huey, a: StatusArgs) -> Result<ExitCode> {
    let clear = a.watch && !a.json && std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        let v = status_json(app)?;
        {
            let mut out = Out::new();
            if clear {
                out.clear_screen();
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
