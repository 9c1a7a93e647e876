//! The consumer: this binary run as `bench-apalis consume ...` in a process of its own (as
//! `hueyd` and `huey_consumer` are), one apalis worker with a concurrency limit of W on a
//! multi-threaded tokio runtime, until it is killed.

use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use apalis_sqlite::SqliteStorage;
use futures::FutureExt;
use futures_timer::Delay;

use crate::store::{redis_config, run_job, sqlite_config, sqlite_path, sqlite_pool, Job, Res};
use crate::Args;

/// The consumer process; killed (and reaped) when dropped.
pub struct Consumer(Child);

impl Consumer {
    pub fn start(a: &Args) -> Res<Consumer> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("consume")
            .args(["--storage", &a.storage])
            .args(["--workers", &a.workers.to_string()])
            .args(["--batch-size", &a.batch_size.to_string()])
            .args(["--poll-ms", &a.poll_ms.to_string()])
            .args(["--split", &a.split.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Consumer(child))
    }

    /// An error if the consumer has exited.
    pub fn check(&mut self) -> Res<()> {
        match self.0.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!("the consumer exited ({status})").into()),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the workers until killed. With `split`, W workers of concurrency 1 instead of one of
/// concurrency W.
pub fn consume(a: &Args) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (lanes, concurrency) = if a.split {
            (a.workers, 1)
        } else {
            (1, a.workers)
        };
        let pid = std::process::id();
        let mut runs = Vec::new();
        // One worker on `backend` (its type differs by storage, the rest does not).
        macro_rules! spawn_worker {
            ($backend:expr, $i:expr) => {{
                let worker = WorkerBuilder::new(format!("bench-{pid}-{}", $i))
                    .backend($backend)
                    .concurrency(concurrency)
                    .build(run_job);
                runs.push(tokio::spawn(async move {
                    worker.run().await.map_err(|e| e.to_string())
                }));
            }};
        }
        if let Some(path) = sqlite_path(&a.storage) {
            // What an apalis application does at start (its examples all do): `setup`, i.e.
            // migrations, pragmas and `PRAGMA optimize`, which gathers the table statistics
            // SQLite's planner needs to pick the primary key for apalis's lock and ack
            // statements (see BENCHMARKS.md). On a pool of its own, so that its
            // `synchronous=OFF` stays there.
            let setup = sqlite_pool(path).await?;
            SqliteStorage::setup(&setup).await?;
            setup.close().await;
            let pool = sqlite_pool(path).await?;
            for i in 0..lanes {
                // SQLite has no cross-process wake-up (its update hook only sees this
                // process's writes): an idle worker looks for new tasks every `poll_ms`.
                let backend = SqliteStorage::<Job>::new(&pool)
                    .with_config(sqlite_config(a.batch_size))
                    .poll_with_strategy(Every::new(a.poll_ms));
                spawn_worker!(backend, i);
            }
        } else {
            // apalis-redis 1.0.0 clamps every task's run_at to the present second, so each
            // push goes to its scheduled set and its "available" pub/sub notice (what the
            // storage factory's backends wake on) is never sent: workers poll as on SQLite.
            for i in 0..lanes {
                let conn = apalis_redis::connect(a.storage.as_str()).await?;
                let backend = RedisStorage::<Job>::new(conn)
                    .with_config(redis_config(a.batch_size))
                    .poll_with_strategy(Every::new(a.poll_ms));
                spawn_worker!(backend, i);
            }
        }
        for r in runs {
            r.await??;
        }
        Ok(())
    })
}

/// apalis's `IntervalStrategy` (`poll_with_interval`) with one fix. When its timer fires it
/// returns `Ready` and sets up the next timer without polling it, so no wake-up is registered
/// for that next tick; if the backend then answers `Pending` at once (a fetch already in flight
/// comes back empty in that same poll), the worker sleeps until something else wakes it: the
/// heartbeat, 30 s later. With a 1 ms interval, a fetch is in flight at a tick often enough
/// that SQLite's latency run stalled within a few round trips. This one polls the new timer
/// before it answers, so a tick is always armed.
pub struct Every {
    interval: Duration,
    delay: Delay,
}

impl Every {
    pub fn new(ms: u64) -> Every {
        let interval = Duration::from_millis(ms);
        Every {
            interval,
            delay: Delay::new(interval),
        }
    }
}

impl PollStrategy for Every {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        while Pin::new(&mut self.delay).poll_unpin(cx).is_ready() {
            self.delay = Delay::new(self.interval);
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
