//! How big the Postgres storage's tables get after a million tasks, with and without autovacuum
//! keeping up. Starts a private server (`initdb` in a temporary directory, as the tests do) and
//! the release `hueyd` beside this example, and prints what it measures:
//!
//! ```text
//! cargo build --release --bin hueyd --example pg_size
//! target/release/examples/pg_size [TASKS] [--reuse] [--backlog]
//! ```
//!
//! **Steady flow** (TASKS, default 1,000,000): a producer enqueues `noop` tasks in batches of
//! 1,000, keeping at most 10,000 waiting, while one consumer (`hueyd -k thread -w 4`) drains
//! them. Every tenth of the way it prints the total size of the schema's tables
//! (`pg_total_relation_size`: heap, indexes and TOAST of every table in the schema), the queue
//! table's own size, its dead rows and how often autovacuum has run on it. First in a schema
//! with the server's default autovacuum settings, then in a second schema whose tables have
//! autovacuum turned off (`autovacuum_enabled = false`), and that schema again after one plain
//! `VACUUM`; with `--reuse`, after a second flow of TASKS there (is the space vacuum freed
//! reused?).
//!
//! **Backlog** (`--backlog`): then TASKS enqueued at once with no consumer running (the size
//! with all of them waiting), drained, and the size once they are gone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huey::storage::Flush;
use huey::{Huey, Task};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[path = "../tests/common/redis_server.rs"]
mod redis_server;

#[path = "../tests/common/pg_server.rs"]
mod pg_server;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Most tasks left waiting while the producer runs beside the consumer.
const MAX_WAITING: u64 = 10_000;

fn main() {
    let mut tasks = 1_000_000u64;
    let (mut backlog, mut reuse) = (false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--backlog" => backlog = true,
            "--reuse" => reuse = true,
            n => match n.replace('_', "").parse() {
                Ok(n) => tasks = n,
                Err(_) => {
                    eprintln!("usage: pg_size [TASKS] [--reuse] [--backlog]");
                    std::process::exit(2);
                }
            },
        }
    }
    if let Err(e) = run(tasks, reuse, backlog) {
        eprintln!("pg_size: {e}");
        std::process::exit(1);
    }
}

fn run(tasks: u64, reuse: bool, backlog: bool) -> Res<()> {
    let server = pg_server::PgServer::start();
    let mut sql = postgres::Client::connect(&server.url(), postgres::NoTls)?;
    let version: String = sql.query_one("SHOW server_version", &[])?.get(0);
    println!("PostgreSQL {version}, {tasks} noop tasks per flow, at most {MAX_WAITING} waiting");

    let on = Schema::open(&server, "size_autovacuum")?;
    println!("\n== steady flow, autovacuum with the server's default settings");
    on.flow(&mut sql, tasks)?;

    let off = Schema::open(&server, "size_no_autovacuum")?;
    for table in off.tables(&mut sql)? {
        sql.batch_execute(&format!(
            "ALTER TABLE {}.{table} SET (autovacuum_enabled = false, \
             toast.autovacuum_enabled = false)",
            off.name
        ))?;
    }
    println!("\n== steady flow, autovacuum off for the schema's tables");
    off.flow(&mut sql, tasks)?;
    let t = Instant::now();
    sql.batch_execute(&format!("VACUUM {}.queue", off.name))?;
    off.report(
        &mut sql,
        &format!("after VACUUM ({:.1} s)", t.elapsed().as_secs_f64()),
    )?;
    if reuse {
        println!("\n== the same schema, a second flow after that VACUUM (autovacuum still off)");
        off.flow(&mut sql, tasks)?;
    }

    if backlog {
        println!("\n== backlog: all enqueued first, then drained (autovacuum on)");
        let t = Instant::now();
        on.enqueue(tasks)?;
        let enq = t.elapsed().as_secs_f64();
        on.report(
            &mut sql,
            &format!("{tasks} waiting (enqueued in {enq:.1} s)"),
        )?;
        let consumer = on.consumer()?;
        let t = Instant::now();
        on.wait_empty()?;
        let drained = t.elapsed().as_secs_f64();
        drop(consumer);
        on.report(&mut sql, &format!("drained in {drained:.1} s"))?;
    }
    Ok(())
}

