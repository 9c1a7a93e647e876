//! Process workers: spawning them (fork + exec of the app's own binary in a hidden worker
//! mode), the worker's side of the pipe protocol, and describing how a worker died.
//!
//! This is the one module with `unsafe`: the `pre_exec` hook that runs in the forked child
//! before `exec`, adopting the inherited pipe descriptors in the worker, removing the worker
//! marker from its environment, and opening a pidfd. The supervisor has threads, so the child
//! of its `fork` only calls async-signal-safe functions before `exec` replaces it: `fcntl`,
//! `dup2`, `prctl`, `getppid`, `signal` and `_exit`. No Rust code that allocates or takes locks
//! runs between `fork` and `exec`.
//!
//! Protocol: the worker reads [`ToWorker`] frames on fd 3 (a `Setup` naming the storage first,
//! then attempts to run) and writes [`FromWorker`] frames on fd 4. Its stdout and stderr are
//! the supervisor's, so whatever task code prints cannot corrupt the protocol. It dies with the
//! supervisor (`PR_SET_PDEATHSIG`, and end of file on fd 3).
//!
//! The supervisor never blocks on a worker: its ends of both pipes are non-blocking. Frames to
//! the worker wait in a buffer of the handle until the pipe takes them
//! ([`ProcessWorker::flush`]); frames from it are read by the supervisor's loop when `poll`
//! finds its [`ResultPipe`] readable, with no thread per worker in between. A worker's death is
//! seen from the process itself: a watcher thread waits on its pidfd and then writes an exit
//! marker into the result pipe, so a task's child that keeps the pipe open cannot hide it.
//!
//! Task code runs in a clean process context: the protocol descriptors are close-on-exec in
//! the worker, the worker marker is gone from its environment before the app is built, and
//! the signals a worker does not act on are caught (not ignored), so a task's subprocesses
//! start with the default dispositions.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{pipe2, Pid};

use super::ipc::{
    read_frame, write_frame, FrameError, FromWorker, ToWorker, ToWorkerRef, EXIT_MARKER, MAX_FRAME,
};
use super::rss_kib;
use crate::app::Huey;
use crate::error::Result;
use crate::failure::{Failure, FailureKind};
use crate::message::Message;
use crate::storage::StorageUrl;

mod result_pipe;
pub use result_pipe::ResultPipe;

/// Set in a worker's environment: the process runs the worker loop instead of its `main`.
pub const WORKER_ENV: &str = "HUEY_WORKER";
const FD_IN: i32 = 3;
const FD_OUT: i32 = 4;

/// The supervisor's handle on one worker process.
pub struct ProcessWorker {
    pid: u32,
    /// The non-blocking write end of the worker's task pipe (closed by `stop`).
    to_worker: Option<File>,
    /// Frames not yet taken by the pipe, from `written` on.
    outbound: Vec<u8>,
    written: usize,
    /// When a frame last came from it ([`clock_ms`]), kept by its [`ResultPipe`].
    heard: Arc<AtomicU64>,
}

/// Milliseconds on a monotonic clock of this process, for times shared between threads.
fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// How a process worker is set up (sent in its first frame).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Attempts it runs at once (over 1: as futures, see [`super::runtime`]).
    pub concurrency: usize,
    /// How often it tells it is alive (never if zero).
    pub heartbeat: Duration,
    /// Whether it reports its resident memory with each answer (only a memory limit reads it).
    pub measure_memory: bool,
}

/// Whether this worker process reports its resident memory (its setup frame said so).
static MEASURE_MEMORY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This worker's resident memory in KiB for an answer, or 0 when nobody asked for it: reading
/// `/proc/self/statm` is a system call per task that a worker without a memory limit skips.
pub(super) fn reported_rss_kib() -> u64 {
    if MEASURE_MEMORY.load(Ordering::Relaxed) {
        rss_kib()
    } else {
        0
    }
}

