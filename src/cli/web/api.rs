//! The JSON API under `/api`, which the pages' script polls: GETs read, POSTs act (with the
//! CSRF token in `X-CSRF-Token`, or a bearer token). Errors are `{"error": "..."}` with a 4xx
//! or 5xx status.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::actions::{self, Done, Target};
use super::data::{self, DeadView, MessageView, Overview, ScheduledView, TaskView};
use super::pages::CHART_MINUTES;
use super::view::Fail;
use super::{blocking, Shared};
use crate::app::Huey;
use crate::error::Result;
use crate::storage::Flush;

type Answer<T> = std::result::Result<Json<T>, Fail>;

/// Run a storage call for the API: errors answer as JSON.
async fn call<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&Huey) -> Result<T> + Send + 'static,
) -> Answer<T> {
    blocking(s, f).await.map(Json).map_err(|e| e.json(true))
}

/// A `limit` query parameter: 1..=10000, 100 by default.
fn limit(q: &HashMap<String, String>) -> std::result::Result<usize, Fail> {
    match q.get("limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=data::SCAN).contains(n))
            .ok_or_else(|| {
                Fail::bad_request(format!("limit must be a number from 1 to {}", data::SCAN))
                    .json(true)
            }),
    }
}

/// `minutes`: 1..=1440, the chart's span by default.
fn minutes(q: &HashMap<String, String>) -> std::result::Result<u32, Fail> {
    match q.get("minutes") {
        None => Ok(CHART_MINUTES),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1440).contains(n))
            .ok_or_else(|| Fail::bad_request("minutes must be a number from 1 to 1440").json(true)),
    }
}

pub(crate) async fn overview(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer<Overview> {
    let m = minutes(&q)?;
    call(&s, move |app| data::overview(app, m)).await
}

pub(crate) async fn task(State(s): State<Shared>, Path(id): Path<String>) -> Answer<TaskView> {
    let id = data::check_id(&id)
        .map_err(|e| Fail::from(e).json(true))?
        .to_string();
    let v = call(&s, move |app| data::task(app, &id)).await?;
    if v.state == "unknown" {
        return Err(Fail::not_found(format!("no task with id {:?} is known", v.id)).json(true));
    }
    Ok(v)
}

pub(crate) async fn dead(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer<Vec<DeadView>> {
    let n = limit(&q)?;
    call(&s, move |app| data::dead(app, n)).await
}

pub(crate) async fn scheduled(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer<ScheduledView> {
    let n = limit(&q)?;
    call(&s, move |app| data::scheduled(app, n)).await
}

pub(crate) async fn pending(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer<Vec<MessageView>> {
    let n = limit(&q)?;
    call(&s, move |app| data::pending(app, n)).await
}

/// A JSON body that must be an object (an empty body counts as `{}`).
fn object(body: &[u8]) -> std::result::Result<serde_json::Map<String, Value>, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Fail::bad_request("the body must be a JSON object").json(true)),
        Err(e) => Err(Fail::bad_request(format!("the body is not JSON: {e}")).json(true)),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> std::result::Result<T, Fail> {
    let m = object(body)?;
    serde_json::from_value(Value::Object(m))
        .map_err(|e| Fail::bad_request(format!("bad parameters: {e}")).json(true))
}

/// `POST /api/revoke {"id"} | {"task"}`.
pub(crate) async fn revoke(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    let t: Target = parse(&body)?;
    call(&s, move |app| actions::revoke(app, t, "revoke")).await
}

/// `POST /api/cancel {"id"}`: revoke a task that may be running; its consumer stops it.
pub(crate) async fn cancel(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    let t: Target = parse(&body)?;
    if t.task.is_some() {
        return Err(Fail::bad_request("cancel takes a task id").json(true));
    }
    call(&s, move |app| actions::revoke(app, t, "cancel")).await
}

/// `POST /api/restore {"id"} | {"task"}`.
pub(crate) async fn restore(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    let t: Target = parse(&body)?;
    call(&s, move |app| actions::restore(app, t)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    keys: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
}

/// `POST /api/dead/retry {"keys": [...]} | {"all": true}`.
pub(crate) async fn retry_dead(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    let b: RetryBody = parse(&body)?;
    let keys = match (b.all, b.keys) {
        (true, None) => None,
        (false, Some(k)) => Some(k),
        _ => return Err(Fail::bad_request("give either \"keys\" or \"all\": true").json(true)),
    };
    call(&s, move |app| actions::retry_dead(app, keys)).await
}

/// `POST /api/dead/delete {}`: delete every dead letter.
pub(crate) async fn delete_dead(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    object(&body)?;
    let what = Flush {
        dead: true,
        ..Flush::default()
    };
    call(&s, move |app| actions::flush(app, what)).await
}

/// `POST /api/flush {"queue": true, ...}` (keys: queue, schedule, results, locks, dead, kv, all).
pub(crate) async fn flush(State(s): State<Shared>, body: axum::body::Bytes) -> Answer<Done> {
    let m = object(&body)?;
    const KEYS: [&str; 7] = ["queue", "schedule", "results", "locks", "dead", "kv", "all"];
    if let Some(k) = m.keys().find(|k| !KEYS.contains(&k.as_str())) {
        let msg = format!("unknown part {k:?}; known: {}", KEYS.join(", "));
        return Err(Fail::bad_request(msg).json(true));
    }
    let what = actions::flush_parts(|k| m.get(k).and_then(Value::as_bool) == Some(true));
    call(&s, move |app| actions::flush(app, what)).await
}
