//! The storage cases against the in-memory backend.
#[macro_use]
mod common;

use std::sync::Arc;

use huey::storage::{MemoryStorage, Storage};

#[path = "common/cases/mod.rs"]
mod cases;

/// Handles on one fresh in-memory storage.
fn factory() -> impl Fn() -> Arc<dyn Storage> {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    move || storage.clone()
}
