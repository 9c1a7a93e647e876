//! The key-value role: entries with expiry in a few namespaces (locks, revocations, claims,
//! app data), and counters.

use std::time::Duration;

use crate::error::Result;

/// Key-value namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    /// Task locks (flushed by `--flush-locks`).
    Locks,
    /// Revocations by task id or task name.
    Revoked,
    /// Periodic-run claims and other once-only markers.
    Claims,
    /// Anything else an app stores (e.g. the demo's attempt counters).
    Data,
    /// Consumers' heartbeat records (see `crate::observe`), expiring when one stops beating.
    Consumers,
}

impl Ns {
    /// Every namespace.
    pub const ALL: [Ns; 5] = [Ns::Locks, Ns::Revoked, Ns::Claims, Ns::Data, Ns::Consumers];

    /// A short stable name, usable as a table or key prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Ns::Locks => "locks",
            Ns::Revoked => "revoked",
            Ns::Claims => "claims",
            Ns::Data => "data",
            Ns::Consumers => "consumers",
        }
    }
}

/// Key-value entries with optional expiry, and counters. An expired entry reads as absent.
pub trait Kv {
    /// Read a key.
    fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>>;

    /// Read many keys of one namespace in one storage call: one answer per key, in order
    /// (`None` for a key that is absent or expired). A key may be asked for twice.
    ///
    /// The default asks [`Kv::get`] for each; backends read them all in one round trip.
    fn get_many(&self, ns: Ns, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(ns, k)).collect()
    }

    /// Whether the namespace may hold a live entry: `false` only when it surely holds none. Meant
    /// to be cheap (an index's size), so a reader can skip a [`Kv::get_many`] of many keys when
    /// there is nothing to find, e.g. revocations, which are usually none. The default answers
    /// `true`.
    fn may_hold_any(&self, ns: Ns) -> Result<bool> {
        let _ = ns;
        Ok(true)
    }

    /// Write a key, replacing any value.
    fn put(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Write a key only if it is absent (or expired); returns whether it was written.
    fn put_if_empty(&self, ns: Ns, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool>;

    /// Delete a key only if it holds `value` (compare-and-delete, e.g. releasing a lock only
    /// while still its holder); returns whether it was deleted.
    fn delete_if(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool>;

    /// Give a key that holds `value` a new TTL of `ttl` from now (compare-and-renew, e.g. a
    /// holder keeping its lock or permit while it works); returns whether it still held
    /// `value` (false: it expired, or someone else holds it now, and nothing was written).
    fn renew_if(&self, ns: Ns, key: &str, value: &[u8], ttl: Duration) -> Result<bool>;

    /// Delete a key and return its value.
    ///
    /// The default reads the value, then deletes it only if it still holds it
    /// ([`Kv::delete_if`]), and reads again when another writer got in between.
    fn take(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(v) = self.get(ns, key)? else {
                return Ok(None);
            };
            if self.delete_if(ns, key, &v)? {
                return Ok(Some(v));
            }
        }
    }

    /// Every live key of a namespace, sorted (meant for small ones: revocations, locks).
    fn list(&self, ns: Ns) -> Result<Vec<(String, Vec<u8>)>>;

    /// Add `by` to a counter (missing counts as 0) and return the new value.
    fn incr(&self, key: &str, by: i64) -> Result<i64>;

    /// Add `by` to a counter that disappears `ttl` after it was created (a later call starts
    /// again from 0) and return the new value. Meant for windows, e.g. rate limits. These
    /// counters are apart from those of [`Kv::incr`].
    fn incr_expiring(&self, key: &str, by: i64, ttl: Duration) -> Result<i64>;

    /// Read counters of [`Kv::incr_expiring`] (a missing or expired one reads 0), in `keys`
    /// order, in one call.
    ///
    /// The default adds 0 to each, which creates a missing one at 0 living `ttl`; backends
    /// override it with a plain read.
    fn read_expiring(&self, keys: &[String], ttl: Duration) -> Result<Vec<i64>> {
        keys.iter().map(|k| self.incr_expiring(k, 0, ttl)).collect()
    }
}
