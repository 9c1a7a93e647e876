//! The actions, shared by the forms (which redirect back) and the JSON API: revoke, restore,
//! cancel a running task, flush, retry or delete dead letters. The guard has checked the CSRF
//! token and the origin before any of these runs.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::Redirect;
use axum::Form;
use serde::Deserialize;

use super::auth::local_path;
use super::data::check_id;
use super::view::Fail;
use super::{blocking, Shared};
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::revoke::Revoke;
use crate::storage::Flush;

/// Which task(s) an action is about: one instance by id, or every instance by name.
#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct Target {
    pub id: Option<String>,
    pub task: Option<String>,
}

impl Target {
    fn from_form(f: &HashMap<String, String>) -> Target {
        let get = |k: &str| f.get(k).filter(|v| !v.trim().is_empty()).cloned();
        Target {
            id: get("id"),
            task: get("task"),
        }
    }
}

/// What was acted on, for the API's answer.
#[derive(serde::Serialize, Debug)]
pub(crate) struct Done {
    pub action: &'static str,
    pub id: Option<String>,
    pub task: Option<String>,
    /// restore: whether there was a revocation; retry: how many entries went back.
    pub count: Option<usize>,
}

fn registered(app: &Huey, name: &str) -> Result<()> {
    match app.task_def(name) {
        Some(_) => Ok(()),
        None => Err(Error::Config(format!(
            "no task named {name:?} is registered in this app"
        ))),
    }
}

fn target_error() -> Error {
    Error::Config("give a task id or a task name".into())
}

pub(crate) fn revoke(app: &Huey, t: Target, action: &'static str) -> Result<Done> {
    match (&t.id, &t.task) {
        (Some(id), None) => app.revoke_id(check_id(id)?, Revoke::default())?,
        (None, Some(task)) if action == "revoke" => {
            registered(app, task)?;
            app.revoke_task(task, Revoke::default())?
        }
        _ => return Err(target_error()),
    }
    if action == "cancel" {
        tracing::info!("dashboard: cancelled task {:?}", t.id);
    }
    Ok(Done {
        action,
        id: t.id,
        task: t.task,
        count: None,
    })
}

pub(crate) fn restore(app: &Huey, t: Target) -> Result<Done> {
    let restored = match (&t.id, &t.task) {
        (Some(id), None) => app.restore_id(check_id(id)?)?,
        (None, Some(task)) => app.restore_task(task)?,
        _ => return Err(target_error()),
    };
    Ok(Done {
        action: "restore",
        id: t.id,
        task: t.task,
        count: Some(restored as usize),
    })
}

/// Put dead letters back: these keys (each must exist), or all of them.
pub(crate) fn retry_dead(app: &Huey, keys: Option<Vec<String>>) -> Result<Done> {
    let storage = app.storage();
    let n = match keys {
        None => storage.retry_dead(None)?,
        Some(keys) if keys.is_empty() => return Err(Error::Config("no dead-letter key".into())),
        Some(keys) => {
            let known: std::collections::HashSet<String> = storage
                .dead(usize::MAX)?
                .into_iter()
                .map(|d| d.key)
                .collect();
            if let Some(k) = keys.iter().find(|k| !known.contains(*k)) {
                return Err(Error::Config(format!(
                    "no dead-letter entry with key {k:?} (already retried or deleted?)"
                )));
            }
            storage.retry_dead(Some(&keys))?
        }
    };
    Ok(Done {
        action: "retry",
        id: None,
        task: None,
        count: Some(n),
    })
}

pub(crate) fn flush(app: &Huey, what: Flush) -> Result<Done> {
    if what == Flush::default() {
        return Err(Error::Config(
            "choose what to flush: queue, schedule, results, locks, dead or kv".into(),
        ));
    }
    app.storage().flush(what)?;
    tracing::info!("dashboard: flushed {what:?}");
    Ok(Done {
        action: "flush",
        id: None,
        task: None,
        count: None,
    })
}

/// The flush flags from form fields or JSON keys that are present and true.
pub(crate) fn flush_parts(on: impl Fn(&str) -> bool) -> Flush {
    if on("all") {
        return Flush::all();
    }
    Flush {
        queue: on("queue"),
        schedule: on("schedule"),
        results: on("results"),
        locks: on("locks"),
        dead: on("dead"),
        kv: on("kv"),
    }
}

// ----- forms ----------------------------------------------------------------------------

type FormMap = Form<HashMap<String, String>>;

/// Run an action for a form, then go back to the page the form names.
async fn form_action(
    s: Shared,
    f: HashMap<String, String>,
    act: impl FnOnce(&Huey, &HashMap<String, String>) -> Result<Done> + Send + 'static,
) -> std::result::Result<Redirect, Fail> {
    let next = local_path(f.get("next").map(String::as_str)).to_string();
    blocking(&s, move |app| act(app, &f)).await?;
    Ok(Redirect::to(&next))
}

pub(crate) async fn revoke_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, f| revoke(app, Target::from_form(f), "revoke")).await
}

pub(crate) async fn cancel_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, f| {
        let t = Target::from_form(f);
        revoke(app, Target { task: None, ..t }, "cancel")
    })
    .await
}

pub(crate) async fn restore_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, f| restore(app, Target::from_form(f))).await
}

pub(crate) async fn flush_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, f| {
        flush(app, flush_parts(|k| f.get(k).is_some_and(|v| v == "on")))
    })
    .await
}

pub(crate) async fn retry_dead_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, f| {
        let keys = match (f.get("all"), f.get("key")) {
            (Some(_), _) => None,
            (None, Some(k)) => Some(vec![k.clone()]),
            (None, None) => return Err(Error::Config("no dead-letter key".into())),
        };
        retry_dead(app, keys)
    })
    .await
}

pub(crate) async fn delete_dead_form(
    State(s): State<Shared>,
    Form(f): FormMap,
) -> std::result::Result<Redirect, Fail> {
    form_action(s, f, |app, _| {
        flush(
            app,
            Flush {
                dead: true,
                ..Flush::default()
            },
        )
    })
    .await
}
