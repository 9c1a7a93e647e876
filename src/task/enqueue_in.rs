//! Transactional enqueue: a task call written in the application's own Postgres transaction,
//! so the task exists if and only if the data it refers to was committed. The rows are the ones
//! the storage's own enqueue writes, with a `NOTIFY` that Postgres delivers at commit, so a
//! waiting consumer takes the task at once then; a rollback leaves nothing.

#[cfg(feature = "async")]
use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Call, Task};
use crate::app::Huey;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use crate::lifecycle;
use crate::message::Message;
use crate::result::TaskResult;
use crate::storage::Batch;

/// The calls encoded, checked and laid out as the rows an enqueue writes, ready to be written
/// in an application's transaction.
struct Prepared {
    app: Huey,
    schema: String,
    msgs: Vec<Message>,
    batch: Batch,
}

impl Prepared {
    fn new<A: Serialize, R: DeserializeOwned>(
        app: &Huey,
        calls: Vec<Call<A, R>>,
    ) -> Result<Prepared> {
        let schema = app
            .storage_url()
            .and_then(|u| u.postgres_schema())
            .ok_or_else(|| {
                Error::Config(
                    "enqueue_in needs an app opened on a postgres:// storage URL \
                     (Huey::open(name, \"postgres://…\"))"
                        .into(),
                )
            })?;
        let msgs = calls
            .iter()
            .map(|c| c.to_message())
            .collect::<Result<Vec<_>>>()?;
        if let Some(m) = msgs.iter().find(|m| m.options.unique) {
            return Err(Error::Config(format!(
                "task {} is unique: unique calls are enqueued with enqueue(), not inside the \
                 application's transaction",
                m.id
            )));
        }
        let now = now_ms();
        let mut batch = Batch::default();
        for m in &msgs {
            if m.has_nested_unique() {
                // Only a message whose own enqueue took the claim may release one.
                let mut m = m.clone();
                m.clear_nested_unique();
                lifecycle::push_message(&mut batch, &m, now)?;
            } else {
                lifecycle::push_message(&mut batch, m, now)?;
            }
        }
        app.check_sizes(&batch)?;
        Ok(Prepared {
            app: app.clone(),
            schema,
            msgs,
            batch,
        })
    }

    /// The handles of the written calls, in order.
    fn handles<R: DeserializeOwned>(self) -> Vec<TaskResult<R>> {
        let app = self.app;
        self.msgs
            .into_iter()
            .map(|m| TaskResult::new(app.clone(), m.id.clone(), Some(m)))
            .collect()
    }

    fn write(self, tx: &mut postgres::Transaction<'_>) -> Result<Self> {
        crate::storage::postgres::write_in_transaction(tx, &self.schema, &self.batch)?;
        Ok(self)
    }

    #[cfg(feature = "async")]
    async fn write_async(self, tx: &tokio_postgres::Transaction<'_>) -> Result<Self> {
        crate::storage::postgres::write_in_transaction_async(tx, &self.schema, &self.batch).await?;
        Ok(self)
    }
}

/// Write the calls' messages in `tx`; their handles in order.
fn enqueue_calls_in<A: Serialize, R: DeserializeOwned>(
    app: &Huey,
    tx: &mut postgres::Transaction<'_>,
    calls: Vec<Call<A, R>>,
) -> Result<Vec<TaskResult<R>>> {
    Ok(Prepared::new(app, calls)?.write(tx)?.handles())
}

/// Write the calls' messages in the async `tx`; their handles in order. The calls are encoded
/// before the future is made, so it holds neither them nor their arguments.
#[cfg(feature = "async")]
fn enqueue_calls_in_async<'t, A: Serialize, R: DeserializeOwned>(
    app: &Huey,
    tx: &'t tokio_postgres::Transaction<'_>,
    calls: Vec<Call<A, R>>,
) -> impl Future<Output = Result<Vec<TaskResult<R>>>> + Send + 't {
    let prepared = Prepared::new(app, calls);
    async move { Ok(prepared?.write_async(tx).await?.handles()) }
}

impl<A: Serialize, R: DeserializeOwned> Task<A, R> {
    /// Enqueue a call inside the application's own Postgres transaction `tx`: the task is
    /// written if and only if `tx` commits, and a waiting consumer is woken at the commit.
    /// The app must be opened on the same database (`postgres://…`); the rows go to its
    /// storage schema whatever the connection's search path. Events (`Enqueued`) are not told
    /// for it: only the caller knows whether it commits.
    pub fn enqueue_in(&self, tx: &mut postgres::Transaction<'_>, args: A) -> Result<TaskResult<R>> {
        self.call(args).enqueue_in(tx)
    }

    /// Enqueue many calls inside the application's own Postgres transaction (see
    /// [`Task::enqueue_in`]), in one statement.
    pub fn enqueue_many_in(
        &self,
        tx: &mut postgres::Transaction<'_>,
        args: impl IntoIterator<Item = A>,
    ) -> Result<Vec<TaskResult<R>>> {
        let calls: Vec<Call<A, R>> = args.into_iter().map(|a| self.call(a)).collect();
        enqueue_calls_in(&self.app, tx, calls)
    }

    /// [`Task::enqueue_in`] inside the application's async Postgres transaction (a
    /// `tokio_postgres::Transaction`): written if and only if `tx` commits. Feature `async`.
    #[cfg(feature = "async")]
    pub fn enqueue_in_async<'t>(
        &self,
        tx: &'t tokio_postgres::Transaction<'_>,
        args: A,
    ) -> impl Future<Output = Result<TaskResult<R>>> + Send + 't {
        self.call(args).enqueue_in_async(tx)
    }

    /// [`Task::enqueue_many_in`] inside the application's async Postgres transaction, in one
    /// statement. Feature `async`.
    #[cfg(feature = "async")]
    pub fn enqueue_many_in_async<'t>(
        &self,
        tx: &'t tokio_postgres::Transaction<'_>,
        args: impl IntoIterator<Item = A>,
    ) -> impl Future<Output = Result<Vec<TaskResult<R>>>> + Send + 't {
        let calls: Vec<Call<A, R>> = args.into_iter().map(|a| self.call(a)).collect();
        enqueue_calls_in_async(&self.app, tx, calls)
    }
}

impl<A: Serialize, R: DeserializeOwned> Call<A, R> {
    /// Enqueue this call (with its own options, delay or eta) inside the application's own
    /// Postgres transaction (see [`Task::enqueue_in`]).
    pub fn enqueue_in(self, tx: &mut postgres::Transaction<'_>) -> Result<TaskResult<R>> {
        let app = self.task.app.clone();
        let mut v = enqueue_calls_in(&app, tx, vec![self])?;
        Ok(v.remove(0))
    }

    /// Enqueue this call inside the application's async Postgres transaction (see
    /// [`Task::enqueue_in_async`]). Feature `async`.
    #[cfg(feature = "async")]
    pub fn enqueue_in_async<'t>(
        self,
        tx: &'t tokio_postgres::Transaction<'_>,
    ) -> impl Future<Output = Result<TaskResult<R>>> + Send + 't {
        let app = self.task.app.clone();
        let write = enqueue_calls_in_async(&app, tx, vec![self]);
        async move {
            let mut v = write.await?;
            Ok(v.remove(0))
        }
    }
}
