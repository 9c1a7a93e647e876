//! Wake-ups: one connection per storage handle, opened by its first blocking call, `LISTEN`s on
//! the schema's channel; writes that make something ready or store a result `NOTIFY` it in their
//! transaction (delivered at commit). Blocked calls wait on a local generation counter that the
//! listener (and this handle's own writes) bump. A listener that connects (for the first time,
//! or again after its connection dropped) bumps the counter, so every blocked call looks again
//! (rescans) for what it may have missed.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::postgres::fallible_iterator::FallibleIterator;
use parking_lot::{Condvar, Mutex};

use super::schema::PgTarget;

/// How often a blocked call re-runs its query regardless (leases expire without a write).
pub(super) const RECHECK: Duration = Duration::from_millis(100);

/// How long the listener waits for a notification before checking its handle still exists.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// The channel writes notify: one per schema.
pub(super) fn channel(schema: &str) -> String {
    format!("huey_{schema}")
}

/// The generation counter blocked calls wait on.
#[derive(Default)]
pub(super) struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    pub(super) fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    pub(super) fn bump(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    /// Block until the generation moves past `seen`, the re-check interval passes or
    /// `deadline` comes.
    pub(super) fn wait(&self, seen: u64, deadline: Instant) {
        let until = deadline.min(Instant::now() + RECHECK);
        let mut g = self.generation.lock();
        while *g == seen {
            if self.changed.wait_until(&mut g, until).timed_out() {
                return;
            }
        }
    }
}

/// Start the listener thread; it ends soon after the last `Arc<Signal>` is dropped.
pub(super) fn start(target: PgTarget, signal: &Arc<Signal>) {
    let weak = Arc::downgrade(signal);
    let spawned = std::thread::Builder::new()
        .name("huey-pg-listen".into())
        .spawn(move || listen(target, weak));
    if let Err(e) = spawned {
        tracing::warn!("cannot start the postgres listener thread ({e}); waits will poll");
    }
}

fn listen(target: PgTarget, signal: Weak<Signal>) {
    let channel = channel(&target.schema);
    let mut pause = Duration::from_millis(50);
    loop {
        let Some(s) = signal.upgrade() else { return };
        drop(s);
        let mut client = match target.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("postgres listener cannot connect: {e}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")) {
            tracing::debug!("postgres LISTEN failed: {e}");
            std::thread::sleep(pause);
            continue;
        }
        pause = Duration::from_millis(50);
        // Anything written while we were not listening: everyone looks again.
        match signal.upgrade() {
            Some(s) => s.bump(),
            None => return,
        }
        loop {
            let next = client.notifications().timeout_iter(IDLE_CHECK).next();
            let Some(s) = signal.upgrade() else { return };
            match next {
                Ok(Some(_)) => s.bump(),
                Ok(None) => {
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!("postgres listener lost its connection: {e}");
                    break;
                }
            }
        }
    }
}
