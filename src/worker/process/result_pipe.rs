//! The supervisor's end of a worker's result pipe: read by the supervisor's loop when `poll`
//! finds it readable, turned into events, and ended by the worker's exit.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{clock_ms, describe_exit, kill_group};
use crate::worker::ipc::{FrameError, FromWorker, MAX_FRAME};
use crate::worker::{Tagged, WorkerEvent};

/// Bytes read from a result pipe at a time (a pipe's capacity on Linux): the buffer a
/// [`ResultPipe`] starts with, grown only for a frame larger than it.
const READ_CHUNK: usize = 64 << 10;
/// The most bytes taken from one pipe in one turn of the supervisor's loop, so that a worker
/// writing without pause cannot hold the loop (the rest is read on the next turn).
const READ_PER_TURN: usize = 1 << 20;

/// The supervisor's end of a worker's result pipe, read by the supervisor's loop when `poll`
/// finds it readable: frames become events tagged with the worker's slot and generation, and
/// the exit marker (or end of file) ends it, with the worker reaped and an `Exited` event last.
/// It outlives the slot's [`ProcessWorker`] (a stopped worker runs its shutdown hooks first),
/// so it is kept until [`ResultPipe::read`] says the worker is gone.
pub struct ResultPipe {
    slot: usize,
    gen: u64,
    /// Non-blocking.
    file: File,
    /// What was read and not parsed yet is `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// `None` once reaped.
    child: Option<Child>,
    heard: Arc<AtomicU64>,
    /// The worker broke the protocol and was killed: what it writes until its exit is ignored,
    /// and its `Exited` event says why.
    problem: Option<String>,
}

impl ResultPipe {
    /// The reading end `file` (non-blocking) of the result pipe of `child`, the worker of a
    /// slot's generation; `heard` is set to the time of each frame that comes.
    pub(super) fn new(
        slot: usize,
        gen: u64,
        file: File,
        child: Child,
        heard: Arc<AtomicU64>,
    ) -> ResultPipe {
        ResultPipe {
            slot,
            gen,
            file,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            child: Some(child),
            heard,
            problem: None,
        }
    }

