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

/// Resident memory of this process in KiB (0 where unknown). Read after every attempt of a
/// process worker, so it costs one `pread` of `/proc/self/statm`, kept open (opening, reading
/// and closing it each time was five system calls per task). A worker forked from a process
/// that had opened it reads its own figures anyway: `/proc/self` is resolved at open, so the
/// file is opened again when the pid it was opened by is not ours.
#[cfg(target_os = "linux")]
pub fn rss_kib() -> u64 {
    use std::os::unix::fs::FileExt;
    static STATM: parking_lot::Mutex<Option<(u32, std::fs::File)>> = parking_lot::Mutex::new(None);
    static PAGE_KIB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let page_kib = *PAGE_KIB.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4, |bytes| (bytes / 1024).max(1) as u64)
    });
    let pid = std::process::id();
    let mut statm = STATM.lock();
    if statm.as_ref().is_none_or(|(by, _)| *by != pid) {
        *statm = std::fs::File::open("/proc/self/statm")
            .ok()
            .map(|f| (pid, f));
    }
    let Some((_, file)) = statm.as_ref() else {
        return 0;
    };
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
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
