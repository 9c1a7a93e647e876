//! The command task, `huey.command`: runs a program as a task, for people who do not write
//! Rust (`hueyd enqueue --command -- /usr/bin/backup.sh --full`).
//!
//! Every binary built on [`crate::cli::main`] registers it, but it refuses to run unless the
//! consumer was started with `--allow-commands` (which sets [`ALLOW_ENV`] for its workers):
//! anyone who can write to the queue could otherwise run programs as the consumer's user.
//!
//! The program runs without a shell, in a process group of its own, with stdin closed. Its
//! result is a [`CommandOutput`]: the exit status and the last [`TAIL_BYTES`] of stdout and
//! stderr. A non-zero exit (or death by a signal, status 128 + signal) is a failure whose
//! message is that same record as JSON, so the retry policy applies. With a timeout, the whole
//! process group is killed [`KILL_MARGIN`] before the attempt's deadline. Once the program has
//! ended its group is killed too, and its output is read for at most [`DRAIN_GRACE`] more: a
//! process that left the group with the pipes open cannot keep the task running.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::app::{Huey, TaskContext};
use crate::error::Result;

/// The task name.
pub const TASK: &str = "huey.command";

/// How much of the end of stdout and of stderr a result keeps.
pub const TAIL_BYTES: usize = 64 * 1024;

/// Set to `1` by `--allow-commands` (inherited by process workers).
pub const ALLOW_ENV: &str = "HUEY_ALLOW_COMMANDS";

/// How long before the attempt's deadline the process group is killed.
pub const KILL_MARGIN: Duration = Duration::from_millis(200);

/// How long the output pipes are still read once the program has ended and its process group
/// was killed. A process that left the group (a daemon that called `setsid`) and kept the pipes
/// open does not hold the task beyond it; what it writes later is not in the result.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// The program (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit status (128 + the signal for a program killed by one).
    pub status: i32,
    /// The last [`TAIL_BYTES`] of its stdout (lossy UTF-8).
    pub stdout: String,
    /// The last [`TAIL_BYTES`] of its stderr (lossy UTF-8).
    pub stderr: String,
}

/// Let this process (and the workers it starts) run command tasks.
pub fn allow() {
    std::env::set_var(ALLOW_ENV, "1");
}

fn allowed() -> bool {
    std::env::var(ALLOW_ENV).is_ok_and(|v| v == "1")
}

/// Register `huey.command` on `app` (nothing if it is there already).
pub fn register(app: &Huey) -> Result<()> {
    if app.task_def(TASK).is_none() {
        app.task(TASK).register_with_context(run)?;
    }
    Ok(())
}

/// Read a pipe to its end (or until `stop` is set), keeping the last [`TAIL_BYTES`]. The pipe
/// is polled, so a reader whose writer never closes it (a process that left the program's
/// group, such as a daemon that called `setsid`) still ends when told to.
fn tail<P>(pipe: Option<P>, stop: Arc<AtomicBool>) -> JoinHandle<Vec<u8>>
where
    P: Read + AsFd + Send + 'static,
{
    use nix::poll::{poll, PollFd, PollFlags};
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(mut pipe) = pipe else { return kept };
        let mut buf = [0u8; 8192];
        while !stop.load(Ordering::SeqCst) {
            let ready = {
                let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, 50u16) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(_) => break,
                }
            };
            if !ready {
                continue;
            }
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => kept.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if kept.len() > 2 * TAIL_BYTES {
                kept.drain(..kept.len() - TAIL_BYTES);
            }
        }
        if kept.len() > TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
        kept
    })
}

/// The output read from a pipe: its reader is given until `by` to reach the pipe's end, then
/// told to stop.
fn collect(reader: JoinHandle<Vec<u8>>, stop: &AtomicBool, by: Instant) -> String {
    while !reader.is_finished() && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned()
}

fn kill_group(pid: u32) {
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

fn run(spec: CommandSpec, ctx: &TaskContext) -> std::result::Result<CommandOutput, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    if !allowed() {
        return Err(
            "command tasks are off: start the consumer with --allow-commands to run them".into(),
        );
    }
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", spec.program))?;
    let stop = Arc::new(AtomicBool::new(false));
    let out = tail(child.stdout.take(), stop.clone());
    let err = tail(child.stderr.take(), stop.clone());
    let pid = child.id();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => {
                kill_group(pid);
                stop.store(true, Ordering::SeqCst);
                return Err(format!("waiting for {:?}: {e}", spec.program));
            }
        }
        if ctx.time_remaining().is_some_and(|t| t <= KILL_MARGIN) {
            timed_out = true;
            kill_group(pid);
            match child.wait() {
                Ok(s) => break s,
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(format!("waiting for {:?}: {e}", spec.program));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The group may have children still holding the pipes: they go with it. A process that
    // left the group may hold them for ever: what it writes after a short grace is not read.
    kill_group(pid);
    let grace = ctx
        .time_remaining()
        .map_or(DRAIN_GRACE, |t| (t / 2).min(DRAIN_GRACE));
    let by = Instant::now() + grace;
    let output = CommandOutput {
        status: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        stdout: collect(out, &stop, by),
        stderr: collect(err, &stop, by),
    };
    if timed_out {
        return Err(format!(
            "timed out: process group killed; {}",
            serde_json::to_string(&output).unwrap_or_default()
        ));
    }
    if output.status != 0 {
        return Err(serde_json::to_string(&output).unwrap_or_default());
    }
    Ok(output)
}
