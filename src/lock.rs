//! Named locks shared by every consumer of a storage, and fixed-window rate limits.
//!
//! A lock is one key in [`Ns::Locks`] written with `put_if_empty` (so only one holder wins)
//! holding a random token; releasing deletes it only while it still holds that token, so a
//! holder whose lock expired (see [`TaskLock::ttl`]) and was taken by someone else cannot
//! release the new holder's lock. Unlike huey's locks, a lock may carry a TTL: a holder that
//! crashed cannot block the lock for ever.

use std::time::Duration;

use crate::app::Huey;
use crate::clock::{self, now_ms};
use crate::error::{Error, Result};
use crate::storage::Ns;

/// A named lock: `app.lock_task("reports").ttl(Duration::from_secs(60)).acquire()?`.
#[derive(Debug, Clone)]
pub struct TaskLock {
    app: Huey,
    name: String,
    ttl: Option<Duration>,
}

impl TaskLock {
    pub(crate) fn new(app: Huey, name: String) -> TaskLock {
        TaskLock {
            app,
            name,
            ttl: None,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Let the lock go by itself after `ttl` (a holder that crashed cannot block it for ever).
    pub fn ttl(mut self, ttl: Duration) -> TaskLock {
        self.ttl = Some(ttl);
        self
    }

    /// Take the lock, or `Err(Error::Locked)` when someone holds it. The guard releases it when
    /// dropped. Returned from a task with `?`, the error makes the attempt fail as `Locked`.
    pub fn acquire(&self) -> Result<LockGuard> {
        let token = crate::message::new_id();
        let storage = self.app.storage();
        if storage.put_if_empty(Ns::Locks, &self.name, token.as_bytes(), self.ttl)? {
            Ok(LockGuard {
                app: self.app.clone(),
                name: self.name.clone(),
                token,
                released: false,
            })
        } else {
            Err(Error::Locked(self.name.clone()))
        }
    }

    /// Run `f` holding the lock (huey's `with lock:`).
    pub fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let guard = self.acquire()?;
        let out = f();
        guard.release()?;
        Ok(out)
    }

    /// Whether someone holds the lock.
    pub fn is_locked(&self) -> Result<bool> {
        Ok(self.app.storage().get(Ns::Locks, &self.name)?.is_some())
    }

    /// Break the lock whoever holds it; returns whether it was held.
    pub fn clear(&self) -> Result<bool> {
        Ok(self.app.storage().take(Ns::Locks, &self.name)?.is_some())
    }
}

/// A held lock; released when dropped (or by [`LockGuard::release`]).
#[derive(Debug)]
pub struct LockGuard {
    app: Huey,
    name: String,
    token: String,
    released: bool,
}

impl LockGuard {
    /// Release the lock; returns whether it was still ours (false: it expired meanwhile).
    pub fn release(mut self) -> Result<bool> {
        self.released = true;
        self.app
            .storage()
            .delete_if(Ns::Locks, &self.name, self.token.as_bytes())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) =
                self.app
                    .storage()
                    .delete_if(Ns::Locks, &self.name, self.token.as_bytes())
            {
                tracing::error!("could not release lock {:?}: {e}", self.name);
            }
        }
    }
}

/// Count one use of the rate limit `name` (at most `limit` per `period`, fixed windows aligned
/// on the epoch, shared by every consumer of the storage). Over the limit:
/// `Err(Error::RateLimited)` with the time until the next window.
/// The counter of the window of rate limit `name` at `now`, and how long it lives: it
/// outlives its window a little, then disappears by itself.
fn window_key(name: &str, period: Duration, now: u64) -> (String, Duration) {
    let period_ms = clock::ms(period).max(1);
    let window = now / period_ms;
    (
        format!("rate:{name}:{window}"),
        Duration::from_millis(period_ms.saturating_mul(2)),
    )
}

pub(crate) fn rate_limit(app: &Huey, name: &str, limit: u64, period: Duration) -> Result<()> {
    let period_ms = clock::ms(period).max(1);
    let now = now_ms();
    let window = now / period_ms;
    let (key, ttl) = window_key(name, period, now);
    let n = app.storage().incr_expiring(&key, 1, ttl)?;
    if n > limit as i64 {
        let next = (window + 1) * period_ms;
        return Err(Error::RateLimited {
            name: name.to_string(),
            retry_in: Duration::from_millis(next.saturating_sub(now).max(1)),
        });
    }
    Ok(())
}

impl Huey {
    /// A named lock shared by every consumer of this storage (see [`crate::lock`]).
    pub fn lock_task(&self, name: impl Into<String>) -> crate::lock::TaskLock {
        crate::lock::TaskLock::new(self.clone(), name.into())
    }

    /// Break every lock (as `hueyd --flush-locks` does at start).
    pub fn flush_locks(&self) -> Result<()> {
        self.storage().flush(crate::storage::Flush {
            locks: true,
            ..Default::default()
        })
    }

    /// Count one use of the rate limit `name`: at most `limit` per `period` (fixed windows,
    /// shared by every consumer of this storage). Over the limit: `Err(Error::RateLimited)`,
    /// which, returned from a task with `?`, reschedules it for the next window without using
    /// up a retry.
    pub fn rate_limit(&self, name: &str, limit: u64, period: Duration) -> Result<()> {
        crate::lock::rate_limit(self, name, limit, period)
    }

    /// How many uses the rate limit `name` of this `period` has counted in the current window
    /// (huey's `RateLimit.current_usage()`); over-the-limit attempts are counted too.
    pub fn rate_limit_usage(&self, name: &str, period: Duration) -> Result<u64> {
        let (key, ttl) = window_key(name, period, now_ms());
        let n = self.storage().read_expiring(&[key], ttl)?;
        Ok(n.first().copied().unwrap_or(0).max(0) as u64)
    }

    /// Start the current window of the rate limit `name` of this `period` again from zero
    /// (huey's `RateLimit.reset()`): uses counted after the reset still count.
    pub fn rate_limit_reset(&self, name: &str, period: Duration) -> Result<()> {
        let (key, ttl) = window_key(name, period, now_ms());
        let n = self
            .storage()
            .read_expiring(std::slice::from_ref(&key), ttl)?;
        // Taking away what was read keeps any use counted since the read.
        let used = n.first().copied().unwrap_or(0);
        if used != 0 {
            self.storage().incr_expiring(&key, -used, ttl)?;
        }
        Ok(())
    }
}
