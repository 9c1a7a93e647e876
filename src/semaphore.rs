//! Fleet-wide semaphores: at most N holders of a name across every consumer of a storage.
//!
//! A semaphore of N permits is N lock keys in [`Ns::Locks`], `semaphore:NAME:0` to
//! `semaphore:NAME:N-1`. Taking a permit writes one of them with `put_if_empty` (only one writer
//! wins each key, so on every backend at most N holders live at once), holding `N:TOKEN` with a
//! random token; releasing deletes it only while it still holds that token. Every permit has a
//! TTL, so a holder that crashed (or was killed) gives its permit back by itself.
//!
//! A held permit is renewed while its holder lives, as a delivery's lease is: a thread of the
//! holder's gives it a fresh TTL every third of the TTL ([`crate::storage::Kv::renew_if`], only
//! while it still holds its token), so a task that runs longer than the TTL keeps its permit
//! and the cap holds. The TTL is how long a permit outlives a holder that died or hangs without
//! its process (killed, frozen), not how long a permit may be held.
//!
//! Permits are lock keys on purpose: `hueyd --flush-locks` and [`Huey::flush_locks`] break them
//! with the locks, and `hueyd locks` lists them.

use std::sync::mpsc;
use std::time::Duration;

use crate::app::Huey;
use crate::error::{Error, Result};
use crate::storage::Ns;

/// The prefix of the lock keys that hold permits.
pub(crate) const KEY_PREFIX: &str = "semaphore:";

/// A named semaphore: `app.semaphore("exports", 3, Duration::from_secs(300)).acquire()?`.
#[derive(Debug, Clone)]
pub struct Semaphore {
    app: Huey,
    name: String,
    permits: u32,
    ttl: Duration,
}

impl Semaphore {
    pub(crate) fn new(app: Huey, name: String, permits: u32, ttl: Duration) -> Semaphore {
        Semaphore {
            app,
            name,
            permits,
            ttl,
        }
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many holders it admits at once.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    fn key(&self, slot: u32) -> String {
        format!("{KEY_PREFIX}{}:{slot}", self.name)
    }

    /// Take a permit, or `Err(Error::NoPermit)` when all are held. The guard gives it back when
    /// dropped, and renews it while it is held; a permit whose holder died (its renewals
    /// stopped) expires by itself after the semaphore's TTL. Returned from a task with
    /// `?`, the error makes the attempt fail as `Locked` (the retry policy applies).
    pub fn acquire(&self) -> Result<Permit> {
        let token = format!("{}:{}", self.permits, crate::message::new_id());
        let storage = self.app.storage();
        // Start at a random slot so that contenders do not all race for slot 0.
        let start = (uuid::Uuid::new_v4().as_u128() % u128::from(self.permits.max(1))) as u32;
        for i in 0..self.permits {
            let key = self.key((start + i) % self.permits);
            if storage.put_if_empty(Ns::Locks, &key, token.as_bytes(), Some(self.ttl))? {
                let renewer = Renewer::start(&self.app, &key, &token, self.ttl);
                return Ok(Permit {
                    app: self.app.clone(),
                    key,
                    token,
                    released: false,
                    renewer,
                });
            }
        }
        Err(Error::NoPermit {
            name: self.name.clone(),
            permits: self.permits,
        })
    }

    /// Run `f` holding a permit.
    pub fn with_permit<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let permit = self.acquire()?;
        let out = f();
        permit.release()?;
        Ok(out)
    }

