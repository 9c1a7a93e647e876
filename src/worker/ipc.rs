//! Frames between the supervisor and its worker processes: a little-endian `u32` length, then
//! that many bytes of postcard. The length is checked against [`MAX_FRAME`] before anything is
//! allocated, and reading is two-phase (the whole frame, then the parse), so a corrupt or
//! oversized frame is an error value, never a panic or a huge allocation.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::failure::Failure;
use crate::message::Output;

/// The largest frame either side accepts (64 MiB): room for a message of
/// [`crate::message::MAX_MESSAGE_BYTES`] and the frame's own fields.
pub const MAX_FRAME: usize = 64 << 20;

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Run one attempt of this encoded message.
    Run {
        /// The supervisor's number for this attempt, echoed in `Done`.
        job: u64,
        #[serde(with = "serde_bytes")]
        /// The encoded message.
        payload: Vec<u8>,
    },
    /// The first frame, and only the first: the storage the worker's app opens (the URL
    /// travels on the pipe, so no environment variable hands it on to task subprocesses and
    /// no command line shows its password). After `Run`, which `ToWorkerRef` writes as the
    /// first variant. `concurrency`: attempts run at once (over 1: as futures on a runtime,
    /// `Run` frames overlapping and answered in any order).
    /// `heartbeat_ms`: how often the worker says it is alive while nothing else goes out
    /// (0: never).
    Setup {
        /// The storage URL.
        storage_url: String,
        /// Attempts run at once.
        concurrency: u32,
        /// How often the worker tells it is alive, in milliseconds (0: never).
        heartbeat_ms: u64,
        /// Whether each answer carries the worker's resident memory (a memory limit is set).
        measure_memory: bool,
    },
    /// Cancel a running attempt (a concurrent worker drops its future and answers `Done` with
    /// a `Revoked` failure); a job not running is ignored.
    Cancel {
        /// The attempt's number, from `Run`.
        job: u64,
    },
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker built its app and waits for work.
    Ready {
        /// The worker's process id.
        pid: u32,
    },
    /// An attempt finished.
    Done {
        /// The attempt's number, from `Run`.
        job: u64,
        /// What the attempt returned, or how it failed.
        outcome: Result<Output, Failure>,
        /// Resident memory after the attempt, in KiB (for `--max-memory`).
        rss_kib: u64,
    },
    /// Still alive: written by a thread of its own every heartbeat interval, so a worker that
    /// is frozen (stopped, or hung outside its task code) goes silent even while a long task
    /// runs.
    Heartbeat,
}

/// A frame of length 0: never a message (every frame has a body). The supervisor writes it
/// into a worker's result pipe once the worker process has exited.
pub const EXIT_MARKER: [u8; 4] = [0; 4];

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("pipe error: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    #[error("an empty frame")]
    Empty,
}

/// [`ToWorker::Run`] with a borrowed payload: the same bytes on the wire, without a copy.
#[derive(Serialize)]
pub enum ToWorkerRef<'a> {
    Run {
        job: u64,
        payload: &'a serde_bytes::Bytes,
    },
}

/// Write one frame (length, then body). Buffered writers need a flush afterwards.
pub fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), FrameError> {
    let mut buf = vec![0u8; 4];
    postcard::to_io(value, &mut buf).map_err(|e| FrameError::Corrupt(e.to_string()))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    w.write_all(&buf)?;
    Ok(())
}

