//! The storage suite against SQLite files, plus what only a file shared by several processes
//! can show.
#[macro_use]
mod common;

use std::sync::Arc;

use huey::storage::{SqliteOptions, SqliteStorage, Storage};

fn open(path: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(SqliteStorage::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap())
}

/// A factory opening a new connection on one database file in a fresh directory.
fn sqlite_factory() -> impl Fn() -> Arc<dyn Storage> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huey.db");
    move || {
        let _keep = &dir;
        open(&path)
    }
}

storage_suite!(sqlite_factory());
