//! The task registry: type-erased handlers that run a task from its argument bytes.
//!
//! The same registration code runs in every process of an app, so a worker process can look a
//! task up by the name in its message. Each handler also keeps JSON converters for its argument
//! and result types (used by `hueyd enqueue` and `hueyd result`).
//!
//! Async tasks (feature `async`) are handlers too: an async worker polls their future (and
//! drops it to cancel the attempt); every other path (thread and process workers without
//! concurrency, immediate mode, `Huey::execute`) runs the future to its end on a small runtime
//! kept by its thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::{Handler, TaskContext};
use crate::control::IntoFailure;
use crate::failure::panic_message;
use crate::failure::{Failure, FailureKind};
use crate::message::Output;

struct Typed<A, R, E, F> {
    f: F,
    _t: std::marker::PhantomData<fn(A) -> (R, E)>,
}

pub(crate) fn typed_handler<A, R, E, F>(f: F) -> Arc<dyn Handler>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    E: IntoFailure + 'static,
    F: Fn(A, &TaskContext) -> Result<R, E> + Send + Sync + 'static,
{
    Arc::new(Typed {
        f,
        _t: std::marker::PhantomData,
    })
}

/// The arguments of an attempt, or the failure that says why they do not decode.
fn decode_args<A: DeserializeOwned>(args: &[u8]) -> Result<A, Failure> {
    postcard::from_bytes(args).map_err(|e| {
        Failure::new(
            FailureKind::Undecodable,
            format!(
                "arguments do not decode as {}: {e}",
                std::any::type_name::<A>()
            ),
        )
    })
}

/// What task code returned, as an attempt's output.
fn encode_output<R: Serialize, E: IntoFailure>(ret: Result<R, E>) -> Result<Output, Failure> {
    let value = ret.map_err(IntoFailure::into_failure)?;
    let bytes = postcard::to_allocvec(&value).map_err(|e| {
        Failure::new(
            FailureKind::Error,
            format!("could not encode the result: {e}"),
        )
    })?;
    // Unit encodes to nothing and `None` to one zero byte; only then ask serde whether the
    // value is "nothing" (a zero `u8` also encodes to one zero byte).
    let is_empty = bytes.len() <= 1 && serde_json::to_value(&value).is_ok_and(|v| v.is_null());
    Ok(Output {
        value: bytes,
        is_empty,
    })
}

/// Decode postcard bytes that must hold exactly one value (no trailing bytes), so that a
/// decoder of the wrong type is less likely to accept them.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(format!(
            "{} trailing bytes after a {}",
            rest.len(),
            std::any::type_name::<T>()
        ))
    }
}

/// The JSON converters and type names every typed handler shares.
macro_rules! converters {
    () => {
        fn args_from_json(&self, json: serde_json::Value) -> Result<Vec<u8>, String> {
            let a: A = serde_json::from_value(json).map_err(|e| e.to_string())?;
            postcard::to_allocvec(&a).map_err(|e| e.to_string())
        }

        fn args_to_json(&self, bytes: &[u8]) -> Result<serde_json::Value, String> {
            let a: A = decode_exact(bytes)?;
            serde_json::to_value(&a).map_err(|e| e.to_string())
        }

        fn result_to_json(&self, bytes: &[u8]) -> Result<serde_json::Value, String> {
            let r: R = decode_exact(bytes)?;
            serde_json::to_value(&r).map_err(|e| e.to_string())
        }

        fn signature(&self) -> (&'static str, &'static str) {
            (std::any::type_name::<A>(), std::any::type_name::<R>())
        }

        fn type_ids(&self) -> (std::any::TypeId, std::any::TypeId) {
            (std::any::TypeId::of::<A>(), std::any::TypeId::of::<R>())
        }
    };
}

impl<A, R, E, F> Handler for Typed<A, R, E, F>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    E: IntoFailure + 'static,
    F: Fn(A, &TaskContext) -> Result<R, E> + Send + Sync + 'static,
{
    fn run(&self, args: &[u8], ctx: &TaskContext) -> Result<Output, Failure> {
        let args: A = decode_args(args)?;
        let ret = catch_unwind(AssertUnwindSafe(|| (self.f)(args, ctx)))
            .map_err(|p| Failure::new(FailureKind::Panic, panic_message(&*p)))?;
        encode_output(ret)
    }

    converters!();
}

#[cfg(feature = "async")]
mod async_handler;
#[cfg(feature = "async")]
pub(crate) use async_handler::{typed_async_handler, within};
