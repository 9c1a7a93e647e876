//! The producer's side of the two apalis storages behind one small interface: open a fresh
//! one, push tasks, look up outcomes in apalis's own result store; and the task itself.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use futures::{stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::consumer::Consumer;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The queue every run uses (apalis's default is the argument type's name). No `:` in it:
/// apalis-redis joins its key and channel names with colons.
pub const QUEUE: &str = "bench";

/// How long a wait for an outcome may take before the run fails.
pub const WAIT: Duration = Duration::from_secs(120);

/// The tasks: `noop` and `echo`, as the demo tasks of huey-rs and huey-py.
#[derive(Debug, Serialize, Deserialize)]
pub enum Job {
    Noop,
    Echo(String),
}

/// The task function: echo returns its argument, noop an empty string.
pub async fn run_job(job: Job) -> Result<String, BoxDynError> {
    Ok(match job {
        Job::Noop => String::new(),
        Job::Echo(s) => s,
    })
}

pub enum Store {
    Sqlite(SqliteStorage<Job>, SqlitePool),
    Redis(RedisStorage<Job>, redis::Client),
}

pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite:")
}

/// A pool whose every connection runs in WAL mode with `synchronous=NORMAL`, as huey-rs's
/// SQLite storage does (apalis's `setup` sets `synchronous=OFF` on the one connection it runs
/// on, and sqlx leaves the others at SQLite's FULL).
pub async fn sqlite_pool(path: &str) -> Res<SqlitePool> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(30))
        .pragma("journal_mode", "WAL")
        .pragma("synchronous", "NORMAL");
    Ok(SqlitePoolOptions::new().connect_with(opts).await?)
}

pub fn sqlite_config(batch: usize) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(QUEUE)
        .batch_size(batch)
}

pub fn redis_config(batch: usize) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(QUEUE)
        .batch_size(batch)
}

