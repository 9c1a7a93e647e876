//! Reading and waiting for a result from async code, without blocking the runtime: storage
//! calls run where they stall no other task ([`run_blocking`]), and a wait sleeps on a
//! one-shot channel that the storage's watcher thread (see `hub.rs`) fires when the result is
//! written.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use super::{hub, StoredResult, TaskResult};
use crate::error::{Error, Result};
use crate::storage::Storage;

type Cache = Arc<Mutex<Option<StoredResult>>>;

/// Run a blocking storage call where it cannot stall other tasks: on a multi-threaded runtime
/// in place, after handing this worker's other tasks to another thread
/// ([`tokio::task::block_in_place`]: no hand-off on the caller's path); on a current-thread
/// runtime on tokio's blocking pool. Outside a tokio runtime, an error.
pub(crate) async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    let Ok(handle) = Handle::try_current() else {
        return Err(Error::Config(
            "the async API of huey needs a tokio runtime: call it from code that runs on one"
                .into(),
        ));
    };
    if handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(f);
    }
    match handle.spawn_blocking(f).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::io(
            "a storage call",
            std::io::Error::other("the tokio runtime is shutting down"),
        )),
    }
}

/// Read `id` once; a result found is decoded and kept in `cache` before anything else, so a
/// destructive read whose future was cancelled leaves it in the handle.
fn read_into(
    storage: &dyn Storage,
    id: &str,
    take: bool,
    cache: &Cache,
) -> Result<Option<StoredResult>> {
    let Some(bytes) = storage.result(id, take)? else {
        return Ok(None);
    };
    let stored = StoredResult::decode(&bytes)?;
    *cache.lock() = Some(stored.clone());
    Ok(Some(stored))
}

impl<R: DeserializeOwned> TaskResult<R> {
    /// [`TaskResult::get`] for async code: the read stalls no other task of the runtime (on a
    /// multi-threaded runtime it runs in place through `block_in_place`, on a current-thread
    /// one on tokio's blocking pool). Needs a tokio runtime.
    pub async fn get_async(&self) -> Result<Option<R>> {
        let cached = self.cached.lock().clone();
        let stored = match cached {
            Some(c) => Some(c),
            None => {
                let (storage, id, take, cache) = self.parts();
                run_blocking(move || read_into(&*storage, &id, take, &cache)).await?
            }
        };
        stored.map(Self::finish).transpose()
    }

    /// [`TaskResult::wait`] for async code: wait up to `timeout` for the result,
    /// `Err(Error::Timeout)` when it does not come. Needs a tokio runtime with timers (as
    /// `#[tokio::main]` makes).
    ///
    /// No runtime thread blocks and nothing polls per waiter: the future sleeps until the
    /// storage's watcher thread (one per storage, shared by every waiting future) sees the
    /// result written — woken by Redis's wake-up list, by SQLite's commits, or by the memory
    /// storage's writes. Dropping the future (a cancelled request, a `select!`) removes it
    /// from the watcher; a result it had already taken stays in this handle.
    ///
    /// ```
    /// use std::time::Duration;
    /// use huey::Huey;
    ///
    /// # fn main() -> huey::Result<()> {
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let app = Huey::open("docs", "memory:")?;
    /// let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
    /// rt.block_on(async {
    ///     let sum = add.enqueue_async((2, 3)).await?;
    ///     // Nothing consumes this queue here: the wait runs out.
    ///     assert!(matches!(
    ///         sum.wait_async(Duration::from_millis(20)).await,
    ///         Err(huey::Error::Timeout(_))
    ///     ));
    ///     Ok(())
    /// })
    /// # }
    /// ```
    pub async fn wait_async(&self, timeout: Duration) -> Result<R> {
        match tokio::time::timeout(timeout, self.wait_stored()).await {
            Ok(stored) => Self::finish(stored?),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    fn parts(&self) -> (Arc<dyn Storage>, String, bool, Cache) {
        (
            self.app.storage(),
            self.id.clone(),
            !self.preserve,
            self.cached.clone(),
        )
    }

    /// Register with the watcher, then read (so a result written before the watcher looks is
    /// found); when there is none yet, sleep until woken, and read again.
    async fn wait_stored(&self) -> Result<StoredResult> {
        loop {
            let cached = self.cached.lock().clone();
            if let Some(c) = cached {
                return Ok(c);
            }
            let (storage, id, take, cache) = self.parts();
            let (mut registration, found) = run_blocking(move || {
                let registration = hub::register(&storage, &id)?;
                let found = read_into(&*storage, &id, take, &cache)?;
                Ok((registration, found))
            })
            .await?;
            if let Some(stored) = found {
                return Ok(stored);
            }
            registration.woken().await;
        }
    }
}