/// Read one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| FrameError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        let a = ToWorker::Run {
            job: 7,
            payload: vec![1, 2, 3],
        };
        let b = FromWorker::Done {
            job: 7,
            outcome: Err(Failure::new(FailureKind::Panic, "x")),
            rss_kib: 10,
        };
        write_frame(&mut buf, &a).unwrap();
        write_frame(&mut buf, &b).unwrap();
        write_frame(&mut buf, &FromWorker::Heartbeat).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), Some(a));
        assert_eq!(read_frame::<FromWorker>(&mut r).unwrap(), Some(b));
        let beat = read_frame::<FromWorker>(&mut r).unwrap();
        assert_eq!(beat, Some(FromWorker::Heartbeat));
        assert_eq!(read_frame::<FromWorker>(&mut r).unwrap(), None);
    }

    #[test]
    fn setup_then_borrowed_runs_read_back_as_sent() {
        let mut buf = Vec::new();
        let setup = ToWorker::Setup {
            storage_url: "redis://u:p@h:1/0".into(),
            concurrency: 64,
            heartbeat_ms: 1000,
            measure_memory: true,
        };
        write_frame(&mut buf, &setup).unwrap();
        let payload = serde_bytes::Bytes::new(&[1, 2, 3]);
        write_frame(&mut buf, &ToWorkerRef::Run { job: 9, payload }).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), Some(setup));
        let run = ToWorker::Run {
            job: 9,
            payload: vec![1, 2, 3],
        };
        assert_eq!(read_frame::<ToWorker>(&mut r).unwrap(), Some(run));
        let mut buf = Vec::new();
        write_frame(&mut buf, &ToWorker::Cancel { job: 9 }).unwrap();
        let cancel = read_frame::<ToWorker>(&mut &buf[..]).unwrap();
        assert_eq!(cancel, Some(ToWorker::Cancel { job: 9 }));
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let mut r = &(u32::MAX).to_le_bytes()[..];
        assert!(matches!(
            read_frame::<ToWorker>(&mut r),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn the_exit_marker_is_no_frame() {
        assert!(matches!(
            read_frame::<FromWorker>(&mut &EXIT_MARKER[..]),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn corrupt_and_truncated_frames_are_errors() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend([9, 9, 9]);
        assert!(matches!(
            read_frame::<FromWorker>(&mut &bytes[..]),
            Err(FrameError::Corrupt(_))
        ));
        let mut cut = Vec::new();
        write_frame(
            &mut cut,
            &ToWorker::Run {
                job: 1,
                payload: vec![0; 100],
            },
        )
        .unwrap();
        cut.truncate(50);
        assert!(matches!(
            read_frame::<ToWorker>(&mut &cut[..]),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn a_frame_for_the_largest_message_fits() {
        let payload = vec![0u8; crate::message::MAX_MESSAGE_BYTES];
        let mut buf = Vec::new();
        let run = ToWorkerRef::Run {
            job: u64::MAX,
            payload: serde_bytes::Bytes::new(&payload),
        };
        write_frame(&mut buf, &run).unwrap();
        assert!(buf.len() - 4 <= MAX_FRAME);
    }

    #[test]
    fn random_truncated_and_huge_frames_never_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut good = Vec::new();
        let done = FromWorker::Done {
            job: 3,
            outcome: Err(Failure::new(FailureKind::Panic, "boom")),
            rss_kib: 1,
        };
        write_frame(&mut good, &done).unwrap();
        for round in 0..20_000 {
            let mut b: Vec<u8> = match round % 3 {
                0 => (0..next() % 64).map(|_| next() as u8).collect(),
                1 => good[..next() as usize % good.len()].to_vec(),
                _ => {
                    let mut b = good.clone();
                    let i = next() as usize % b.len();
                    b[i] = next() as u8;
                    b
                }
            };
            if round % 7 == 0 && b.len() >= 4 {
                b[..4].copy_from_slice(&(next() as u32 | 1 << 31).to_le_bytes());
            }
            // Never a panic, and a length over the limit is refused before anything is
            // allocated for it.
            let mut r = &b[..];
            while let Ok(Some(_)) = read_frame::<FromWorker>(&mut r) {}
            if let Err(FrameError::TooLarge(n)) = read_frame::<ToWorker>(&mut &b[..]) {
                assert!(n > MAX_FRAME);
            }
        }
    }
}
