//! The HTML pages: overview, a task by id, dead letters, scheduled and periodic tasks.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde_json::Value;

use super::data::{self, DeadView, MessageView, Overview, TaskView};
use super::view::{action, frame, json_block, task_link, Fail};
use super::{blocking, chart, Shared};

/// Minutes of throughput drawn on the overview.
pub(crate) const CHART_MINUTES: u32 = 180;
/// Entries on the dead-letter and scheduled pages.
const PAGE_LIMIT: usize = 1000;

pub(crate) async fn not_found() -> Fail {
    Fail::not_found("there is no such page")
}

pub(crate) async fn overview(State(s): State<Shared>) -> Result<Markup, Fail> {
    let o = blocking(&s, |app| data::overview(app, CHART_MINUTES)).await?;
    Ok(frame(
        "Overview",
        Some(&s),
        "overview",
        overview_body(&s, &o),
    ))
}

fn overview_body(s: &Shared, o: &Overview) -> Markup {
    let c = &o.counts;
    html! {
        h1 { "Overview" }
        p.muted { "Storage " (o.storage) " · " span #updated { (o.now) } }
        div.counts {
            @for (label, key, n) in [("ready", "ready", c.ready), ("scheduled", "scheduled", c.scheduled),
                ("in flight", "in_flight", c.in_flight), ("results", "results", c.results),
                ("dead", "dead", c.dead)] {
                div.count { b data-count=(key) { (n) } (label) }
            }
        }
        h2 { "Queues" }
        table #queues {
            thead { tr { th { "Queue" } th { "Ready" } th { "In flight" } th { "Served by" } } }
            tbody {
                @for q in &o.queues {
                    tr data-queue=(q.name) {
                        td { (q.name) } td.num { (q.ready) @if q.more { "+" } }
                        td.num { @if let Some(n) = q.in_flight { (n) } }
                        td { (q.consumers.join(", ")) }
                    }
                }
            }
        }
        h2 { "Consumers" }
        (consumers_table(&o.consumers))
        h2 { "Throughput" }
        img #chart src="/chart.svg" alt="tasks completed and failed per minute" width="720" height="180";
        h2 { "Dead letters" }
        (dead_table(s, &o.dead, "/"))
        p { a href="/dead" { "All dead letters" } }
        h2 { "Revocations" }
        (revocations(s, &o.revoked))
        h2 { "Actions" }
        (action_forms(s, &o.tasks))
        h2 { "Registered tasks" }
        (tasks_table(&o.tasks))
    }
}

/// A field of a JSON object as text ("" when missing).
fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn consumers_table(consumers: &[Value]) -> Markup {
    html! {
        table #consumers {
            thead { tr { th { "Consumer" } th { "Host" } th { "Pid" } th { "Kind" } th { "Queues" }
                th { "Started" } th { "Last seen" } th { "Workers: what each runs" } } }
            tbody {
                @if consumers.is_empty() {
                    tr { td colspan="8" .muted { "no live consumer" } }
                }
                @for c in consumers {
                    tr data-consumer=(text(c, "id")) {
                        td { (text(c, "id")) } td { (text(c, "host")) } td.num { (text(c, "pid")) }
                        td { (text(c, "kind")) } td { (text(c, "queues")) }
                        td { (text(c, "started")) } td { (text(c, "last_seen")) }
                        td { (workers(c)) }
                    }
                }
            }
        }
    }
}

fn workers(c: &Value) -> Markup {
    let empty = Vec::new();
    let ws = c["workers"].as_array().unwrap_or(&empty);
    html! {
        @for w in ws {
            div {
                "worker " (text(w, "pid")) ": "
                @match w["task_id"].as_str() {
                    Some(id) => { (text(w, "task")) " " (task_link(id)) " since " (text(w, "since")) }
                    None => span.muted { "idle" },
                }
            }
        }
    }
}

pub(crate) fn dead_table(s: &Shared, dead: &[DeadView], back: &str) -> Markup {
    html! {
        table #dead {
            thead { tr { th { "When" } th { "Task" } th { "Id" } th { "Queue" } th { "Error" } th {} } }
            tbody {
                @if dead.is_empty() { tr { td colspan="6" .muted { "no dead letters" } } }
                @for d in dead {
                    tr data-key=(d.key) {
                        td { (d.at) } td { (d.task.as_deref().unwrap_or("?")) }
                        td { @if let Some(id) = &d.id { (task_link(id)) } }
                        td { (d.queue) } td.err { (d.error) }
                        td { (action(s, "/actions/dead/retry", &[("key", &d.key), ("next", back)], "Retry", None)) }
                    }
                }
            }
        }
    }
}

