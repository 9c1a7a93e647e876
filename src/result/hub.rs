//! The shared waiter behind [`super::TaskResult::wait_async`]: one thread per storage (while
//! anything waits) watches the results of every waiting future at once through
//! [`Results::watch_results`](crate::storage::Results::watch_results) and wakes the futures
//! whose result came, through one-shot channels. However many futures wait, the storage sees
//! one watcher: one blocked `BLPOP` (Redis), one `data_version` poll and one query per change
//! (SQLite), one condition variable (memory).
//!
//! A future registers its id, then reads the result itself (in a blocking thread), so a result
//! written before the watcher looks is not missed; when the watcher is blocked it is woken to
//! take the new id in. A dropped future's [`Registration`] removes it; the thread ends once
//! nothing is registered (within [`WATCH_CAP`]), and holds the storage only while it runs.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::storage::Storage;

/// Longest single watch: how soon the thread notices that every waiter went away.
const WATCH_CAP: Duration = Duration::from_secs(1);

/// After a storage error, how long the watcher pauses before watching again.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The name of the watcher threads.
pub(crate) const THREAD_NAME: &str = "huey-results";

/// Every storage's watcher (by storage identity). Entries whose storage is gone are dropped
/// when the next one is added.
static HUBS: std::sync::Mutex<Vec<Arc<Hub>>> = std::sync::Mutex::new(Vec::new());

struct Hub {
    storage: Weak<dyn Storage>,
    /// This watcher's name in the storage (Redis: its wake-up list).
    watcher: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Waiting futures by task id: a key (for removal) and a channel to wake each.
    waiters: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
    next_key: u64,
    /// A thread serves this hub.
    running: bool,
    /// The thread has read the ids and is blocked in the storage.
    watching: bool,
    /// It has been asked to wake up since it read the ids.
    woken: bool,
}

/// One future's place among the waiters; dropping it removes it.
pub(crate) struct Registration {
    hub: Arc<Hub>,
    id: String,
    key: u64,
    woken: oneshot::Receiver<()>,
}

impl Registration {
    /// Until the watcher sees a result for this id (or a storage error, or the watcher went
    /// away): then the caller reads again.
    pub(crate) async fn woken(&mut self) {
        let _ = (&mut self.woken).await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut st = self.hub.state.lock();
        if let Some(list) = st.waiters.get_mut(&self.id) {
            list.retain(|(k, _)| *k != self.key);
            if list.is_empty() {
                st.waiters.remove(&self.id);
            }
        }
    }
}

fn hub_of(storage: &Arc<dyn Storage>) -> Arc<Hub> {
    let mut hubs = HUBS.lock().unwrap_or_else(|e| e.into_inner());
    hubs.retain(|h| h.storage.strong_count() > 0);
    let weak = Arc::downgrade(storage);
    if let Some(h) = hubs.iter().find(|h| Weak::ptr_eq(&h.storage, &weak)) {
        return h.clone();
    }
    let hub = Arc::new(Hub {
        storage: weak,
        watcher: uuid::Uuid::new_v4().simple().to_string(),
        state: Mutex::new(State::default()),
    });
    hubs.push(hub.clone());
    hub
}

/// Register a waiter for `id`; blocking (it may start the watcher or wake it through the
/// storage). The caller reads the result itself afterwards.
pub(crate) fn register(storage: &Arc<dyn Storage>, id: &str) -> Result<Registration> {
    let hub = hub_of(storage);
    let (tx, rx) = oneshot::channel();
    let (key, start, wake) = {
        let mut st = hub.state.lock();
        let key = st.next_key;
        st.next_key += 1;
        st.waiters
            .entry(id.to_string())
            .or_default()
            .push((key, tx));
        let start = !st.running;
        st.running = true;
        let wake = st.watching && !st.woken;
        st.woken |= wake;
        (key, start, wake)
    };
    let reg = Registration {
        hub: hub.clone(),
        id: id.to_string(),
        key,
        woken: rx,
    };
    if start {
        let storage = storage.clone();
        let spawned = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || serve(&hub, &*storage));
        if let Err(e) = spawned {
            reg.hub.state.lock().running = false;
            return Err(Error::io("could not start the result watcher thread", e));
        }
    }
    if wake {
        storage.wake_watcher(&reg.hub.watcher)?;
    }
    Ok(reg)
}

/// Should the watcher thread panic, the hub is left able to start another, and its waiters
/// read for themselves (and register again).
struct PanicGuard<'a>(&'a Hub);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = self.0.state.lock();
            st.running = false;
            st.watching = false;
            for (_, tx) in st.waiters.drain().flat_map(|(_, v)| v) {
                let _ = tx.send(());
            }
        }
    }
}

/// The watcher thread: watch until nothing is registered.
fn serve(hub: &Hub, storage: &dyn Storage) {
    let _guard = PanicGuard(hub);
    loop {
        {
            let mut st = hub.state.lock();
            if st.waiters.is_empty() {
                st.running = false;
                return;
            }
        }
        let pending = || {
            let mut st = hub.state.lock();
            st.watching = true;
            st.woken = false;
            st.waiters.keys().cloned().collect()
        };
        let out = storage.watch_results(&hub.watcher, &pending, WATCH_CAP);
        let mut st = hub.state.lock();
        st.watching = false;
        match out {
            Ok(ready) => {
                for id in ready {
                    for (_, tx) in st.waiters.remove(&id).into_iter().flatten() {
                        let _ = tx.send(());
                    }
                }
            }
            Err(e) => {
                // Every waiter reads for itself and meets the error (or its result).
                tracing::warn!("watching results failed: {e}");
                for (_, tx) in st.waiters.drain().flat_map(|(_, v)| v) {
                    let _ = tx.send(());
                }
                drop(st);
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
}
