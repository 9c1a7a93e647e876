//! What the dashboard shows, read from the storage (blocking calls, run on tokio's blocking
//! pool): the same values feed the HTML pages and the JSON API.

use serde::Serialize;
use serde_json::Value;

use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::message::{Message, StoredResult};
use crate::observe::TaskState;
use crate::revoke::Revoke;
use crate::storage::{Counts, DeadLetter, Location, Ns};

/// How many entries the listings and the task lookup scan at most.
pub(crate) const SCAN: usize = 10_000;
/// Longest task id accepted in a URL.
const MAX_ID_LEN: usize = 256;

/// A time in ms since the epoch as RFC 3339 (UTC, seconds).
pub(crate) fn format_time(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A task id from a URL or a form: not empty, not too long, no control characters.
pub(crate) fn check_id(id: &str) -> Result<&str> {
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(Error::Config(format!(
            "not a task id: {:?}",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(id)
}

/// A message as listed.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct MessageView {
    pub id: String,
    pub task: String,
    pub queue: String,
    pub priority: i32,
    pub attempt: u32,
    /// The arguments as JSON, when the task is registered here and they decode.
    pub args: Option<Value>,
    pub eta: Option<String>,
    pub enqueued_at: String,
    #[serde(skip)]
    pub eta_ms: Option<u64>,
}

pub(crate) fn message_view(app: &Huey, payload: &[u8]) -> Option<MessageView> {
    let m = Message::decode(payload).ok()?;
    let args = app
        .task_def(&m.task)
        .and_then(|d| d.handler.args_to_json(&m.args).ok());
    Some(MessageView {
        queue: m.queue().to_string(),
        priority: m.priority(),
        attempt: m.attempt,
        args,
        eta: m.eta_ms.map(format_time),
        enqueued_at: format_time(m.enqueued_ms),
        eta_ms: m.eta_ms,
        id: m.id,
        task: m.task,
    })
}

/// A dead-letter entry as listed.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct DeadView {
    pub key: String,
    pub id: Option<String>,
    pub task: Option<String>,
    pub queue: String,
    pub error: String,
    pub at: String,
    pub at_ms: u64,
}

fn dead_view(d: DeadLetter) -> DeadView {
    DeadView {
        task: Message::decode(&d.payload).ok().map(|m| m.task),
        id: (!d.id.is_empty()).then_some(d.id),
        key: d.key,
        queue: d.queue,
        error: d.error,
        at: format_time(d.at_ms),
        at_ms: d.at_ms,
    }
}

pub(crate) fn dead(app: &Huey, limit: usize) -> Result<Vec<DeadView>> {
    Ok(app
        .storage()
        .dead(limit)?
        .into_iter()
        .map(dead_view)
        .collect())
}

/// A revocation in force.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct RevokedView {
    /// "id" or "task".
    pub kind: String,
    pub target: String,
    pub once: bool,
    pub until: Option<String>,
}

pub(crate) fn revoked(app: &Huey) -> Result<Vec<RevokedView>> {
    let mut out: Vec<RevokedView> = app
        .storage()
        .list(Ns::Revoked)?
        .into_iter()
        .filter_map(|(key, bytes)| {
            let (kind, target) = key.split_once(':')?;
            let how: Revoke = postcard::from_bytes(&bytes).ok()?;
            Some(RevokedView {
                kind: kind.to_string(),
                target: target.to_string(),
                once: how.once,
                until: how.until_ms.map(format_time),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.target).cmp(&(&b.kind, &b.target)));
    Ok(out)
}

/// A registered task.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct TaskInfo {
    pub name: String,
    pub queue: String,
    pub retries: u32,
    pub periodic: Option<String>,
    pub next_run: Option<String>,
}

pub(crate) fn tasks(app: &Huey) -> Vec<TaskInfo> {
    let now = chrono::Utc::now();
    let mut out: Vec<TaskInfo> = app
        .task_defs()
        .iter()
        .map(|d| TaskInfo {
            name: d.name.clone(),
            queue: d.options.queue.clone(),
            retries: d.options.retries,
            periodic: d.periodic.as_ref().map(|c| c.expr().to_string()),
            next_run: d
                .periodic
                .as_ref()
                .and_then(|c| c.next_after(now))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Everything on the overview page.
#[derive(Serialize, Debug)]
pub(crate) struct Overview {
    pub app: String,
    pub storage: &'static str,
    pub now: String,
    pub counts: Counts,
    pub queues: Vec<QueueView>,
    pub consumers: Vec<Value>,
    pub throughput: Vec<super::chart::Minute>,
    /// The oldest dead letters (at most `DEAD_SHOWN`).
    pub dead: Vec<DeadView>,
    pub revoked: Vec<RevokedView>,
    pub tasks: Vec<TaskInfo>,
}

/// Dead letters listed on the overview.
const DEAD_SHOWN: usize = 20;

/// A queue: its ready and leased messages, and the consumers that serve it.
#[derive(Serialize, Debug, Clone, Default)]
pub(crate) struct QueueView {
    pub name: String,
    pub ready: u64,
    /// Leased to a consumer; `None` when the backend does not count by queue.
    pub in_flight: Option<u64>,
    /// `ready` was counted in a sample of the first [`QUEUE_SAMPLE`] ready messages, which was
    /// full: there may be more.
    pub more: bool,
    pub consumers: Vec<String>,
}

/// Ready messages read to count them by queue, on a backend that cannot count by queue.
const QUEUE_SAMPLE: usize = 1000;

type Queues = std::collections::BTreeMap<String, QueueView>;

fn slot<'a>(by_name: &'a mut Queues, name: &str) -> &'a mut QueueView {
    by_name
        .entry(name.to_string())
        .or_insert_with(|| QueueView {
            name: name.to_string(),
            ..QueueView::default()
        })
}

/// The queues the tasks, the consumers and the storage name, with their sizes.
fn queues(
    app: &Huey,
    counts: &Counts,
    tasks: &[TaskInfo],
    consumers: &[Value],
) -> Result<Vec<QueueView>> {
    let mut by_name = Queues::new();
    for t in tasks {
        slot(&mut by_name, &t.queue);
    }
    for c in consumers {
        let id = c["id"].as_str().unwrap_or("");
        for q in c["queues"].as_array().into_iter().flatten() {
            let q = q.as_str().unwrap_or("");
            slot(&mut by_name, q).consumers.push(id.to_string());
        }
    }
    let storage = app.storage();
    if counts.ready == 0 && counts.in_flight == 0 {
        let idle = |q: QueueView| QueueView {
            in_flight: Some(0),
            ..q
        };
        return Ok(by_name.into_values().map(idle).collect());
    }
    let sizes = storage.queue_sizes()?;
    if !sizes.is_empty() {
        for s in sizes {
            let q = slot(&mut by_name, &s.queue);
            q.ready = s.ready;
            q.in_flight = Some(s.in_flight);
        }
        return Ok(by_name.into_values().collect());
    }
    let sample = storage.pending(QUEUE_SAMPLE)?;
    let more = sample.len() == QUEUE_SAMPLE;
    for p in &sample {
        let q = Message::decode(p)
            .map(|m| m.queue().to_string())
            .unwrap_or_else(|_| "(undecodable)".into());
        slot(&mut by_name, &q).ready += 1;
    }
    Ok(by_name
        .into_values()
        .map(|q| QueueView { more, ..q })
        .collect())
}

pub(crate) fn overview(app: &Huey, minutes: u32) -> Result<Overview> {
    let storage = app.storage();
    let consumers = super::observe::consumers(app)?;
    let tasks = tasks(app);
    let counts = storage.counts()?;
    Ok(Overview {
        app: app.name().to_string(),
        storage: storage.backend(),
        now: format_time(now_ms()),
        counts,
        queues: queues(app, &counts, &tasks, &consumers)?,
        consumers,
        throughput: super::observe::throughput(app, minutes)?,
        dead: dead(app, DEAD_SHOWN)?,
        revoked: revoked(app)?,
        tasks,
    })
}

/// One entry of a task's timeline.
#[derive(Serialize, Debug, Clone)]
pub(crate) struct Event {
    pub at: String,
    pub what: String,
}

/// Everything known about one task id.
#[derive(Serialize, Debug, Default)]
pub(crate) struct TaskView {
    pub id: String,
    /// queued, scheduled, running, done, failed, revoked, expired, dead_lettered or unknown.
    pub state: String,
    /// More about the state: the queue and position, the eta, the worker...
    pub detail: Option<Value>,
    pub task: Option<String>,
    pub queue: Option<String>,
    pub attempt: Option<u32>,
    pub args: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub revoked: bool,
    pub dead: Option<DeadView>,
    pub timeline: Vec<Event>,
}

/// Look a task up by id: its state, and what its message, result and dead letter tell.
pub(crate) fn task(app: &Huey, id: &str) -> Result<TaskView> {
    let storage = app.storage();
    // Finding the message may scan its whole queue (Redis): once for both uses.
    let place = storage.locate(id)?;
    let (state, detail) = super::observe::state(app, id, place.clone())?;
    let mut v = TaskView {
        id: id.to_string(),
        state: state.name().to_string(),
        detail,
        revoked: app.is_id_revoked(id)?,
        ..TaskView::default()
    };
    let mut message = match place {
        Some(Location::Ready { payload, .. })
        | Some(Location::Leased { payload, .. })
        | Some(Location::Scheduled { payload, .. }) => message_view(app, &payload),
        Some(Location::Dead { .. }) | None => None,
    };
    if matches!(state, TaskState::DeadLettered { .. }) {
        if let Some(d) = storage.dead(SCAN)?.into_iter().find(|d| d.id == id) {
            message = message.or_else(|| message_view(app, &d.payload));
            v.dead = Some(dead_view(d));
        }
    }
    if let Some(bytes) = storage.result(id, false)? {
        read_result(app, &mut v, &bytes);
    }
    if let Some(m) = message {
        fill_message(&mut v, m);
    }
    if let TaskState::Running {
        since_ms: Some(ms), ..
    } = state
    {
        v.timeline.push(Event {
            at: format_time(ms),
            what: "started on its worker".into(),
        });
    }
    v.timeline.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(v)
}

fn read_result(app: &Huey, v: &mut TaskView, bytes: &[u8]) {
    match StoredResult::decode(bytes) {
        Ok(StoredResult::Ok { task, value }) => {
            v.result = app
                .task_def(&task)
                .and_then(|d| d.handler.result_to_json(&value).ok());
            v.task.get_or_insert(task);
        }
        Ok(StoredResult::Err(e)) => {
            v.attempt.get_or_insert(e.attempt);
            v.task.get_or_insert(e.task.clone());
            v.error = Some(serde_json::json!({
                "kind": e.kind.as_str(),
                "message": e.message,
                "attempt": e.attempt,
            }));
        }
        Err(e) => v.error = Some(serde_json::json!({ "undecodable": e.to_string() })),
    }
}

fn fill_message(v: &mut TaskView, m: MessageView) {
    v.timeline.push(Event {
        at: m.enqueued_at.clone(),
        what: format!("enqueued on queue {:?}", m.queue),
    });
    if let (Some(eta), Some(ms)) = (&m.eta, m.eta_ms) {
        let what = if ms > now_ms() { "due" } else { "was due" };
        v.timeline.push(Event {
            at: eta.clone(),
            what: what.into(),
        });
    }
    if let Some(d) = &v.dead {
        v.timeline.push(Event {
            at: d.at.clone(),
            what: format!("dead-lettered: {}", d.error),
        });
    }
    v.task = Some(m.task);
    v.queue = Some(m.queue);
    v.attempt = Some(m.attempt);
    v.args = m.args;
}

/// The scheduled page: messages by eta and the periodic tasks' next runs.
#[derive(Serialize, Debug)]
pub(crate) struct ScheduledView {
    pub scheduled: Vec<MessageView>,
    pub periodic: Vec<TaskInfo>,
}

pub(crate) fn scheduled(app: &Huey, limit: usize) -> Result<ScheduledView> {
    let scheduled = app
        .storage()
        .scheduled(limit)?
        .iter()
        .filter_map(|(eta, p)| {
            message_view(app, p).map(|mut m| {
                m.eta = Some(format_time(*eta));
                m
            })
        })
        .collect();
    let periodic = tasks(app)
        .into_iter()
        .filter(|t| t.periodic.is_some())
        .collect();
    Ok(ScheduledView {
        scheduled,
        periodic,
    })
}

pub(crate) fn pending(app: &Huey, limit: usize) -> Result<Vec<MessageView>> {
    Ok(app
        .storage()
        .pending(limit)?
        .iter()
        .filter_map(|p| message_view(app, p))
        .collect())
}