impl ProcessWorker {
    /// Start `exe` as a worker for a slot, on the storage at `storage_url`. Returns its handle
    /// and the reading end of its result pipe, which the supervisor's loop reads (see
    /// [`ResultPipe`]) until the worker has exited. Once ready, the worker sends a heartbeat
    /// every `settings.heartbeat` (never if zero).
    pub fn spawn(
        exe: &Path,
        storage_url: &StorageUrl,
        settings: Settings,
        slot: usize,
        gen: u64,
    ) -> std::io::Result<(ProcessWorker, ResultPipe)> {
        let (task_r, task_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
        // The parent's ends only (each end is its own open file): the supervisor never waits
        // on a full pipe nor on an empty one; the worker's ends stay blocking.
        fcntl(&task_w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        fcntl(&out_r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let mut cmd = Command::new(exe);
        cmd.env(WORKER_ENV, "1")
            .envs(crate::logging::child_env())
            .stdin(Stdio::null())
            // Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
            // decides how its workers stop.
            .process_group(0);
        let (in_fd, out_fd) = (task_r.as_raw_fd(), out_w.as_raw_fd());
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe libc calls on integers it captured by value; it allocates nothing
        // and touches no locks. The descriptors are valid: `task_r` and `out_w` are alive until
        // after `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                // Move both ends above the target numbers first so neither dup2 clobbers the
                // other, then place them on 3 and 4 (dup2 clears close-on-exec on the copies).
                let a = libc::fcntl(in_fd, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(out_fd, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, FD_IN) < 0 || libc::dup2(b, FD_OUT) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Linux kills the worker when the supervisor dies; elsewhere the worker
                // notices instead, when its task pipe ends.
                #[cfg(target_os = "linux")]
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // Only the supervisor stops workers (by closing their pipe or killing them);
                // a group-wide SIGTERM from an init system must not cut tasks short. Ignored
                // until the worker catches them (`worker_main`), so that a signal arriving
                // during exec does not kill it.
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        // The watcher keeps a write end of the result pipe for its exit marker.
        if let Some(pidfd) = pidfd_open(pid) {
            let marker = File::from(out_w.try_clone()?);
            std::thread::Builder::new()
                .name(format!("huey-watch-{pid}"))
                .stack_size(64 << 10)
                .spawn(move || watch_exit(pidfd, marker))?;
        }
        drop((task_r, out_w));
        let heard = Arc::new(AtomicU64::new(clock_ms()));
        let pipe = ResultPipe::new(slot, gen, File::from(out_r), child, heard.clone());
        let mut worker = ProcessWorker {
            pid,
            to_worker: Some(File::from(task_w)),
            outbound: Vec::new(),
            written: 0,
            heard,
        };
        let setup = ToWorker::Setup {
            storage_url: storage_url.to_string(),
            concurrency: u32::try_from(settings.concurrency).unwrap_or(u32::MAX),
            heartbeat_ms: settings.heartbeat.as_millis() as u64,
            measure_memory: settings.measure_memory,
        };
        // A URL is far below the frame limit.
        let _ = write_frame(&mut worker.outbound, &setup);
        worker.flush();
        Ok((worker, pipe))
    }

    /// The worker's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How long since its last frame (a heartbeat, an answer, or its readiness).
    pub fn silent_for(&self) -> Duration {
        let last = self.heard.load(Ordering::Relaxed);
        Duration::from_millis(clock_ms().saturating_sub(last))
    }

    /// Queue an attempt for it (buffered until [`ProcessWorker::flush`]).
    pub fn send(&mut self, job: u64, payload: &[u8]) -> Result<(), FrameError> {
        if self.to_worker.is_none() {
            return Err(FrameError::Io(std::io::ErrorKind::BrokenPipe.into()));
        }
        let payload = serde_bytes::Bytes::new(payload);
        write_frame(&mut self.outbound, &ToWorkerRef::Run { job, payload })
    }

    /// Queue a request to cancel a running attempt (a concurrent worker drops its future).
    pub fn cancel(&mut self, job: u64) -> Result<(), FrameError> {
        if self.to_worker.is_none() {
            return Err(FrameError::Io(std::io::ErrorKind::BrokenPipe.into()));
        }
        write_frame(&mut self.outbound, &ToWorker::Cancel { job })
    }

    /// Write what was queued, in one system call where the pipe has room, never waiting for
    /// room. Returns how many bytes are left for a later call (0 once all are written).
    pub fn flush(&mut self) -> usize {
        let Some(w) = &mut self.to_worker else {
            return 0;
        };
        while self.written < self.outbound.len() {
            match w.write(&self.outbound[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The worker is gone; its result pipe reports the exit.
                Err(_) => self.written = self.outbound.len(),
            }
        }
        if self.written == self.outbound.len() {
            self.outbound.clear();
            self.written = 0;
        } else if self.written > self.outbound.len() / 2 {
            self.outbound.drain(..self.written);
            self.written = 0;
        }
        self.outbound.len() - self.written
    }

    /// Bytes queued for the worker that the pipe has not taken yet.
    pub fn unsent(&self) -> usize {
        self.outbound.len() - self.written
    }

    /// Close its pipe: it exits after its current attempt (and its shutdown hooks).
    pub fn stop(&mut self) {
        self.to_worker = None;
    }

    /// SIGKILL it and whatever its task started in its process group (the worker leads one),
    /// so a timed-out or revoked task leaves no orphans behind (its result pipe reaps the
    /// worker and reports the exit).
    pub fn kill(&mut self) {
        self.to_worker = None;
        kill_group(self.pid);
    }
}

/// SIGKILL a worker and its process group: the worker leads one, so this also ends what its
/// task started there.
pub(crate) fn kill_group(pid: u32) {
    let pid = Pid::from_raw(pid as i32);
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
}

/// A pidfd for `pid`, which polls readable once the process has exited (`None` where the
/// kernel has none: then end of file on the pipe is the only sign of its death).
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; a new
    // descriptor is owned by no one else, so wrapping it in an `OwnedFd` is sound.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd as i32))
    }
}

/// No pidfd outside Linux: the supervisor learns of the worker's exit from the end of its pipe.
#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<OwnedFd> {
    None
}

/// The watcher thread: waits (idle) for the worker process to exit, then writes the exit
/// marker into its result pipe, after everything the worker wrote. The supervisor stops reading there even
/// if a child of a task still holds the pipe open, so no end of file ever comes.
fn watch_exit(pidfd: OwnedFd, mut marker: File) {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    while let Err(e) = poll(&mut fds, PollTimeout::NONE) {
        if e != nix::errno::Errno::EINTR {
            return; // the pipe's end of file stays the sign of its death
        }
    }
    // Fails only once the pipe's reading end is gone, when no one needs the marker.
    let _ = marker.write_all(&EXIT_MARKER);
}

/// A child's exit status in words: "exited with status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(s: ExitStatus) -> String {
    if let Some(code) = s.code() {
        return format!("exited with status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown");
            let core = if s.core_dumped() { ", core dumped" } else { "" };
            format!("killed by signal {sig} ({name}{core})")
        }
        None => format!("ended ({s})"),
    }
}

