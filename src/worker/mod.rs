//! Workers: where task code runs. Process workers are separate processes of the app's own
//! binary, spoken to over pipes ([`ipc`]); thread workers run in the supervisor's process;
//! async workers ([`runtime`], feature `async`) run many attempts at once as futures, in the
//! supervisor's process or inside a process worker started with a concurrency. All report to the
//! supervisor on one channel with the same events.

pub mod ipc;
pub mod process;
#[cfg(feature = "async")]
pub mod runtime;
#[cfg(not(feature = "async"))]
#[path = "runtime_off.rs"]
pub mod runtime;
#[cfg(feature = "async")]
mod stall;
pub mod thread;

use crate::failure::Failure;
use crate::message::Output;

/// What a worker tells the supervisor.
#[derive(Debug)]
pub enum WorkerEvent {
    /// Ready for work (process workers: their app is built).
    Ready { pid: u32 },
    /// An attempt finished.
    Done {
        job: u64,
        outcome: Result<Output, Failure>,
        rss_kib: u64,
    },
    /// The worker is gone; `status` says how, in words.
    Exited { status: String },
}

/// A worker event tagged with the slot and generation of the worker that sent it, so events
/// from a replaced worker are recognised and ignored.
#[derive(Debug)]
pub struct Tagged {
    pub slot: usize,
    pub gen: u64,
    pub event: WorkerEvent,
}

/// Where workers send their events (the supervisor's main loop); false once it is gone.
pub type EventSink = std::sync::Arc<dyn Fn(Tagged) -> bool + Send + Sync>;

/// Resident memory of this process in KiB (0 where unknown).
#[cfg(target_os = "linux")]
pub fn rss_kib() -> u64 {
    let page_kib = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4, |bytes| (bytes / 1024).max(1) as u64);
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page_kib)
        .unwrap_or(0)
}

/// Resident memory of this process in KiB: unknown (0) outside Linux, so `--max-memory`
/// never recycles a worker there.
#[cfg(not(target_os = "linux"))]
pub fn rss_kib() -> u64 {
    0
}