fn revocations(s: &Shared, revoked: &[data::RevokedView]) -> Markup {
    html! {
        table #revoked {
            thead { tr { th { "Revoked" } th { "Which" } th { "How" } th {} } }
            tbody {
                @if revoked.is_empty() { tr { td colspan="4" .muted { "nothing is revoked" } } }
                @for r in revoked {
                    tr {
                        td { (r.kind) }
                        td { @if r.kind == "id" { (task_link(&r.target)) } @else { (r.target) } }
                        td { @if r.once { "next run only" } @else if let Some(u) = &r.until { "until " (u) } @else { "for good" } }
                        td { (action(s, "/actions/restore", &[(r.kind.as_str(), &r.target), ("next", "/")], "Restore", None)) }
                    }
                }
            }
        }
    }
}

fn action_forms(s: &Shared, tasks: &[data::TaskInfo]) -> Markup {
    html! {
        form method="post" action="/actions/revoke" {
            input type="hidden" name="csrf" value=(s.auth.csrf);
            input type="hidden" name="next" value="/";
            "Revoke task id " input type="text" name="id" required;
            " " button type="submit" { "Revoke" }
        }
        form method="post" action="/actions/revoke" {
            input type="hidden" name="csrf" value=(s.auth.csrf);
            input type="hidden" name="next" value="/";
            "Revoke every instance of "
            select name="task" { @for t in tasks { option value=(t.name) { (t.name) } } }
            " " button type="submit" { "Revoke task" }
        }
        form method="post" action="/actions/flush" data-confirm="Flush the chosen parts of the storage? This cannot be undone." {
            input type="hidden" name="csrf" value=(s.auth.csrf);
            "Flush: "
            @for part in ["queue", "schedule", "results", "locks", "dead", "kv"] {
                label { input type="checkbox" name=(part) value="on"; " " (part) " " }
            }
            button type="submit" { "Flush" }
        }
    }
}

