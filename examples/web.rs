//! A web app (axum on tokio) that enqueues tasks and awaits their results without blocking its
//! runtime: `enqueue_async` and `wait_async`. It uses the demo tasks, so `hueyd` is its
//! consumer:
//!
//! ```sh
//! hueyd --storage sqlite:web.db -k thread -w 4 &
//! cargo run --example web -- --storage sqlite:web.db --bind 127.0.0.1:3000 &
//! curl -s -XPOST localhost:3000/tasks/add -d '[2, 3]'       # {"id":"…"}
//! curl -s 'localhost:3000/tasks/ID?timeout=5'                # {"id":"…","state":"done","result":5}
//! ```
//!
//! - `POST /tasks/add` with the JSON arguments `[a, b]`: 201 and `{"id"}`; 400 for a body that
//!   is not two integers.
//! - `GET /tasks/{id}?timeout=SECS` (default 10, at most 60) awaits the result: 200 with
//!   `state` `done` and `result`, or `failed` and `error`; 202 with `state` `pending` when the
//!   wait ran out; 404 for an id this app did not hand out (or whose record expired).
//!
//! The ids handed out are recorded in the storage's app data for a day, so every instance of
//! the app behind a load balancer knows them. Results are read with `preserve`, so a result can
//! be fetched again until the storage expires it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use huey::storage::Ns;
use huey::{Error, Huey, Task};
use serde::Deserialize;
use serde_json::json;

#[derive(Parser)]
#[command(about = "A web app that enqueues tasks and awaits their results")]
struct Args {
    /// The storage URL (the consumer's).
    #[arg(long, env = "HUEY_STORAGE", default_value = huey::storage::DEFAULT_URL)]
    storage: String,
    /// The app name (the consumer's; `hueyd` runs the demo tasks as "hueyd").
    #[arg(long, default_value = "hueyd")]
    app: String,
    /// Where to listen; port 0 takes a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
}

/// How long the record of a handed-out id is kept.
const ID_TTL: Duration = Duration::from_secs(86_400);
const DEFAULT_WAIT: f64 = 10.0;
const MAX_WAIT: f64 = 60.0;

#[derive(Clone)]
struct Web {
    app: Huey,
    add: Task<(i64, i64), i64>,
}

fn id_key(id: &str) -> String {
    format!("web:task:{id}")
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn storage_error(e: Error) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e)
}

/// Run a blocking storage call (the app-data record) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> huey::Result<T> + Send + 'static,
) -> huey::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn enqueue_add(State(web): State<Web>, body: Bytes) -> Response {
    let args: (i64, i64) = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected [a, b]: {e}")),
    };
    let handle = match web.add.enqueue_async(args).await {
        Ok(h) => h,
        Err(e) => return storage_error(e),
    };
    let id = handle.id().to_string();
    let (storage, key) = (web.app.storage(), id_key(&id));
    if let Err(e) = blocking(move || storage.put(Ns::Data, &key, b"add", Some(ID_TTL))).await {
        return storage_error(e);
    }
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

#[derive(Deserialize)]
struct Wait {
    /// Seconds to wait for the result.
    timeout: Option<f64>,
}

async fn task_result(
    State(web): State<Web>,
    Path(id): Path<String>,
    wait: Result<Query<Wait>, QueryRejection>,
) -> Response {
    let secs = match wait {
        Ok(Query(w)) => w.timeout.unwrap_or(DEFAULT_WAIT),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if !(0.0..=MAX_WAIT).contains(&secs) {
        let message = format!("timeout must be between 0 and {MAX_WAIT} seconds");
        return error(StatusCode::BAD_REQUEST, message);
    }
    let (storage, key) = (web.app.storage(), id_key(&id));
    match blocking(move || storage.get(Ns::Data, &key)).await {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no task {id}")),
        Err(e) => return storage_error(e),
    }
    let handle = web.app.result::<i64>(id.clone()).preserve();
    match handle.wait_async(Duration::from_secs_f64(secs)).await {
        Ok(sum) => Json(json!({ "id": id, "state": "done", "result": sum })).into_response(),
        Err(Error::Task(e)) => {
            let body = json!({ "id": id, "state": "failed", "error": e.message });
            Json(body).into_response()
        }
        Err(Error::Timeout(_)) => {
            let body = json!({ "id": id, "state": "pending" });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => storage_error(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let app = Huey::open(&args.app, &args.storage)?;
    huey::demo::register(&app)?;
    let web = Web {
        add: Task::from_name(&app, "add")?,
        app,
    };
    let router = Router::new()
        .route("/tasks/add", post(enqueue_add))
        .route("/tasks/{id}", get(task_result))
        .with_state(web);
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}
