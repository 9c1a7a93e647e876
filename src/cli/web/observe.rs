//! Consumers, per-minute counters and live task states, from the records the consumers keep in
//! the storage ([`crate::observe`]), shaped for the pages and the API.

use serde_json::{json, Value};

use super::chart::Minute;
use super::data::format_time;
use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::Result;
use crate::observe::{ConsumerInfo, MinuteStats, TaskState};
use crate::storage::Location;

/// The live consumers, each with its workers and what they run.
pub(crate) fn consumers(app: &Huey) -> Result<Vec<Value>> {
    Ok(app.consumers()?.iter().map(consumer_json).collect())
}

fn consumer_json(c: &ConsumerInfo) -> Value {
    let workers: Vec<Value> = c
        .workers_now
        .iter()
        .map(|w| {
            json!({
                "pid": w.pid,
                "task_id": w.task_id,
                "task": w.task_name,
                "since": w.since_ms.map(format_time),
            })
        })
        .collect();
    json!({
        "id": c.id,
        "host": c.host,
        "pid": c.pid,
        "app": c.app,
        "version": c.version,
        "kind": c.kind,
        "slots": c.workers,
        "queues": c.queues,
        "started": format_time(c.started_ms),
        "last_seen": format!("{:.1} s ago", now_ms().saturating_sub(c.last_seen_ms) as f64 / 1000.0),
        "workers": workers,
    })
}

/// Final failures in a minute: errors, timeouts and lost workers.
fn failed(m: &MinuteStats) -> u64 {
    m.error + m.timeout + m.worker_lost
}

/// Completed, failed and retried tasks per minute over the last `minutes`, oldest first.
pub(crate) fn throughput(app: &Huey, minutes: u32) -> Result<Vec<Minute>> {
    Ok(app
        .throughput(minutes)?
        .iter()
        .map(|m| Minute {
            at: format_time(m.minute_ms),
            at_ms: m.minute_ms,
            complete: m.complete,
            failed: failed(m),
            retry: m.retry,
            dead: m.dead,
        })
        .collect())
}

/// A task's state: its name, and the details as JSON (times also as RFC 3339).
pub(crate) fn state(
    app: &Huey,
    id: &str,
    place: Option<Location>,
) -> Result<(TaskState, Option<Value>)> {
    let state = app.task_state_at(id, place)?;
    let mut detail = serde_json::to_value(&state).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut detail {
        m.remove("state");
        m.retain(|_, v| !v.is_null());
        let times: Vec<(String, u64)> = m
            .iter()
            .filter_map(|(k, v)| Some((k.strip_suffix("_ms")?.to_string(), v.as_u64()?)))
            .collect();
        for (k, ms) in times {
            m.remove(&format!("{k}_ms"));
            m.insert(k, json!(format_time(ms)));
        }
        if m.is_empty() {
            return Ok((state, None));
        }
    }
    Ok((state, Some(detail)))
}
