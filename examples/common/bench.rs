//! Setup shared by the benchmark drivers (`examples/bench.rs`, `examples/bench_scaling.rs`,
//! `examples/bench_async.rs`): a fresh storage with the tasks, the `hueyd` to run, stopping
//! it, and reading a process's memory.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use huey::storage::Flush;
use huey::Huey;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// An empty storage with the demo tasks registered, under `hueyd`'s app name (Redis keys are
/// prefixed with it). A SQLite file is deleted first, so each run starts from an empty one.
pub fn fresh_app(url: &str) -> Res<Huey> {
    fresh_app_with(url, huey::demo::register)
}

/// [`fresh_app`] with the tasks `register` adds.
pub fn fresh_app_with(url: &str, register: impl Fn(&Huey) -> huey::Result<()>) -> Res<Huey> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let app = Huey::open("hueyd", url)?;
    register(&app)?;
    app.storage().flush(Flush::all())?;
    Ok(app)
}

/// The consumer binary: `given`, or the release `hueyd` next to this example's directory
/// (target/release/examples/NAME -> target/release/hueyd).
pub fn hueyd_path(given: Option<&PathBuf>) -> Res<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let p = dir.join("hueyd");
    if !p.exists() {
        return Err(format!(
            "{} not found: build it with cargo build --release",
            p.display()
        )
        .into());
    }
    Ok(p)
}

/// Stop a consumer: SIGTERM, then SIGKILL if it has not exited within 30 s.
pub fn stop(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A memory figure of a process from `/proc/PID/status` (`field` such as `"VmHWM:"`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
