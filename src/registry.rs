//! The task registry: type-erased handlers that run a task from its argument bytes.
//!
//! The same registration code runs in every process of an app, so a worker process can look a
//! task up by the name in its message. Each handler also keeps JSON converters for its argument
//! and result types (used by `hueyd enqueue` and `hueyd result`).
//!
//! Async tasks are handlers too: an async worker polls their future (and drops it to cancel
//! the attempt); every other path (thread and process workers without concurrency, immediate
//! mode, `Huey::execute`) runs the future to its end on a small runtime kept by its thread.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::{Handler, TaskContext, TaskFuture};
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

/// The types an async handler is generic over.
type AsyncSignature<A, R, E, Fut> = fn(A) -> (R, E, Fut);

struct TypedAsync<A, R, E, F, Fut> {
    f: F,
    _t: std::marker::PhantomData<AsyncSignature<A, R, E, Fut>>,
}

pub(crate) fn typed_async_handler<A, R, E, F, Fut>(f: F) -> Arc<dyn Handler>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    E: IntoFailure + 'static,
    F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    Arc::new(TypedAsync {
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

impl<A, R, E, F, Fut> Handler for TypedAsync<A, R, E, F, Fut>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    E: IntoFailure + 'static,
    F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    fn run(&self, args: &[u8], ctx: &TaskContext) -> Result<Output, Failure> {
        let fut = self.start(args, ctx.clone());
        block_on(within(ctx.deadline, fut))
    }

    fn run_async(&self, args: &[u8], ctx: TaskContext) -> Option<TaskFuture> {
        Some(self.start(args, ctx))
    }

    fn is_async(&self) -> bool {
        true
    }

    converters!();
}

impl<A, R, E, F, Fut> TypedAsync<A, R, E, F, Fut>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
    E: IntoFailure + 'static,
    F: Fn(A, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    /// The attempt's future: its arguments decoded now, a panic in the call or in any poll
    /// caught as a failure.
    fn start(&self, args: &[u8], ctx: TaskContext) -> TaskFuture {
        let args: A = match decode_args(args) {
            Ok(a) => a,
            Err(f) => return Box::pin(std::future::ready(Err(f))),
        };
        let fut = match catch_unwind(AssertUnwindSafe(|| (self.f)(args, ctx))) {
            Ok(fut) => fut,
            Err(p) => {
                let f = Failure::new(FailureKind::Panic, panic_message(&*p));
                return Box::pin(std::future::ready(Err(f)));
            }
        };
        Box::pin(async move {
            let ret = CatchUnwind(Box::pin(fut)).await?;
            encode_output(ret)
        })
    }
}

/// A future whose panics become a [`FailureKind::Panic`] failure.
struct CatchUnwind<F: Future>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(Failure::new(FailureKind::Panic, panic_message(&*p)))),
        }
    }
}

/// An attempt cut short at its deadline: the future is dropped there, and the attempt fails
/// with [`FailureKind::Timeout`].
pub(crate) async fn within(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<Output, Failure>>,
) -> Result<Output, Failure> {
    let Some(at) = deadline else {
        return fut.await;
    };
    match tokio::time::timeout_at(at.into(), fut).await {
        Ok(out) => out,
        Err(_) => Err(Failure::new(
            FailureKind::Timeout,
            "ran past its timeout; its future was dropped at the deadline",
        )),
    }
}

thread_local! {
    /// The runtime on which this thread runs async attempts to their end.
    static RUNTIME: std::cell::OnceCell<std::io::Result<tokio::runtime::Runtime>> =
        const { std::cell::OnceCell::new() };
}

/// Run an async attempt to its end in this thread, on the thread's own small runtime. Called
/// from inside a tokio runtime (where blocking on another would panic), it runs on a thread
/// of its own for the while.
pub(crate) fn block_on(
    fut: impl Future<Output = Result<Output, Failure>> + Send,
) -> Result<Output, Failure> {
    if tokio::runtime::Handle::try_current().is_err() {
        return block_on_here(fut);
    }
    std::thread::scope(|s| {
        let t = std::thread::Builder::new()
            .name("huey-block-on".into())
            .spawn_scoped(s, || block_on_here(fut))
            .map_err(|e| Failure::new(FailureKind::Error, format!("no thread to run on: {e}")))?;
        t.join()
            .unwrap_or_else(|p| Err(Failure::new(FailureKind::Panic, panic_message(&*p))))
    })
}

fn block_on_here(fut: impl Future<Output = Result<Output, Failure>>) -> Result<Output, Failure> {
    RUNTIME.with(|rt| {
        let rt = rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        });
        match rt {
            Ok(rt) => rt.block_on(fut),
            Err(e) => Err(Failure::new(
                FailureKind::Error,
                format!("could not start a runtime for an async task: {e}"),
            )),
        }
    })
}
