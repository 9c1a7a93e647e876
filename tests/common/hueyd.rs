//! Runs a consumer for a test — the real `hueyd` binary, or the testbed example (`hueyd` plus
//! the fault-injection tasks) — with its own storage, its log in a file, signals by pid,
//! killed (with its workers) when dropped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use huey::Huey;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where a test's consumers keep their queue.
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Redis(super::redis_server::RedisServer),
    /// A fresh schema on the private Postgres server this test binary shares.
    Postgres(String),
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }
    pub fn redis() -> Backend {
        Backend::Redis(super::redis_server::RedisServer::start())
    }
    pub fn postgres() -> Backend {
        Backend::Postgres(super::pg_server::fresh_schema_url())
    }
    pub fn url(&self) -> String {
        match self {
            Backend::Postgres(url) => url.clone(),
            Backend::Sqlite(d) => format!("sqlite:{}", d.path().join("huey.db").display()),
            Backend::Redis(r) => r.url(),
        }
    }
    /// The app as a producer sees it: the demo and fault-injection tasks, on this storage.
    pub fn app(&self) -> Huey {
        let app = Huey::open("hueyd", &self.url()).expect("open storage");
        super::testbed::register(&app).unwrap();
        app
    }
}

/// The worker kinds the behaviour tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Thread,
    Process,
    /// `-k async`: futures on one runtime in the consumer.
    Async,
    /// `-k process --concurrency 8`: futures on a runtime in each worker process.
    ProcessConcurrent,
}

impl Kind {
    /// `-k KIND` (and `--concurrency 8`), then `args`.
    pub fn args<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = match self {
            Kind::Thread => vec!["-k", "thread"],
            Kind::Process => vec!["-k", "process"],
            Kind::Async => vec!["-k", "async"],
            Kind::ProcessConcurrent => vec!["-k", "process", "--concurrency", "8"],
        };
        v.extend_from_slice(args);
        v
    }

    /// Its tasks run in worker processes.
    pub fn is_process(self) -> bool {
        matches!(self, Kind::Process | Kind::ProcessConcurrent)
    }

    /// Its workers run many attempts at once, as futures.
    pub fn concurrent(self) -> bool {
        matches!(self, Kind::Async | Kind::ProcessConcurrent)
    }

    /// The task a behaviour test runs for one of the testbed's sync tasks: on the kinds that
    /// run futures, its async twin (`sleep` → `async_sleep`), where there is one.
    pub fn task(self, name: &'static str) -> &'static str {
        if !self.concurrent() {
            return name;
        }
        match name {
            "sleep" => "async_sleep",
            "record" => "async_record",
            "failing" => "async_failing",
            "locked_sleep" => "async_locked_sleep",
            "pid" => "async_pid",
            "panic" => "async_panic",
            other => other,
        }
    }

    /// Start a consumer of this kind with `args`: the real `hueyd` for sync kinds, the
    /// testbed (which has the async tasks) for the others.
    pub fn start(self, url: &str, args: &[&str]) -> Hueyd {
        let args = self.args(args);
        if self.concurrent() {
            Hueyd::testbed(url, &args)
        } else {
            Hueyd::start(url, &args)
        }
    }

    /// Start the testbed consumer of this kind with `args`.
    pub fn testbed(self, url: &str, args: &[&str]) -> Hueyd {
        Hueyd::testbed(url, &self.args(args))
    }
}

/// A running `hueyd`.
pub struct Hueyd {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_hueyd")
}

/// The testbed example: `hueyd`'s command line with the fault-injection tasks registered too.
pub fn testbed_exe() -> PathBuf {
    super::example("testbed")
}

impl Hueyd {
    /// Start `hueyd --storage URL -n ARGS...`: without the periodic ticker, whose `heartbeat`
    /// would otherwise join the queue at the turn of each minute and upset counts.
    pub fn start(url: &str, args: &[&str]) -> Hueyd {
        Hueyd::spawn(exe().as_ref(), url, args)
    }

    /// Start the testbed consumer, for a test that needs the fault-injection tasks; otherwise
    /// as [`Hueyd::start`].
    pub fn testbed(url: &str, args: &[&str]) -> Hueyd {
        Hueyd::spawn(&testbed_exe(), url, args)
    }

    fn spawn(exe: &std::path::Path, url: &str, args: &[&str]) -> Hueyd {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hueyd.log");
        let child = Command::new(exe)
            .arg("--storage")
            .arg(url)
            .arg("-n")
            .args(args)
            .env_remove("HUEY_STORAGE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start hueyd");
        Hueyd {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Wait for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Pids of its worker processes.
    pub fn workers(&self) -> Vec<i32> {
        children(self.pid())
    }

    /// Wait until it has `n` worker processes, and return them.
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Vec<i32> {
        let mut w = Vec::new();
        wait_until(timeout, || {
            w = self.workers();
            w.len() == n
        });
        w
    }
}

impl Drop for Hueyd {
    fn drop(&mut self) {
        let workers = self.workers();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            let _ = kill(Pid::from_raw(w), Signal::SIGKILL);
        }
    }
}

/// Direct children of a process.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Poll `f` every 20 ms until it holds or the time is up.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