    /// How many permits are held now.
    pub fn held(&self) -> Result<u32> {
        let keys: Vec<String> = (0..self.permits).map(|i| self.key(i)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let held = self.app.storage().get_many(Ns::Locks, &refs)?;
        Ok(held.iter().filter(|v| v.is_some()).count() as u32)
    }

    /// Break every permit whoever holds it; returns how many were held.
    pub fn clear(&self) -> Result<u32> {
        let storage = self.app.storage();
        let mut n = 0;
        for i in 0..self.permits {
            if storage.take(Ns::Locks, &self.key(i))?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Renews a held permit every third of its TTL until stopped (see the module docs). Its
/// thread is not waited for: a renewal only ever extends the entry while it still holds the
/// permit's token, so one that runs after the permit was given back changes nothing.
#[derive(Debug)]
struct Renewer {
    stop: mpsc::Sender<()>,
}

impl Renewer {
    /// Start renewing; `None` (with an error logged) if no thread could be started: the permit
    /// then lasts its TTL.
    fn start(app: &Huey, key: &str, token: &str, ttl: Duration) -> Option<Renewer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (ttl / 3).max(Duration::from_millis(1));
        let name = key.to_string();
        let (app, key, token) = (app.clone(), key.to_string(), token.to_string());
        let spawned = std::thread::Builder::new()
            .name("huey-permit".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // Stopped, or the permit is gone.
                    _ => return,
                }
                match app
                    .storage()
                    .renew_if(Ns::Locks, &key, token.as_bytes(), ttl)
                {
                    Ok(true) => {}
                    // Given back meanwhile (stopped), or lost while held.
                    Ok(false) => {
                        if let Err(mpsc::TryRecvError::Empty) = stopped.try_recv() {
                            tracing::warn!(
                                "the permit {key:?} expired or was broken while held; \
                                 no longer renewed"
                            );
                        }
                        return;
                    }
                    // Tried again at the next turn, while the TTL still runs.
                    Err(e) => tracing::warn!("could not renew the permit {key:?}: {e}"),
                }
            });
        match spawned {
            Ok(_) => Some(Renewer { stop }),
            Err(e) => {
                tracing::error!("could not start renewing the permit {name:?}: {e}");
                None
            }
        }
    }

    /// Stop renewing (the thread ends at once, or after a renewal under way).
    fn stop(self) {
        drop(self.stop);
    }
}

/// A held permit, renewed while held; given back when dropped (or by [`Permit::release`]).
#[derive(Debug)]
pub struct Permit {
    app: Huey,
    key: String,
    token: String,
    released: bool,
    renewer: Option<Renewer>,
}

impl Permit {
    /// Give the permit back; returns whether it was still ours (false: it expired meanwhile,
    /// e.g. its renewals could not reach the storage for a whole TTL, or it was broken).
    pub fn release(mut self) -> Result<bool> {
        self.released = true;
        if let Some(r) = self.renewer.take() {
            r.stop();
        }
        self.app
            .storage()
            .delete_if(Ns::Locks, &self.key, self.token.as_bytes())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.stop();
        }
        if !self.released {
            if let Err(e) =
                self.app
                    .storage()
                    .delete_if(Ns::Locks, &self.key, self.token.as_bytes())
            {
                tracing::error!("could not give back the permit {:?}: {e}", self.key);
            }
        }
    }
}

/// The semaphores with a permit held now, from the lock namespace: `(name, held, permits)`,
/// by name.
pub fn held_semaphores(app: &Huey) -> Result<Vec<(String, u32, u32)>> {
    let mut out: Vec<(String, u32, u32)> = Vec::new();
    for (key, value) in app.storage().list(Ns::Locks)? {
        let Some(rest) = key.strip_prefix(KEY_PREFIX) else {
            continue;
        };
        let Some((name, _slot)) = rest.rsplit_once(':') else {
            continue;
        };
        let permits = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.split_once(':'))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0);
        match out.iter_mut().find(|(n, _, _)| n == name) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 = entry.2.max(permits);
            }
            None => out.push((name.to_string(), 1, permits)),
        }
    }
    out.sort();
    Ok(out)
}

impl Huey {
    /// A semaphore of `permits` holders shared by every consumer of this storage, each permit
    /// expiring `ttl` after it was taken (see [`crate::semaphore`]).
    pub fn semaphore(&self, name: impl Into<String>, permits: u32, ttl: Duration) -> Semaphore {
        Semaphore::new(self.clone(), name.into(), permits, ttl)
    }
}