    /// The descriptor to poll for reading.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Read what the pipe holds now (never waiting) and append its events to `out`. Returns
    /// true once the worker is gone and reaped: `out` then ends with its `Exited` event, and
    /// this pipe is done with.
    pub fn read(&mut self, out: &mut Vec<Tagged>) -> bool {
        let mut taken = 0;
        let mut heard = false;
        let ended = loop {
            if self.end == self.buf.len() {
                self.make_room(0);
            }
            let n = match (&self.file).read(&mut self.buf[self.end..]) {
                Ok(0) => break true,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) => {
                    self.broken(format!("its result pipe failed: {e}"));
                    break true;
                }
            };
            let asked = self.buf.len() - self.end;
            self.end += n;
            taken += n;
            if self.problem.is_some() {
                // Nothing more from it counts; only its exit is awaited.
                (self.start, self.end) = (0, 0);
                if self.exited() {
                    break true;
                }
            } else {
                match self.parse(out) {
                    Parsed::Frames(any) => heard |= any,
                    Parsed::ExitMarker => break true,
                }
            }
            // A read that did not fill the space it was given emptied the pipe: poll says when
            // more comes, without another read to learn that it is empty.
            if n < asked || taken >= READ_PER_TURN {
                break false;
            }
        };
        if heard {
            self.heard.store(clock_ms(), Ordering::Relaxed);
        }
        if ended {
            let status = self.reap();
            out.push(self.tagged(WorkerEvent::Exited { status }));
        }
        ended
    }

    fn tagged(&self, event: WorkerEvent) -> Tagged {
        Tagged {
            slot: self.slot,
            gen: self.gen,
            event,
        }
    }

    /// Turn the whole frames read into events; what is left of a frame waits for more bytes.
    fn parse(&mut self, out: &mut Vec<Tagged>) -> Parsed {
        let mut any = false;
        while self.end - self.start >= 4 {
            let head: [u8; 4] = self.buf[self.start..self.start + 4]
                .try_into()
                .unwrap_or_default();
            let len = u32::from_le_bytes(head) as usize;
            if len == 0 {
                // The watcher writes the marker only once the process is gone; from a live
                // worker it is a broken protocol like any other.
                if self.exited() {
                    return Parsed::ExitMarker;
                }
                self.broken(format!("protocol error: {}", FrameError::Empty));
                return Parsed::Frames(any);
            }
            if len > MAX_FRAME {
                self.broken(format!("protocol error: {}", FrameError::TooLarge(len)));
                return Parsed::Frames(any);
            }
            if self.end - self.start < 4 + len {
                self.make_room(4 + len);
                break;
            }
            let body = &self.buf[self.start + 4..self.start + 4 + len];
            let frame = postcard::from_bytes::<FromWorker>(body);
            self.start += 4 + len;
            any = true;
            let event = match frame {
                Ok(FromWorker::Heartbeat) => continue,
                Ok(FromWorker::Ready { pid }) => WorkerEvent::Ready { pid },
                Ok(FromWorker::Done {
                    job,
                    outcome,
                    rss_kib,
                }) => WorkerEvent::Done {
                    job,
                    outcome,
                    rss_kib,
                },
                Err(e) => {
                    let e = FrameError::Corrupt(e.to_string());
                    self.broken(format!("protocol error: {e}"));
                    return Parsed::Frames(any);
                }
            };
            out.push(self.tagged(event));
        }
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            // A buffer grown for a large frame goes back to its size once that frame is
            // taken: many workers' pipes would otherwise each keep their largest frame's
            // worth (up to the frame limit) for as long as the worker lives.
            if self.buf.len() > READ_CHUNK {
                self.buf = vec![0; READ_CHUNK];
            }
        }
        Parsed::Frames(any)
    }

    /// Make the buffer hold a frame of `frame` bytes from `start`, with room to read more:
    /// what is unparsed moves to the front, and the buffer grows only for a frame larger than
    /// it (at most [`MAX_FRAME`], checked before).
    fn make_room(&mut self, frame: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let need = frame.max(self.end + 4096);
        if need > self.buf.len() {
            self.buf.resize(need.max(READ_CHUNK), 0);
        }
    }

    /// A worker that breaks the protocol cannot be trusted with another task: kill it (and
    /// what its task started), then wait for its exit.
    fn broken(&mut self, problem: String) {
        if self.problem.is_none() {
            if let Some(child) = &self.child {
                kill_group(child.id());
            }
            self.problem = Some(problem);
        }
        (self.start, self.end) = (0, 0);
    }

    /// Whether the worker process has exited (it is then a zombie until reaped).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Reap the worker and say how it ended. After the exit marker it has exited; at an end of
    /// file it closed its pipe, which it does only by exiting (where no watcher writes the
    /// marker), so the wait is short — a worker that closed it and lives on is killed first.
    fn reap(&mut self) -> String {
        let status = match self.child.take() {
            None => "ended".to_string(),
            Some(mut child) => {
                if !matches!(child.try_wait(), Ok(Some(_))) {
                    kill_group(child.id());
                }
                match child.wait() {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("could not be reaped: {e}"),
                }
            }
        };
        match self.problem.take() {
            Some(p) => format!("{p}; {status}"),
            None => status,
        }
    }
}

/// What a read of whole frames found.
enum Parsed {
    /// Frames (true if any came, heartbeats included), and perhaps part of the next.
    Frames(bool),
    /// The exit marker: the worker is gone.
    ExitMarker,
}

impl Drop for ResultPipe {
    /// A pipe dropped before its worker's exit (the supervisor ended first): the worker dies
    /// with it (its task pipe is closed, or the parent-death signal comes), and a thread reaps
    /// it then, so no zombie stays behind for as long as the process lives.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = std::thread::Builder::new()
                    .name(format!("huey-reap-{}", child.id()))
                    .stack_size(64 << 10)
                    .spawn(move || child.wait());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    use super::*;
    use crate::message::Output;
    use crate::worker::ipc::{write_frame, EXIT_MARKER};

    /// A result pipe read here, for a real child process (`sleep`), and its writing end.
    fn pipe_for(child: Child) -> (ResultPipe, File, Arc<AtomicU64>) {
        let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let heard = Arc::new(AtomicU64::new(u64::MAX));
        let pipe = ResultPipe::new(2, 7, File::from(r), child, heard.clone());
        (pipe, File::from(w), heard)
    }

