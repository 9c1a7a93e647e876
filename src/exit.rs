//! The exit statuses of the command line, in a leaf module so that the CLI, its admin commands
//! and the demo agree on them without importing one another.
//!
//! 0 success, [`FAILURE`] a failure at run time, [`USAGE`] bad input (flags, URLs, task names,
//! arguments), [`NOT_READY`] a result not ready, [`DUPLICATE`] a unique enqueue that found its
//! id taken.

use crate::error::Error;

/// A failure at run time (storage unreachable, a task that failed...).
pub const FAILURE: u8 = 1;

/// Bad input: flags, storage URLs, unknown tasks, arguments that do not fit.
pub const USAGE: u8 = 2;

/// `result` found no result (yet).
pub const NOT_READY: u8 = 3;

/// `enqueue --unique` found a task with its id queued, scheduled or running: nothing was
/// written (the existing id is printed all the same).
pub const DUPLICATE: u8 = 4;

/// The exit status for an error that ends a command.
pub fn for_error(e: &Error) -> u8 {
    match e {
        Error::StorageUrl { .. }
        | Error::Config(_)
        | Error::UnknownTask(_)
        | Error::BadArguments { .. } => USAGE,
        _ => FAILURE,
    }
}