/// Whether this process was started as a worker. The marker is taken out of the environment
/// at once, so no subprocess of task code inherits it (and turns into a worker); call this
/// first thing in `main`, while the process has one thread.
pub fn is_worker() -> bool {
    static WORKER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKER.get_or_init(|| {
        let set = std::env::var_os(WORKER_ENV).is_some();
        if set {
            std::env::remove_var(WORKER_ENV);
        }
        set
    })
}

/// Whether `fd` is open and a pipe (through `/dev/fd`, which Linux and the BSDs provide).
fn is_pipe(fd: i32) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(format!("/dev/fd/{fd}")).is_ok_and(|m| m.file_type().is_fifo())
}

/// Make the worker's process context clean for task code: the protocol descriptors close on
/// exec (a task's subprocess neither reads the worker's tasks nor keeps its result pipe open),
/// and the signals the supervisor set to ignored are caught instead: a worker still goes on
/// through a group-wide SIGTERM, but exec resets caught signals to their defaults, so a task's
/// subprocesses can be stopped.
fn clean_context(protocol: [&File; 2]) -> std::io::Result<()> {
    for fd in protocol {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
        signal_hook::flag::register(sig, Arc::new(AtomicBool::new(false)))?;
    }
    Ok(())
}

/// The worker's side: read the storage URL on fd 3 and build the app with `build`, then read
/// attempts, run them and answer on fd 4, until end of file. Returns the process exit code.
pub fn worker_main(build: impl FnOnce(StorageUrl) -> Result<Huey>) -> i32 {
    if ![FD_IN, FD_OUT].iter().all(|&fd| is_pipe(fd)) {
        eprintln!(
            "{WORKER_ENV} is set, but this process was not started by a supervisor (fds {FD_IN} \
             and {FD_OUT} are not its pipes): unset {WORKER_ENV} to run the command line"
        );
        return 2;
    }
    // SAFETY: the supervisor placed the two pipe ends on fds 3 and 4 before exec (see
    // `spawn`), and both were just checked to be pipes; nothing else in this process owns
    // them, so adopting them is sound.
    let (input, output) = unsafe { (File::from_raw_fd(FD_IN), File::from_raw_fd(FD_OUT)) };
    if let Err(e) = clean_context([&input, &output]) {
        eprintln!("huey worker {}: {e}", std::process::id());
        return 3;
    }
    crate::logging::init_worker_logging();
    let mut input = BufReader::new(input);
    let mut output = SharedOutput(Arc::new(Mutex::new(BufWriter::new(output))));
    let pid = std::process::id();
    let (url, concurrency, heartbeat) = match read_frame::<ToWorker>(&mut input) {
        Ok(Some(ToWorker::Setup {
            storage_url,
            concurrency,
            heartbeat_ms,
            measure_memory,
        })) => {
            MEASURE_MEMORY.store(measure_memory, Ordering::Relaxed);
            (
                storage_url.parse::<StorageUrl>(),
                concurrency as usize,
                Duration::from_millis(heartbeat_ms),
            )
        }
        Ok(None) => return 0,
        Ok(Some(other)) => {
            eprintln!("huey worker {pid}: expected the setup frame first, got {other:?}");
            return 3;
        }
        Err(e) => {
            eprintln!("huey worker {pid}: {e}");
            return 3;
        }
    };
    let app = match url.and_then(build) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("huey worker {pid}: could not start: {e}");
            return 3;
        }
    };
    app.run_startup_hooks();
    let ready = FromWorker::Ready {
        pid: std::process::id(),
    };
    if write_frame(&mut output, &ready)
        .and_then(|()| output.flush().map_err(FrameError::from))
        .is_err()
    {
        return 1;
    }
    if !heartbeat.is_zero() {
        let out = output.clone();
        let beating = std::thread::Builder::new()
            .name("huey-heartbeat".into())
            .stack_size(64 << 10)
            .spawn(move || beat(out, heartbeat));
        if let Err(e) = beating {
            eprintln!("huey worker {pid}: could not start its heartbeat: {e}");
            return 3;
        }
    }
    if concurrency > 1 {
        return super::runtime::serve(&app, input, output, concurrency);
    }
    loop {
        let (job, payload) = match read_frame::<ToWorker>(&mut input) {
            Ok(Some(ToWorker::Run { job, payload })) => (job, payload),
            // Only concurrent workers cancel; this one's attempt is never running when it
            // reads the frame.
            Ok(Some(ToWorker::Cancel { .. })) => continue,
            Ok(Some(ToWorker::Setup { .. })) => {
                eprintln!("huey worker {pid}: a second setup frame");
                return 3;
            }
            Ok(None) => {
                app.run_shutdown_hooks();
                return 0;
            }
            Err(e) => {
                eprintln!("huey worker {}: {e}", std::process::id());
                return 3;
            }
        };
        let outcome = match Message::decode(&payload) {
            Ok(msg) => tracing::info_span!("task", id = %msg.id, name = %msg.task)
                .in_scope(|| app.run_attempt(&msg)),
            Err(e) => Err(Failure::new(FailureKind::Undecodable, e.to_string())),
        };
        // Answer before starting the next attempt: the supervisor times the running attempt
        // from this answer, so holding it back behind a long task would be wrong.
        if answer(&mut output, job, outcome).is_err() {
            return 1;
        }
    }
}

