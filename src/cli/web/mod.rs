//! `web`: the dashboard. An HTTP server (axum on a small tokio runtime) that serves, from the
//! shared storage, server-rendered pages (overview, a task by id, dead letters, scheduled and
//! periodic tasks), the JSON API they poll under `/api`, and the actions (revoke, restore,
//! cancel, flush, retry or delete dead letters) as POST requests.
//!
//! Safe by default (see `auth`): it listens on loopback unless told otherwise, and any other
//! address requires `--token`; every POST carries the per-process CSRF token and a matching
//! Origin; bodies are small; bad ids and parameters get a 4xx page. The storage is blocking, so
//! every call to it runs on tokio's blocking pool.

mod actions;
mod api;
mod auth;
mod chart;
mod data;
mod observe;
mod pages;
mod server;
mod view;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;

use crate::app::Huey;
use crate::error::{Error, Result};

/// The largest request body accepted (forms and JSON actions are tiny).
const BODY_LIMIT: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct WebArgs {
    /// Address to listen on; port 0 picks a free port. The bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Require this token: as `Authorization: Bearer TOKEN`, or entered once in the login form
    /// (which sets a session cookie). Required for any address other than loopback.
    #[arg(long, env = "HUEY_WEB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// What every handler shares.
pub(crate) struct State {
    pub app: Huey,
    pub auth: auth::Auth,
}

pub(crate) type Shared = Arc<State>;

/// Run a storage call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&Huey) -> Result<T> + Send + 'static,
) -> std::result::Result<T, view::Fail> {
    let app = s.app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| {
            view::Fail::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed: {e}"),
            )
        })?
        .map_err(view::Fail::from)
}

/// Run the dashboard until interrupted.
pub fn run(app: &Huey, a: WebArgs) -> Result<ExitCode> {
    let addr = resolve(&a.bind)?;
    let token = auth::check_bind(addr, a.token)?;
    crate::logging::init_logging(None, "info", crate::logging::LogFormat::Text)?;
    let state = Arc::new(State {
        app: app.clone(),
        auth: auth::Auth::new(token, addr.ip().is_loopback()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the web server's runtime", e))?;
    rt.block_on(serve(state, addr))?;
    Ok(ExitCode::SUCCESS)
}

/// The one address `bind` names (a host name must resolve to exactly one kind of address).
fn resolve(bind: &str) -> Result<SocketAddr> {
    let bad = |why: String| Error::Config(format!("invalid --bind {bind:?}: {why}"));
    let mut addrs = bind
        .to_socket_addrs()
        .map_err(|e| bad(format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:8080)")))?;
    addrs
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

async fn serve(state: Shared, addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "dashboard listening on http://{local}/");
        let _ = out.flush();
    }
    tracing::info!(
        "dashboard for app {:?} on http://{local}/",
        state.app.name()
    );
    server::serve(listener, router(state), shutdown()).await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

fn router(state: Shared) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview))
        .route("/tasks", get(pages::find_task))
        .route("/tasks/{id}", get(pages::task))
        .route("/dead", get(pages::dead))
        .route("/scheduled", get(pages::scheduled))
        .route("/chart.svg", get(pages::chart_svg))
        .route("/actions/revoke", post(actions::revoke_form))
        .route("/actions/restore", post(actions::restore_form))
        .route("/actions/cancel", post(actions::cancel_form))
        .route("/actions/flush", post(actions::flush_form))
        .route("/actions/dead/retry", post(actions::retry_dead_form))
        .route("/actions/dead/delete", post(actions::delete_dead_form));
    let api = Router::new()
        .route("/api/overview", get(api::overview))
        .route("/api/tasks/{id}", get(api::task))
        .route("/api/dead", get(api::dead))
        .route("/api/scheduled", get(api::scheduled))
        .route("/api/pending", get(api::pending))
        .route("/api/revoke", post(api::revoke))
        .route("/api/cancel", post(api::cancel))
        .route("/api/restore", post(api::restore))
        .route("/api/flush", post(api::flush))
        .route("/api/dead/retry", post(api::retry_dead))
        .route("/api/dead/delete", post(api::delete_dead));
    Router::new()
        .merge(pages)
        .merge(api)
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/static/dashboard.js", get(view::script))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
