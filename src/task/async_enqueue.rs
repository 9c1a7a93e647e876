//! Enqueueing from async code: the call is encoded in the caller, and the storage write stalls
//! no other task of the runtime (on a multi-threaded runtime it runs in place through
//! `block_in_place`, on a current-thread one on tokio's blocking pool). The futures are `Send` and
//! `'static` (they hold no borrow of the task or its arguments): an axum or actix handler can
//! await them as they are.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Call, Task};
use crate::app::Huey;
use crate::error::Result;
use crate::message::Message;
use crate::result::{run_blocking, TaskResult};

/// Write `msgs` in one storage call; their handles in the same order.
async fn enqueue_blocking<R: DeserializeOwned>(
    app: Huey,
    msgs: Vec<Message>,
) -> Result<Vec<TaskResult<R>>> {
    let app2 = app.clone();
    let (msgs, written) =
        run_blocking(move || app2.enqueue_messages_unique(&msgs).map(|w| (msgs, w))).await?;
    Ok(msgs
        .into_iter()
        .zip(written)
        .map(|(m, w)| TaskResult::enqueued(app.clone(), m, w))
        .collect())
}

impl<A: Serialize, R: DeserializeOwned + 'static> Task<A, R> {
    /// [`Task::enqueue`] for async code. Needs a tokio runtime.
    ///
    /// ```
    /// use huey::Huey;
    ///
    /// # fn main() -> huey::Result<()> {
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// let app = Huey::open("docs", "memory:")?;
    /// let add = app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
    /// rt.block_on(async {
    ///     let one: huey::TaskResult<i64> = add.enqueue_async((1, 2)).await?;
    ///     assert!(!one.id().is_empty());
    ///     add.call((3, 4)).priority(5).enqueue_async().await?;
    ///     let handles = add.enqueue_many_async([(5, 6), (7, 8)]).await?;
    ///     assert_eq!(handles.len(), 2);
    ///     Ok::<_, huey::Error>(())
    /// })?;
    /// assert_eq!(app.storage().counts()?.ready, 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn enqueue_async(
        &self,
        args: A,
    ) -> impl Future<Output = Result<TaskResult<R>>> + Send + 'static {
        self.call(args).enqueue_async()
    }

    /// [`Task::schedule`] for async code.
    pub fn schedule_async(
        &self,
        args: A,
        when: impl Into<super::When>,
    ) -> impl Future<Output = Result<TaskResult<R>>> + Send + 'static {
        self.call(args).when(when).enqueue_async()
    }

    /// [`Task::enqueue_many`] for async code: one storage write for all the calls.
    pub fn enqueue_many_async(
        &self,
        args: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<TaskResult<R>>>> + Send + 'static {
        let msgs: Result<Vec<Message>> = args
            .into_iter()
            .map(|a| self.call(a).to_message())
            .collect();
        let app = self.app.clone();
        async move { enqueue_blocking(app, msgs?).await }
    }
}

impl<A: Serialize, R: DeserializeOwned + 'static> Call<A, R> {
    /// [`Call::enqueue`] for async code.
    pub fn enqueue_async(self) -> impl Future<Output = Result<TaskResult<R>>> + Send + 'static {
        let msg = self.to_message();
        let app = self.task.app.clone();
        async move {
            let mut v = enqueue_blocking(app, vec![msg?]).await?;
            Ok(v.remove(0))
        }
    }
}
