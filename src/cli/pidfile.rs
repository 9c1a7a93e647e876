//! The consumer's pidfile: the pid written in it, and an advisory lock (`flock`) on it held for
//! the life of the process. The lock, not the pid, says whether a consumer runs: the kernel
//! drops it when the holder dies however it dies, so a file left by a SIGKILLed consumer is
//! taken over at once, and a pid reused by an unrelated process means nothing.
//!
//! The descriptor is opened close-on-exec (as every file the standard library opens), so no
//! process worker or task subprocess keeps the lock after the consumer is gone. A symbolic link
//! at the path is not followed, and anything but a regular file is refused: a consumer running
//! as root with its pidfile in a shared directory truncates no file that a link points to.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A locked pidfile, removed (then unlocked) on drop.
pub(super) struct Pidfile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Pidfile {
    /// Lock `path` (creating it) and write this process's pid in it. Fails, naming the
    /// holder's pid, while another process holds the lock.
    pub(super) fn create(path: &Path) -> Result<Pidfile> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            Error::Config(format!("cannot {what} pidfile {}: {e}", path.display()))
        };
        // A holder that exits removes the file after we opened it: our lock would then be on a
        // file nobody else sees, so we retry on the file now at the path.
        for _ in 0..10 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| match e.raw_os_error() {
                    Some(nix::libc::ELOOP) => err("open", &"it is a symbolic link"),
                    _ => err("open", &e),
                })?;
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(err("use", &"it is not a regular file"));
            }
            let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let holder = match text.trim() {
                        "" => "another process".to_string(),
                        pid => format!("pid {pid}"),
                    };
                    return Err(Error::Config(format!(
                        "pidfile {} is locked by {holder}: is another consumer running?",
                        path.display()
                    )));
                }
                Err((_, e)) => return Err(err("lock", &e)),
            };
            let same = match (std::fs::metadata(path), lock.metadata()) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            let mut stale = String::new();
            let _ = lock.read_to_string(&mut stale);
            if !stale.trim().is_empty() {
                tracing::info!(
                    "taking over pidfile {} left by pid {}",
                    path.display(),
                    stale.trim()
                );
            }
            lock.set_len(0).map_err(|e| err("write", &e))?;
            lock.rewind().map_err(|e| err("write", &e))?;
            writeln!(lock, "{}", std::process::id()).map_err(|e| err("write", &e))?;
            lock.flush().map_err(|e| err("write", &e))?;
            return Ok(Pidfile {
                path: path.to_path_buf(),
                _lock: lock,
            });
        }
        Err(Error::Config(format!(
            "pidfile {} keeps being replaced: is another consumer starting?",
            path.display()
        )))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Removed while still locked, so a consumer starting now either sees our lock or
        // creates a new file; the lock goes when `_lock` drops just after.
        let _ = std::fs::remove_file(&self.path);
    }
}