impl Store {
    /// The producer's storage, emptied first: a new SQLite file with apalis's schema, or a
    /// flushed Redis database (the benchmark's private server).
    pub async fn fresh(url: &str, batch: usize) -> Res<Store> {
        if let Some(path) = sqlite_path(url) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            // The schema on a pool of its own, so that its `synchronous=OFF` stays there.
            let setup = sqlite_pool(path).await?;
            SqliteStorage::setup(&setup).await?;
            setup.close().await;
            let pool = sqlite_pool(path).await?;
            let storage = SqliteStorage::new(&pool).with_config(sqlite_config(batch));
            Ok(Store::Sqlite(storage, pool))
        } else {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await?;
            let manager = client.get_connection_manager().await?;
            let storage = RedisStorage::new(manager).with_config(redis_config(batch));
            Ok(Store::Redis(storage, client))
        }
    }

    /// Push tasks with `TaskSink::push_all`: one transaction (SQLite) or one Lua script call
    /// (Redis) for the lot.
    pub async fn push(&mut self, tasks: Vec<Task<Job>>) -> Res<()> {
        let mut tasks = stream::iter(tasks);
        match self {
            Store::Sqlite(s, _) => s.push_all(&mut tasks).await?,
            Store::Redis(s, _) => s.push_all(&mut tasks).await?,
        }
        Ok(())
    }

    /// Redis only: move every task from apalis's scheduled set to its ready list, in chunks,
    /// as its fetch script does. apalis-redis 1.0.0 clamps each pushed task's run_at to the
    /// present second, so a push always lands in the scheduled set, and the fetch script moves
    /// all due tasks with one Lua `unpack`, which fails past ~8,000 (`too many results to
    /// unpack`): a worker started on 20,000 waiting tasks stops with that error. Same order
    /// (score, then the monotonic id), same end state as the fetch script's, just not in one
    /// call.
    pub async fn promote_due(&mut self) -> Res<()> {
        let Store::Redis(s, client) = self else {
            return Ok(());
        };
        let config = s.get_config().clone();
        let mut conn = client.get_multiplexed_async_connection().await?;
        let script = redis::Script::new(
            r"
            local ids = redis.call('zrangebyscore', KEYS[1], 0, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
            if #ids > 0 then
                redis.call('rpush', KEYS[2], unpack(ids))
                redis.call('zrem', KEYS[1], unpack(ids))
                redis.call('del', KEYS[3])
                redis.call('lpush', KEYS[3], 1)
            end
            return #ids
            ",
        );
        loop {
            let moved: u64 = script
                .key(config.scheduled_jobs_set())
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .arg(1000)
                .invoke_async(&mut conn)
                .await?;
            if moved == 0 {
                return Ok(());
            }
        }
    }

    /// The outcomes of those of `ids` that have one (`WaitForCompletion::check_status`).
    pub async fn outcomes(&mut self, ids: &[TaskId]) -> Res<Vec<TaskResult<String>>> {
        let ids = ids.iter().cloned();
        Ok(match self {
            Store::Sqlite(s, _) => WaitForCompletion::<String>::check_status(s, ids).await?,
            Store::Redis(s, _) => WaitForCompletion::<String>::check_status(s, ids).await?,
        })
    }

    /// Wait until every one of `ids` has an outcome, looking every millisecond (as huey-py's
    /// `result.get(blocking=True)` does with `max_delay=0.001`).
    pub async fn wait_all(
        &mut self,
        ids: &[TaskId],
        consumer: &mut Consumer,
    ) -> Res<Vec<TaskResult<String>>> {
        let deadline = Instant::now() + WAIT;
        let mut left: Vec<TaskId> = ids.to_vec();
        let mut got = Vec::new();
        while !left.is_empty() {
            let done = self.outcomes(&left).await?;
            if !done.is_empty() {
                let seen: HashSet<String> = done.iter().map(|r| r.task_id.to_string()).collect();
                left.retain(|id| !seen.contains(&id.to_string()));
                got.extend(done);
                continue;
            }
            if Instant::now() > deadline {
                return Err(format!("{} tasks had no outcome after {WAIT:?}", left.len()).into());
            }
            consumer.check()?;
            // A blocking sleep: the producer's runtime has nothing else to do, and a timer
            // tick would round the pause up to 1-2 ms.
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(got)
    }

    /// How many tasks the storage shows as done.
    pub async fn done_count(&mut self) -> Res<u64> {
        match self {
            Store::Sqlite(_, pool) => {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
                    .fetch_one(&*pool)
                    .await?;
                Ok(n as u64)
            }
            Store::Redis(s, client) => {
                let mut conn = client.get_multiplexed_async_connection().await?;
                let key = s.get_config().done_jobs_set();
                Ok(redis::cmd("SCARD").arg(key).query_async(&mut conn).await?)
            }
        }
    }
}

/// A task with a known id, so that its outcome can be looked up.
pub fn task(job: Job, ids: &mut ulid::Generator) -> Res<(TaskId, Task<Job>)> {
    let ulid = ids.generate().map_err(|e| format!("task id: {e:?}"))?;
    let id = TaskId::from_ulid(ulid);
    Ok((id.clone(), TaskBuilder::new(job).task_id(id).build()))
}

/// How the latency scenario learns that a task has an outcome: on Redis, apalis's completion
/// notice (the storage publishes the task id on `tasks:QUEUE:done` as it records a `Done`
/// outcome); on SQLite, which has none across processes, by looking every millisecond.
pub enum DoneNotices {
    Poll,
    Redis(redis::aio::PubSubStream),
}

impl DoneNotices {
    /// Subscribe before anything is pushed, so no notice can be missed.
    pub async fn open(store: &Store) -> Res<DoneNotices> {
        match store {
            Store::Sqlite(..) => Ok(DoneNotices::Poll),
            Store::Redis(s, client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub
                    .subscribe(format!("tasks:{}", s.get_config().done_jobs_set()))
                    .await?;
                Ok(DoneNotices::Redis(pubsub.into_on_message()))
            }
        }
    }

    /// The outcome of `id`, once the storage has it.
    pub async fn wait(
        &mut self,
        store: &mut Store,
        id: &TaskId,
        consumer: &mut Consumer,
    ) -> Res<TaskResult<String>> {
        if let DoneNotices::Redis(messages) = self {
            let want = id.to_string();
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let msg = tokio::time::timeout(left, messages.next())
                    .await
                    .map_err(|_| format!("no completion notice after {WAIT:?}"))?
                    .ok_or("the pub/sub connection closed")?;
                let got: String = msg.get_payload()?;
                if got == want {
                    break;
                }
            }
        }
        let mut got = store.wait_all(std::slice::from_ref(id), consumer).await?;
        got.pop().ok_or_else(|| "no outcome".into())
    }
}
