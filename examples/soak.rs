//! Soak: the fault tests at scale. Consumers drain tens of thousands of tasks while workers,
//! supervisors and (on Redis and Postgres) the server itself are killed at random, a consumer is now
//! and then paused (SIGSTOP) past its lease, large messages mix with long tasks, and tasks
//! start subprocesses (the app's own binary among them, and children left running); at the end
//! every task must have its result or a recorded final failure. Prints one line of figures.
//!
//! Run through `scripts/soak [SECONDS] [sqlite|redis|postgres]`. Postgres is a private server
//! (`initdb` in a temporary directory, as the tests start it), killed with SIGQUIT (a crash)
//! and started again. The consumers are the `testbed` example
//! (`hueyd` plus the fault-injection tasks), built beside this one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use huey::{Error, Huey, Task, TaskResult};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[path = "../tests/common/testbed.rs"]
mod testbed;

#[path = "../tests/common/redis_server.rs"]
mod redis_server;

#[path = "../tests/common/pg_server.rs"]
mod pg_server;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn consumer(exe: &PathBuf, url: &str) -> Child {
    Command::new(exe)
        .args([
            "--storage",
            url,
            "-k",
            "process",
            "-w",
            "4",
            "-q",
            "--lease",
            "2",
            "-n",
        ])
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("HUEY_SOAK_LOG") {
            // Consumers' logs appended to this file, for a run that goes wrong.
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            None => Stdio::null(),
        })
        .spawn()
        .expect("start the testbed consumer")
}

struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16, dir: tempfile::TempDir) -> Redis {
        let child =
            Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("start redis-server");
        let r = Redis { child, port, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }
    fn restart(self) -> Redis {
        let Redis {
            mut child,
            port,
            dir,
        } = self;
        let _ = child.kill();
        let _ = child.wait();
        Redis::start(port, dir)
    }
}

