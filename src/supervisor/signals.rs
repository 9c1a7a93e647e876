//! Signals: handlers only count arrivals (a signal-hook thread does the counting); the main
//! loop reads the counts and acts.
//!
//! INT/TERM: the first stops gracefully, a second stops at once. HUP: restart the workers
//! gracefully. USR1: reopen the log file. TTIN/TTOU: one worker more or fewer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1};

const WATCHED: [i32; 6] = [SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU];

/// Counts of signals received since start.
pub struct Signals {
    counts: Arc<[AtomicUsize; 6]>,
    seen: [usize; 6],
    handle: signal_hook::iterator::Handle,
}

/// What arrived since the main loop last asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Stop signals (INT or TERM) received in all: 1 stops gracefully, 2 or more at once.
    pub stops: usize,
    pub reload: bool,
    pub reopen_log: bool,
    pub add_workers: usize,
    pub remove_workers: usize,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> std::io::Result<Signals> {
        let mut it = signal_hook::iterator::Signals::new(WATCHED)?;
        let handle = it.handle();
        let counts: Arc<[AtomicUsize; 6]> = Arc::new(Default::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("huey-signals".into())
            .spawn(move || {
                for sig in it.forever() {
                    if let Some(i) = WATCHED.iter().position(|&s| s == sig) {
                        c[i].fetch_add(1, Ordering::SeqCst);
                    }
                }
            })?;
        Ok(Signals {
            counts,
            seen: [0; 6],
            handle,
        })
    }

    /// Signals since the last call.
    pub fn poll(&mut self) -> Pending {
        let now: [usize; 6] = std::array::from_fn(|i| self.counts[i].load(Ordering::SeqCst));
        let d: [usize; 6] = std::array::from_fn(|i| now[i] - self.seen[i]);
        self.seen = now;
        Pending {
            stops: now[0] + now[1],
            reload: d[2] > 0,
            reopen_log: d[3] > 0,
            add_workers: d[4],
            remove_workers: d[5],
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.handle.close();
    }
}
