//! The storage cases against a private PostgreSQL server (started once for this test binary;
//! each case gets a schema of its own), plus what only Postgres shows.
#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use common::pg_server::PgServer;
use huey::storage::{self, Storage};

/// The storage cases, against Postgres.
#[path = "common/cases/mod.rs"]
mod cases;

/// The server every test of this binary shares (stopped when the binary exits).
fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// A schema no other test uses.
fn fresh_schema() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn url_in(schema: &str) -> String {
    format!("{}?schema={schema}", server().url())
}

/// New connections on one fresh schema.
fn factory() -> impl Fn() -> Arc<dyn Storage> {
    let url = url_in(&fresh_schema());
    move || storage::open(&url, "test").expect("open the test postgres")
}