/// Wait for a task's outcome until `end`: `Some(Ok)`, `Some(Err)` (a recorded final failure)
/// or `None` (lost). Storage errors (a restarting Redis) are retried.
fn settle<R: serde::de::DeserializeOwned>(
    h: &TaskResult<R>,
    end: Instant,
) -> Option<Result<R, huey::TaskError>> {
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match h.wait(left.min(Duration::from_secs(2))) {
            Ok(v) => return Some(Ok(v)),
            Err(Error::Task(e)) => return Some(Err(e)),
            Err(Error::Timeout(_)) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What the testbed's `spawn` task returns: pid, exit code, stdout.
type Spawned = (u32, Option<i32>, String);

/// The extra faults: large messages behind long tasks, and tasks that start subprocesses.
struct Extras {
    echo: Task<String, String>,
    sleep: Task<u64, u64>,
    spawn: Task<(Vec<String>, bool), Spawned>,
    large: Vec<(TaskResult<String>, usize)>,
    long: Vec<TaskResult<u64>>,
    spawned: Vec<TaskResult<Spawned>>,
}

impl Extras {
    fn new(app: &Huey) -> Extras {
        Extras {
            echo: Task::from_name(app, "echo").unwrap(),
            sleep: Task::from_name(app, "sleep").unwrap(),
            spawn: Task::from_name(app, "spawn").unwrap(),
            large: Vec::new(),
            long: Vec::new(),
            spawned: Vec::new(),
        }
    }

    /// A long task, a few large messages behind it, and two tasks with subprocesses: one runs
    /// the app's own binary (`enqueue`), one leaves a child running past its end.
    fn enqueue(&mut self, rng: &mut Rng, exe: &std::path::Path, url: &str) {
        if let Ok(h) = self.sleep.enqueue(500 + rng.below(2500)) {
            self.long.push(h);
        }
        for _ in 0..3 {
            let len = 10_000 + rng.below(90_000) as usize;
            if let Ok(h) = self.echo.enqueue("L".repeat(len)) {
                self.large.push((h, len));
            }
        }
        let own = vec![
            exe.display().to_string(),
            "--storage".into(),
            url.into(),
            "enqueue".into(),
            "add".into(),
            "[1, 2]".into(),
        ];
        let stray = ["sh", "-c", "sleep 5 >/dev/null 2>&1 &"]
            .map(String::from)
            .to_vec();
        for argv in [own, stray] {
            if let Ok(h) = self.spawn.enqueue((argv, true)) {
                self.spawned.push(h);
            }
        }
    }

    /// (completed, failed, lost, wrong) over the extra tasks.
    fn settle(&self, end: Instant) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        let mut count = |o: Option<Result<bool, huey::TaskError>>| match o {
            Some(Ok(true)) => t.0 += 1,
            Some(Ok(false)) => t.3 += 1,
            Some(Err(_)) => t.1 += 1,
            None => t.2 += 1,
        };
        for (h, len) in &self.large {
            count(settle(h, end).map(|r| r.map(|s| s.len() == *len)));
        }
        for h in &self.long {
            count(settle(h, end).map(|r| r.map(|_| true)));
        }
        for h in &self.spawned {
            count(settle(h, end).map(|r| r.map(|(_, code, _)| code == Some(0))));
        }
        t
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let backend = args.next().unwrap_or_else(|| "sqlite".into());
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("testbed");
    let dir = tempfile::tempdir().unwrap();
    let mut redis = None;
    let mut postgres = None;
    let url = if backend == "postgres" {
        let server = pg_server::PgServer::start();
        let url = server.url();
        postgres = Some(server);
        url
    } else if backend == "redis" {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = Redis::start(port, tempfile::tempdir().unwrap());
        let url = format!("redis://127.0.0.1:{}/0", r.port);
        redis = Some(r);
        url
    } else {
        format!("sqlite:{}", dir.path().join("soak.db").display())
    };
    let app = Huey::open("hueyd", &url).expect("open storage");
    testbed::register(&app).unwrap();
    let record: Task<u64, u32> = Task::from_name(&app, "record").unwrap();
    let mut extras = Extras::new(&app);

    let mut consumers = vec![consumer(&exe, &url), consumer(&exe, &url)];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id()));
    let mut handles = Vec::new();
    let (mut worker_kills, mut supervisor_kills, mut server_restarts) = (0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut last_supervisor_kill = Instant::now();
    let mut last_redis_restart = Instant::now();
    let mut last_pause = Instant::now();
    let mut pauses = 0u64;
    while Instant::now() < end {
        if handles.len() < 200_000 {
            match record.enqueue_many(std::iter::repeat_n(1 + rng.below(3), 500)) {
                Ok(hs) => handles.extend(hs),
                Err(e) => eprintln!("enqueue failed (retrying): {e}"),
            }
            if rng.below(5) == 0 {
                extras.enqueue(&mut rng, &exe, &url);
            }
        }
        if last_pause.elapsed() > Duration::from_secs(11) {
            // Past its 2 s lease: another consumer takes its tasks over meanwhile.
            let pid = Pid::from_raw(consumers[rng.below(2) as usize].id() as i32);
            let _ = kill(pid, Signal::SIGSTOP);
            std::thread::sleep(Duration::from_secs(3));
            let _ = kill(pid, Signal::SIGCONT);
            pauses += 1;
            last_pause = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
        let c = rng.below(consumers.len() as u64) as usize;
        let ws = children(consumers[c].id());
        if !ws.is_empty()
            && kill(
                Pid::from_raw(ws[rng.below(ws.len() as u64) as usize]),
                Signal::SIGKILL,
            )
            .is_ok()
        {
            worker_kills += 1;
        }
        if last_supervisor_kill.elapsed() > Duration::from_secs(7) {
            let _ = consumers[c].kill();
            let _ = consumers[c].wait();
            consumers[c] = consumer(&exe, &url);
            supervisor_kills += 1;
            last_supervisor_kill = Instant::now();
        }
        if last_redis_restart.elapsed() > Duration::from_secs(17) {
            if let Some(r) = redis.take() {
                redis = Some(r.restart());
                server_restarts += 1;
            }
            if let Some(p) = postgres.as_mut() {
                p.restart();
                server_restarts += 1;
            }
            last_redis_restart = Instant::now();
        }
    }
    // Let the consumers finish in peace.
    let (mut ok, mut failed, mut lost, mut twice) = (0u64, 0u64, 0u64, 0u64);
    // Long enough for a backlog left by Redis restarts (each reloads a growing append-only file).
    let settle_end = Instant::now() + Duration::from_secs(300);
    for h in &handles {
        loop {
            let left = settle_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                lost += 1;
                break;
            }
            match h.wait(left.min(Duration::from_secs(2))) {
                Ok(n) => {
                    ok += 1;
                    twice += u64::from(n > 1);
                    break;
                }
                Err(Error::Task(_)) => {
                    failed += 1;
                    break;
                }
                Err(Error::Timeout(_)) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    let (x_ok, x_failed, x_lost, x_wrong) = extras.settle(settle_end);
    let counts = app.storage().counts().ok();
    let dead = counts.as_ref().map_or(0, |c| c.dead);
    // Tasks the consumers had not finished when the settle window closed (counted as lost
    // above): still waiting, leased or scheduled for a retry, not gone.
    let queued = counts.map_or(0, |c| c.ready + c.in_flight + c.scheduled);
    for mut c in consumers {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let _ = c.wait();
    }
    if let Some(mut r) = redis {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    drop(postgres);
    println!(
        "soak {backend} {seconds}s: tasks {}, completed {ok}, failed {failed}, kills {} (workers {worker_kills}, supervisors {supervisor_kills}, server restarts {server_restarts}), pauses {pauses}, lost {lost} (still queued {queued}), ran twice {twice}, dead-lettered {dead}; large/long/spawning tasks {}, completed {x_ok}, failed {x_failed}, lost {x_lost}, wrong {x_wrong}",
        handles.len(),
        worker_kills + supervisor_kills + server_restarts,
        extras.large.len() + extras.long.len() + extras.spawned.len(),
    );
    if lost > 0 || x_lost > 0 || x_wrong > 0 {
        std::process::exit(1);
    }
}