/// One storage schema on the server, with the demo tasks registered.
struct Schema {
    name: String,
    url: String,
    app: Huey,
    noop: Task<(), ()>,
}

impl Schema {
    fn open(server: &pg_server::PgServer, name: &str) -> Res<Schema> {
        let url = format!("{}?schema={name}", server.url());
        let app = Huey::open("hueyd", &url)?;
        huey::demo::register(&app)?;
        app.storage().flush(Flush::all())?;
        let noop = Task::from_name(&app, "noop")?;
        Ok(Schema {
            name: name.to_string(),
            url,
            app,
            noop,
        })
    }

    fn tables(&self, sql: &mut postgres::Client) -> Res<Vec<String>> {
        Ok(sql
            .query(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n \
                 ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r' \
                 ORDER BY 1",
                &[&self.name],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// A consumer with 4 thread workers on this schema, stopped when dropped.
    fn consumer(&self) -> Res<Consumer> {
        let exe = std::env::current_exe()?;
        let hueyd = exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("hueyd"))
            .filter(|p| p.exists())
            .ok_or("hueyd not found beside this example: cargo build --release --bin hueyd")?;
        Consumer::start(&hueyd, &self.url)
    }

    fn enqueue(&self, n: u64) -> Res<()> {
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            self.noop
                .enqueue_many(std::iter::repeat_n((), k as usize))?;
            left -= k;
        }
        Ok(())
    }

    fn wait_empty(&self) -> Res<()> {
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            let c = self.app.storage().counts()?;
            if c.ready + c.in_flight == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the queue did not empty within an hour".into());
            }
            // Counting a large backlog is itself work for the server: not too often.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `tasks` through a running consumer, never more than [`MAX_WAITING`] waiting; a report
    /// every tenth.
    fn flow(&self, sql: &mut postgres::Client, tasks: u64) -> Res<()> {
        let consumer = self.consumer()?;
        let started = Instant::now();
        let step = (tasks / 10).max(1000);
        let (mut sent, mut next) = (0u64, step);
        while sent < tasks {
            if self.app.storage().counts()?.ready >= MAX_WAITING {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let k = (tasks - sent).min(1000);
            self.enqueue(k)?;
            sent += k;
            if sent >= next || sent == tasks {
                next += step;
                let s = started.elapsed().as_secs_f64();
                self.report(sql, &format!("{sent} enqueued, {s:.0} s"))?;
            }
        }
        self.wait_empty()?;
        let s = started.elapsed().as_secs_f64();
        drop(consumer);
        self.report(
            sql,
            &format!(
                "all {tasks} done in {s:.0} s ({:.0} tasks/s)",
                tasks as f64 / s
            ),
        )
    }

    /// One line: the schema's total size, the queue table's (heap + indexes), its live and
    /// dead rows and vacuum runs.
    fn report(&self, sql: &mut postgres::Client, label: &str) -> Res<()> {
        let total: i64 = sql
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&self.name],
            )?
            .get(0);
        let queue = format!("{}.queue", self.name);
        let r = sql.query_one(
            "SELECT pg_relation_size($1::text::regclass), pg_indexes_size($1::text::regclass),
                    coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
                    coalesce(s.autovacuum_count, 0), coalesce(s.vacuum_count, 0)
             FROM (SELECT 1) one LEFT JOIN pg_stat_user_tables s ON s.relid = $1::text::regclass",
            &[&queue],
        )?;
        let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
        let (heap, idx): (i64, i64) = (r.get(0), r.get(1));
        let (live, dead, auto, manual): (i64, i64, i64, i64) =
            (r.get(2), r.get(3), r.get(4), r.get(5));
        println!(
            "{label:>34}: schema {:7.1} MiB | queue heap {:6.1} MiB, indexes {:6.1} MiB, \
             {live} live / {dead} dead rows, autovacuum {auto}x, vacuum {manual}x",
            mib(total),
            mib(heap),
            mib(idx),
        );
        Ok(())
    }
}

/// A running `hueyd`, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Consumer {
    child: Child,
}

impl Consumer {
    fn start(hueyd: &Path, url: &str) -> Res<Consumer> {
        let child = Command::new(hueyd)
            .args(["--storage", url, "-k", "thread", "-w", "4", "-q", "-n"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Consumer { child })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
