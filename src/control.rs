//! What task code returns as its error: any `Display` error becomes a [`Failure`], the
//! library's own lock and rate-limit errors keep their meaning, and [`Control`] cancels or
//! retries a task on its own terms.

use std::fmt;
use std::time::Duration;

use crate::error::Error;
use crate::failure::{Failure, FailureKind};

/// Converts what a task returns as its error into a [`Failure`]. Any `Display` error works;
/// a [`crate::Error::Locked`] or [`crate::Error::RateLimited`] returned by the task (e.g. with
/// `?` from [`crate::Huey::lock_task`] or [`crate::Huey::rate_limit`]) keeps its meaning, and
/// [`Control`] cancels or retries.
pub trait IntoFailure {
    /// The failure this error stands for.
    fn into_failure(self) -> Failure;
}

impl<E: fmt::Display + 'static> IntoFailure for E {
    fn into_failure(self) -> Failure {
        if let Some(e) = (&self as &dyn std::any::Any).downcast_ref::<Error>() {
            if let Some(f) = failure_of_error(e) {
                return f;
            }
        }
        Failure::new(FailureKind::Error, self.to_string())
    }
}

/// The failures the library's own errors stand for inside a task.
fn failure_of_error(e: &Error) -> Option<Failure> {
    match e {
        Error::Locked(_) | Error::NoPermit { .. } => {
            Some(Failure::new(FailureKind::Locked, e.to_string()))
        }
        Error::RateLimited { retry_in, .. } => Some(Failure::reschedule(
            FailureKind::RateLimited,
            e.to_string(),
            *retry_in,
        )),
        _ => None,
    }
}

/// What a task can return as its error to steer its own execution:
/// `Err(Control::Cancel(..))` ends it without a retry, `Err(Control::CancelRetry(..))` ends the
/// attempt and retries it, `Err(Control::Retry { .. })` runs it
/// again after a delay without using up a retry, and any other error converts (with `?`) into
/// [`Control::Fail`], an ordinary failure under the retry policy.
///
/// ```
/// use huey::task::Control;
/// use std::time::Duration;
///
/// fn step(n: u32) -> Result<u32, Control> {
///     if n == 0 {
///         return Err(Control::Cancel("nothing to do".into()));
///     }
///     if n > 100 {
///         return Err(Control::Retry { delay: Duration::from_secs(5), reason: "busy".into() });
///     }
///     let parsed: u32 = "7".parse()?; // any Display error becomes Control::Fail
///     Ok(n + parsed)
/// }
/// assert!(matches!(step(0), Err(Control::Cancel(_))));
/// assert_eq!(step(1).ok(), Some(8));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Stop now, with no retry (event `Canceled`; the result is a `Canceled` error). huey's
    /// `CancelExecution(retry=False)`.
    Cancel(String),
    /// Stop now, and run again under the retry policy: a retry is used up, and the task runs
    /// again at least once even with none left (events `Canceled` then `Retrying`). huey's
    /// `CancelExecution(retry=True)`.
    CancelRetry(String),
    /// Run again after `delay` without using up a retry (event `Retrying`).
    Retry {
        /// How long to wait before the next attempt.
        delay: Duration,
        /// Why, for the logs and the `Retrying` event.
        reason: String,
    },
    /// An ordinary failure: the retry policy applies.
    Fail(String),
    /// A failure of another kind (e.g. a lock or rate limit hit inside the task).
    Failure(Failure),
}

// `Control` is deliberately not `Display`: that keeps this conversion (and the `IntoFailure`
// impl below) apart from the blanket ones for `Display` errors.
impl<E: fmt::Display + 'static> From<E> for Control {
    fn from(e: E) -> Control {
        Control::Failure(e.into_failure())
    }
}

impl IntoFailure for Control {
    fn into_failure(self) -> Failure {
        match self {
            Control::Cancel(m) => Failure::new(FailureKind::Canceled, m),
            Control::CancelRetry(m) => Failure {
                retry_canceled: true,
                ..Failure::new(FailureKind::Canceled, m)
            },
            Control::Retry { delay, reason } => {
                Failure::reschedule(FailureKind::Error, reason, delay)
            }
            Control::Fail(m) => Failure::new(FailureKind::Error, m),
            Control::Failure(f) => f,
        }
    }
}
