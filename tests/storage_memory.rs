//! The storage suite against the in-memory backend.
#[macro_use]
mod common;

use std::sync::Arc;

use huey::storage::{MemoryStorage, Storage};

storage_suite!({
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    move || storage.clone()
});
