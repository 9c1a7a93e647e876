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
    StorageUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it, and the forms that are expected.
        reason: String,
    },

    /// The storage backend failed (I/O, a locked or corrupt database, a lost connection).
    #[error("storage error ({backend}): {message}")]
    Storage {
        /// Which backend: "sqlite", "redis", "postgres" or "memory".
        backend: &'static str,
        /// What went wrong, in the backend's words.
        message: String,
    },

    /// A storage backend that this build does not provide: its Cargo feature is off.
    #[error("the {0} storage is not in this build: it needs the `{0}` feature of huey-rs")]
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
    Encode {
        /// What was being encoded (arguments, a result, a message).
        what: &'static str,
        /// The encoder's explanation.
        message: String,
    },

    /// Task arguments given as JSON that do not fit the task's argument type.
    #[error("arguments for task {task:?} do not fit its argument type: {message}")]
    BadArguments {
        /// The task's name.
        task: String,
        /// Why the JSON does not fit.
        message: String,
    },

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
    NoPermit {
        /// The semaphore's name.
        name: String,
        /// How many permits it has.
        permits: u32,
    },

    /// A rate limit is used up for the current window.
    #[error("rate limit {name:?} reached; the next window starts in {retry_in:?}")]
    RateLimited {
        /// The rate limit's name.
        name: String,
        /// When its next window starts.
        retry_in: Duration,
    },

    /// Invalid configuration (CLI flags, options).
    #[error("{0}")]
    Config(String),

    /// Process or pipe failure in the supervisor.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
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
