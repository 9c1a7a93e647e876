//! The main loop's one wait: a single `poll` over the result pipes of the process workers and a
//! bell, a pipe that the other senders (the fetcher, thread and async workers, stop handles)
//! ring after putting their input on the channel.
//!
//! The bell rings only while the loop sleeps: the loop marks itself asleep before it looks at
//! the channel a last time, and a sender writes to the bell only if it is the one that takes
//! that mark away. So a busy loop costs its senders no system call, and an input sent between
//! the last look and the `poll` still wakes it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use super::pool::Pool;
use super::Input;
use crate::worker::Tagged;

/// Wakes the loop from its `poll`.
struct Bell {
    /// The loop is in (or about to enter) its `poll`.
    asleep: AtomicBool,
    /// Both ends non-blocking.
    r: File,
    w: File,
}

impl Bell {
    fn ring(&self) {
        if self.asleep.swap(false, Ordering::SeqCst) {
            // A full pipe is already readable: nothing is lost when this write is refused.
            let _ = (&self.w).write(&[1]);
        }
    }

    /// Empty the pipe (it holds one byte per ring since the loop last slept).
    fn clear(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.r).read(&mut buf), Ok(n) if n == buf.len()) {}
    }
}

/// The sending side of the loop's input: what the fetcher, thread and async workers and stop
/// handles hold.
#[derive(Clone)]
pub(super) struct Post {
    tx: Sender<Input>,
    bell: Arc<Bell>,
}

impl Post {
    /// Hand the loop an input, waking it if it sleeps. False once the loop is gone.
    pub fn send(&self, input: Input) -> bool {
        if self.tx.send(input).is_err() {
            return false;
        }
        self.bell.ring();
        true
    }
}

/// The receiving side, kept by the loop.
pub(super) struct Inbox {
    rx: Receiver<Input>,
    bell: Arc<Bell>,
    /// Scratch: which polled descriptors were ready, and the workers' events read.
    ready: Vec<bool>,
    events: Vec<Tagged>,
}

impl Inbox {
    /// A new inbox and the post that feeds it.
    pub fn new() -> std::io::Result<(Inbox, Post)> {
        let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let bell = Arc::new(Bell {
            asleep: AtomicBool::new(false),
            r: File::from(r),
            w: File::from(w),
        });
        let (tx, rx) = mpsc::channel();
        let inbox = Inbox {
            rx,
            bell: bell.clone(),
            ready: Vec::new(),
            events: Vec::new(),
        };
        Ok((inbox, Post { tx, bell }))
    }

    /// Wait up to `timeout` for input (none if some is already there), then take all there is:
    /// what was posted, and the events of every process worker whose pipe has something.
    pub fn wait(&mut self, pool: &mut Pool, timeout: Duration, out: &mut Vec<Input>) {
        self.bell.asleep.store(true, Ordering::SeqCst);
        out.extend(self.rx.try_iter());
        let timeout = if out.is_empty() {
            // Whole milliseconds, rounded up, so a short wait is a wait and not a spin.
            let ms = timeout.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        } else {
            PollTimeout::ZERO
        };
        self.ready.clear();
        {
            let mut fds: Vec<PollFd<'_>> = std::iter::once(self.bell.r.as_fd())
                .chain(pool.pipes())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            // An interrupted or failed poll reads as nothing ready; the loop comes back.
            let _ = poll(&mut fds, timeout);
            self.ready.extend(
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty())),
            );
        }
        self.bell.asleep.store(false, Ordering::SeqCst);
        if self.ready.first() == Some(&true) {
            self.bell.clear();
        }
        out.extend(self.rx.try_iter());
        if self.ready.len() > 1 {
            pool.read_pipes(&self.ready[1..], &mut self.events);
            out.extend(self.events.drain(..).map(Input::Worker));
        }
    }
}
