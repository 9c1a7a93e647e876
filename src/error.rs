//! The library's error type: every variant is a sentence a user can act on.

use std::time::Duration;

use crate::failure::TaskError;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage URL could not be understood.
    #[error("invalid storage URL {url:?}: {reason}")]
    StorageUrl { url: String, reason: String },

    /// The storage backend failed (I/O, a locked or corrupt database, a lost connection).
    #[error("storage error ({backend}): {message}")]
    Storage {
        backend: &'static str,
        message: String,
    },

    /// A storage backend that this build does not provide.
    #[error("the {0} storage is not available in this build")]
    Unsupported(&'static str),

    /// A task name was registered twice on one app.
    #[error("a task named {0:?} is already registered")]
    DuplicateTask(String),

    /// A message names a task that this app does not register.
    #[error("no task named {0:?} is registered in this app")]
    UnknownTask(String),

    /// Bytes that are not a message of this version (garbage, truncation, a newer format).
    #[error("undecodable message: {0}")]
    Decode(String),

    /// A value could not be encoded.
    #[error("could not encode {what}: {message}")]
    Encode { what: &'static str, message: String },

    /// Task arguments given as JSON that do not fit the task's argument type.
    #[error("arguments for task {task:?} do not fit its argument type: {message}")]
    BadArguments { task: String, message: String },

    /// The task ran and failed for good (or was revoked, expired, timed out...).
    #[error(transparent)]
    Task(#[from] TaskError),

    /// A blocking wait for a result ran out of time.
    #[error("no result after waiting {0:?}")]
    Timeout(Duration),

    /// A lock is held by someone else.
    #[error("lock {0:?} is held")]
    Locked(String),

    /// Every permit of a semaphore is held by someone else.
    #[error("semaphore {name:?} has no free permit (all {permits} are held)")]
    NoPermit { name: String, permits: u32 },

    /// A rate limit is used up for the current window.
    #[error("rate limit {name:?} reached; the next window starts in {retry_in:?}")]
    RateLimited { name: String, retry_in: Duration },

    /// Invalid configuration (CLI flags, options).
    #[error("{0}")]
    Config(String),

    /// Process or pipe failure in the supervisor.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Decode(e.to_string())
    }
}
