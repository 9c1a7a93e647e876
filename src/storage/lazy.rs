//! A storage opened on first use. Process workers get one: most tasks never touch storage, and
//! a worker that does not open a database connection stays small (no SQLite page cache, no
//! Redis connection, none of that code paged in).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::*;
use crate::error::Result;

/// Opens `url` the first time a method is called; an open that fails is retried next call.
pub struct LazyStorage {
    url: StorageUrl,
    app: String,
    opened: OnceLock<Arc<dyn Storage>>,
}

impl LazyStorage {
    /// A storage for `app` at `url`, not opened yet.
    pub fn new(url: StorageUrl, app: impl Into<String>) -> LazyStorage {
        LazyStorage {
            url,
            app: app.into(),
            opened: OnceLock::new(),
        }
    }

    fn opened(&self) -> Result<&Arc<dyn Storage>> {
        if let Some(s) = self.opened.get() {
            return Ok(s);
        }
        let s = self.url.open(&self.app)?;
        Ok(self.opened.get_or_init(|| s))
    }
}

macro_rules! delegate {
    ($role:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* }) => {
        impl $role for LazyStorage {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret {
                self.opened()?.$name($($arg),*)
            })*
        }
    };
}

delegate!(Queue {
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>>;
    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>>;
    fn dequeue_seeing_revocations(&self, req: &DequeueRequest) -> Result<(Vec<Delivery>, Option<bool>)>;
    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>>;
    fn release(&self, leases: &[Lease], started: bool) -> Result<()>;
});

delegate!(Schedule {
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize>;
    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize>;
});

delegate!(Results {
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>>;
    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>>;
    fn watch_results(&self, watcher: &str, pending: Pending, timeout: Duration) -> Result<Vec<String>>;
    fn wake_watcher(&self, watcher: &str) -> Result<()>;
    fn delete_result(&self, id: &str) -> Result<bool>;
    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>>;
});

delegate!(Kv {
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>>;
    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>>;
    fn may_hold_any(&self, ns: Ns) -> Result<bool>;
    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;
    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool>;
    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool>;
    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool>;
    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>>;
    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>>;
    fn incr(&self, key: &str, by: i64) -> Result<i64>;
    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64>;
    fn read_expiring(&self, keys: &[String], ttl: Duration) -> Result<Vec<i64>>;
});

impl Inspect for LazyStorage {
    fn backend(&self) -> &'static str {
        match self.opened.get() {
            Some(s) => s.backend(),
            None => self.url.backend(),
        }
    }

    fn counts(&self) -> Result<Counts> {
        self.opened()?.counts()
    }
    fn pending(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        self.opened()?.pending(limit)
    }
    fn scheduled(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        self.opened()?.scheduled(limit)
    }
    fn dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.opened()?.dead(limit)
    }
    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize> {
        self.opened()?.retry_dead(keys)
    }
    fn flush(&self, what: Flush) -> Result<()> {
        self.opened()?.flush(what)
    }

    fn locate(&self, id: &str) -> Result<Option<Location>> {
        self.opened()?.locate(id)
    }
    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        self.opened()?.queue_sizes()
    }
}
