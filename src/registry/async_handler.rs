//! The handlers of async tasks: an attempt is a future (panics caught, dropped at its
//! deadline), or, for a worker that runs one attempt at a time, that future run to its end on
//! a small runtime kept by the thread.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode_args, decode_exact, encode_output};
use crate::app::{Handler, TaskContext, TaskFuture};
use crate::control::IntoFailure;
use crate::failure::panic_message;
use crate::failure::{Failure, FailureKind};
use crate::message::Output;

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
/// with [`FailureKind::Timeout`]. A value whose `Drop` panics as the future is dropped does
/// not turn the timeout into something else: the panic is logged, the attempt timed out.
pub(crate) async fn within(
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<Output, Failure>>,
) -> Result<Output, Failure> {
    let Some(at) = deadline else {
        return fut.await;
    };
    let mut timed = Box::pin(tokio::time::timeout_at(at.into(), fut));
    match (&mut timed).await {
        Ok(out) => out,
        Err(_) => {
            let mut message =
                "ran past its timeout; its future was dropped at the deadline".to_string();
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(timed))) {
                let p = panic_message(&*p);
                tracing::warn!("dropping a timed-out task's future panicked: {p}");
                message.push_str(&format!(" (and dropping it panicked: {p})"));
            }
            Err(Failure::new(FailureKind::Timeout, message))
        }
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