/// The worker's result pipe, shared by the threads that write on it (answers, heartbeats):
/// each frame goes out whole, under the lock, since [`write_frame`] hands it over in one
/// `write_all`.
#[derive(Clone)]
struct SharedOutput(Arc<Mutex<BufWriter<File>>>);

impl SharedOutput {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for SharedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

/// The heartbeat thread: a frame every `every`, until the pipe is gone. Any stop of the whole
/// process (SIGSTOP, a debugger) silences it, which the supervisor takes as a frozen worker.
fn beat(mut out: SharedOutput, every: Duration) {
    loop {
        std::thread::sleep(every);
        let sent = write_frame(&mut out, &FromWorker::Heartbeat)
            .and_then(|()| out.flush().map_err(FrameError::from));
        if sent.is_err() {
            return;
        }
    }
}

/// Send an attempt's outcome. A result too large for a frame (nothing of it is written) is
/// answered as a failure that says so, instead of killing the worker.
fn answer(
    output: &mut impl Write,
    job: u64,
    outcome: std::result::Result<crate::message::Output, Failure>,
) -> std::result::Result<(), FrameError> {
    write_answer(output, job, outcome, reported_rss_kib())?;
    output.flush().map_err(FrameError::from)
}

/// Write an attempt's outcome, with the worker's resident memory (`rss_kib`), without flushing.
pub(super) fn write_answer(
    output: &mut impl Write,
    job: u64,
    outcome: std::result::Result<crate::message::Output, Failure>,
    rss_kib: u64,
) -> std::result::Result<(), FrameError> {
    let done = FromWorker::Done {
        job,
        outcome,
        rss_kib,
    };
    match write_frame(output, &done) {
        Err(FrameError::TooLarge(n)) => {
            let f = Failure::new(
                FailureKind::Error,
                format!("its result is {n} bytes encoded, over the {MAX_FRAME}-byte limit of a worker's answer"),
            );
            let failed = FromWorker::Done {
                job,
                outcome: Err(f),
                rss_kib,
            };
            write_frame(output, &failed)
        }
        other => other,
    }
}