    fn sleeper() -> Child {
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn done(job: u64, bytes: usize) -> FromWorker {
        FromWorker::Done {
            job,
            outcome: Ok(Output {
                value: vec![job as u8; bytes],
                is_empty: false,
            }),
            rss_kib: 0,
        }
    }

    fn jobs(events: &[Tagged]) -> Vec<(u64, usize)> {
        events
            .iter()
            .filter_map(|t| match &t.event {
                WorkerEvent::Done {
                    job,
                    outcome: Ok(o),
                    ..
                } => Some((*job, o.value.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn frames_cut_anywhere_and_larger_than_the_buffer_come_out_whole_and_in_order() {
        let (mut pipe, mut w, heard) = pipe_for(sleeper());
        let mut wire = Vec::new();
        write_frame(&mut wire, &FromWorker::Ready { pid: 1 }).unwrap();
        write_frame(&mut wire, &done(1, 10)).unwrap();
        write_frame(&mut wire, &FromWorker::Heartbeat).unwrap();
        // Three times the buffer: it grows for this frame, read over many turns.
        write_frame(&mut wire, &done(2, 3 * READ_CHUNK)).unwrap();
        write_frame(&mut wire, &done(3, 0)).unwrap();
        let mut events = Vec::new();
        // Pieces of every size from 1 byte, so cuts fall inside lengths, bodies and between
        // frames; each read takes what the pipe holds (a pipe holds 64 KiB at most).
        let (mut at, mut size) = (0, 1);
        while at < wire.len() {
            let piece = &wire[at..(at + size).min(wire.len())];
            w.write_all(piece).unwrap();
            at += piece.len();
            size = (size * 3 + 1) % 40_000 + 1;
            assert!(!pipe.read(&mut events), "the worker is alive");
        }
        assert!(matches!(events[0].event, WorkerEvent::Ready { pid: 1 }));
        assert_eq!(jobs(&events), [(1, 10), (2, 3 * READ_CHUNK), (3, 0)]);
        assert_eq!(
            pipe.buf.len(),
            READ_CHUNK,
            "the buffer grown for a large frame shrinks"
        );
        assert!(events.iter().all(|t| (t.slot, t.gen) == (2, 7)));
        assert!(
            heard.load(Ordering::Relaxed) <= clock_ms(),
            "frames mark it heard"
        );
        // Nothing more to read: no event, and still alive.
        assert!(!pipe.read(&mut events));
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn the_exit_marker_of_an_exited_worker_ends_the_pipe_with_its_status() {
        let child = Command::new("true").spawn().unwrap();
        // Wait for the exit without reaping it (the pipe reaps it).
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        nix::sys::wait::waitid(nix::sys::wait::Id::Pid(pid), flags).unwrap();
        let (mut pipe, mut w, _) = pipe_for(child);
        let mut wire = Vec::new();
        write_frame(&mut wire, &done(5, 1)).unwrap();
        wire.extend(EXIT_MARKER);
        w.write_all(&wire).unwrap();
        let mut events = Vec::new();
        assert!(pipe.read(&mut events), "the marker ends it");
        assert_eq!(
            jobs(&events),
            [(5, 1)],
            "what came before the marker counts"
        );
        match &events[1].event {
            WorkerEvent::Exited { status } => assert_eq!(status, "exited with status 0"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_marker_or_garbage_from_a_live_worker_kills_it_and_says_why() {
        for garbage in [
            EXIT_MARKER.to_vec(),
            vec![3, 0, 0, 0, 9, 9, 9],
            vec![255; 4],
        ] {
            let (mut pipe, mut w, _) = pipe_for(sleeper());
            w.write_all(&garbage).unwrap();
            let mut events = Vec::new();
            let mut ended = pipe.read(&mut events);
            // Killed: its exit is seen on a later read (here, the end of file once the test
            // drops its writing end; in a supervisor, the watcher's marker).
            drop(w);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !ended {
                assert!(std::time::Instant::now() < deadline, "no exit seen");
                std::thread::sleep(std::time::Duration::from_millis(5));
                ended = pipe.read(&mut events);
            }
            let Some(Tagged {
                event: WorkerEvent::Exited { status },
                ..
            }) = events.last()
            else {
                panic!("{events:?}")
            };
            assert!(status.starts_with("protocol error"), "{status}");
            assert!(status.ends_with("killed by signal 9 (SIGKILL)"), "{status}");
        }
    }
}