fn tasks_table(tasks: &[data::TaskInfo]) -> Markup {
    html! {
        table #tasks {
            thead { tr { th { "Task" } th { "Queue" } th { "Retries" } th { "Periodic" } th { "Next run" } } }
            tbody {
                @for t in tasks {
                    tr {
                        td { (t.name) } td { (t.queue) } td.num { (t.retries) }
                        td { (t.periodic.as_deref().unwrap_or("")) } td { (t.next_run.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn chart_svg(State(s): State<Shared>) -> Result<Response, Fail> {
    let minutes = blocking(&s, |app| super::observe::throughput(app, CHART_MINUTES)).await?;
    let svg = chart::svg(&minutes).into_string();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

/// `/tasks?id=ID`: the lookup form in the header.
pub(crate) async fn find_task(Query(q): Query<HashMap<String, String>>) -> Result<Redirect, Fail> {
    let id = q.get("id").map(String::as_str).unwrap_or("");
    let id = data::check_id(id).map_err(Fail::from)?;
    Ok(Redirect::to(&format!(
        "/tasks/{}",
        super::view::encode_segment(id)
    )))
}

pub(crate) async fn task(
    State(s): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, Fail> {
    let id = data::check_id(&id).map_err(Fail::from)?.to_string();
    let v = blocking(&s, move |app| data::task(app, &id)).await?;
    let body = task_body(&s, &v);
    let page = frame(&format!("Task {}", v.id), Some(&s), "task", body);
    if v.state == "unknown" {
        return Ok((axum::http::StatusCode::NOT_FOUND, page).into_response());
    }
    Ok(page.into_response())
}

fn task_body(s: &Shared, v: &TaskView) -> Markup {
    let back = format!("/tasks/{}", super::view::encode_segment(&v.id));
    let fields = [("id", v.id.as_str()), ("next", back.as_str())];
    html! {
        h1 { "Task " (v.id) }
        @if v.state == "unknown" {
            p.err { "No task with this id is known to the storage (never enqueued, or its traces expired)." }
        }
        table #task {
            tr { th { "State" } td { span.state #state { (v.state) } " " span #detail { (detail(&v.detail)) } } }
            tr { th { "Task" } td { (v.task.as_deref().unwrap_or("?")) } }
            tr { th { "Queue" } td { (v.queue.as_deref().unwrap_or("")) } }
            tr { th { "Attempt" } td { @if let Some(a) = v.attempt { (a) } } }
            tr { th { "Revoked" } td { @if v.revoked { "yes" } @else { "no" } } }
            tr { th { "Arguments" } td { (json_block(&v.args)) } }
            tr { th { "Result" } td #result { (json_block(&v.result)) } }
            tr { th { "Error" } td.err { (json_block(&v.error)) } }
        }
        h2 { "Timeline" }
        ul #timeline {
            @for e in &v.timeline { li { (e.at) " — " (e.what) } }
            @if v.timeline.is_empty() { li.muted { "nothing stored" } }
        }
        h2 { "Actions" }
        p {
            @if v.state == "running" {
                (action(s, "/actions/cancel", &fields, "Cancel", Some("Cancel this running task?"))) " "
            }
            @if !v.revoked && !matches!(v.state.as_str(), "done" | "failed" | "running") {
                (action(s, "/actions/revoke", &fields, "Revoke", None)) " "
            }
            @if v.revoked { (action(s, "/actions/restore", &fields, "Restore", None)) " " }
            @if let Some(d) = &v.dead {
                (action(s, "/actions/dead/retry", &[("key", &d.key), ("next", &back)], "Retry dead letter", None))
            }
        }
    }
}

/// A state's details: `key value` pairs.
fn detail(d: &Option<Value>) -> Markup {
    let Some(Value::Object(m)) = d else {
        return html! {};
    };
    html! {
        @for (k, v) in m {
            span.muted { (k.replace('_', " ")) } " " (v.as_str().map_or_else(|| v.to_string(), str::to_string)) " "
        }
    }
}

pub(crate) async fn dead(State(s): State<Shared>) -> Result<Markup, Fail> {
    let dead = blocking(&s, |app| data::dead(app, PAGE_LIMIT)).await?;
    Ok(frame(
        "Dead letters",
        Some(&s),
        "dead",
        html! {
            h1 { "Dead letters" }
            p {
                (action(&s, "/actions/dead/retry", &[("all", "on"), ("next", "/dead")], "Retry all", Some("Put every dead letter back on its queue?")))
                " "
                (action(&s, "/actions/dead/delete", &[("next", "/dead")], "Delete all", Some("Delete every dead letter? This cannot be undone.")))
            }
            (dead_table(&s, &dead, "/dead"))
            @if dead.len() == PAGE_LIMIT { p.muted { "Only the oldest " (PAGE_LIMIT) " are shown." } }
        },
    ))
}

pub(crate) async fn scheduled(State(s): State<Shared>) -> Result<Markup, Fail> {
    let v = blocking(&s, |app| data::scheduled(app, PAGE_LIMIT)).await?;
    Ok(frame(
        "Scheduled",
        Some(&s),
        "scheduled",
        html! {
            h1 { "Scheduled tasks" }
            (messages_table(&s, &v.scheduled, "/scheduled"))
            h2 { "Periodic tasks" }
            table #periodic {
                thead { tr { th { "Task" } th { "Schedule" } th { "Next run" } th { "Queue" } } }
                tbody {
                    @if v.periodic.is_empty() { tr { td colspan="4" .muted { "no periodic task is registered" } } }
                    @for t in &v.periodic {
                        tr { td { (t.name) } td { code { (t.periodic.as_deref().unwrap_or("")) } }
                             td { (t.next_run.as_deref().unwrap_or("never")) } td { (t.queue) } }
                    }
                }
            }
        },
    ))
}

fn messages_table(s: &Shared, ms: &[MessageView], back: &str) -> Markup {
    html! {
        table #scheduled {
            thead { tr { th { "Eta" } th { "Task" } th { "Id" } th { "Queue" } th { "Arguments" } th {} } }
            tbody {
                @if ms.is_empty() { tr { td colspan="6" .muted { "nothing is scheduled" } } }
                @for m in ms {
                    tr {
                        td { (m.eta.as_deref().unwrap_or("")) } td { (m.task) } td { (task_link(&m.id)) }
                        td { (m.queue) } td { (json_block(&m.args)) }
                        td { (action(s, "/actions/revoke", &[("id", &m.id), ("next", back)], "Revoke", None)) }
                    }
                }
            }
        }
    }
}
