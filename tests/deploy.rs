//! Running hueyd as a daemon: the SysV init script for real, the pidfile, log reopening,
//! worker count signals, and systemd readiness.

#[macro_use]
mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::hueyd::{children, wait_until, Backend, Hueyd};
use huey::Task;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

fn init(dir: &Path, b: &Backend, action: &str) -> Output {
    Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/hueyd.init"))
        .arg(action)
        .env("DAEMON", common::hueyd::exe())
        .env("DAEMON_ARGS", "--workers 2 --kind process")
        .env("HUEY_STORAGE", b.url())
        .env("PIDFILE", dir.join("run/hueyd.pid"))
        .env("LOGFILE", dir.join("log/hueyd.log"))
        .env("WORKDIR", dir.join("work"))
        .env("RUN_AS", "")
        .env("STOP_TIMEOUT", "5")
        .output()
        .unwrap()
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn init_script_starts_reports_reloads_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::sqlite();
    let pidfile = dir.path().join("run/hueyd.pid");
    let log = dir.path().join("log/hueyd.log");

    let out = init(dir.path(), &b, "start");
    assert!(out.status.success(), "{out:?}");
    let pid = pid_in(&pidfile).expect("pidfile written");
    assert!(alive(pid));
    let out = init(dir.path(), &b, "status");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("running"));

    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    assert_eq!(add.enqueue((1, 2)).unwrap().wait(LONG).unwrap(), 3);

    assert!(wait_until(LONG, || children(pid).len() == 2));
    let before = children(pid);
    let out = init(dir.path(), &b, "reload");
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(LONG, || {
            let now = children(pid);
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        }),
        "workers restarted"
    );
    assert!(std::fs::read_to_string(&log).unwrap().contains("SIGHUP"));

    let out = init(dir.path(), &b, "stop");
    assert!(out.status.success(), "{out:?}");
    assert!(!alive(pid), "stopped");
    assert!(!pidfile.exists(), "pidfile removed");
    assert_eq!(init(dir.path(), &b, "status").status.code(), Some(3));
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("consumer stopped"));
}

#[test]
fn pidfile_naming_a_live_unrelated_process_is_taken_over() {
    // The lock says whether a consumer runs, not the pid: a pid reused by another program
    // (here a `sleep`) does not keep a consumer from starting.
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::sqlite();
    let pidfile = dir.path().join("hueyd.pid");
    let pf = pidfile.to_str().unwrap();

    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&pidfile, format!("{}\n", other.id())).unwrap();
    let mut h = Hueyd::start(&b.url(), &["--pidfile", pf]);
    let taken = wait_until(LONG, || pid_in(&pidfile) == Some(h.pid()));
    let _ = other.kill();
    let _ = other.wait();
    assert!(taken, "pidfile taken over: {}", h.log());
    h.signal(Signal::SIGTERM);
    assert!(h.wait_exit(LONG).unwrap().success());
    assert!(!pidfile.exists(), "removed at exit");
}

#[test]
fn sigusr1_reopens_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::sqlite();
    let log = dir.path().join("hueyd.log");
    let h = Hueyd::start(&b.url(), &["--logfile", log.to_str().unwrap()]);
    assert!(wait_until(LONG, || std::fs::read_to_string(&log)
        .is_ok_and(|s| s.contains("consumer started"))));
    std::fs::rename(&log, dir.path().join("hueyd.log.1")).unwrap();
    h.signal(Signal::SIGUSR1);
    assert!(wait_until(LONG, || std::fs::read_to_string(&log)
        .is_ok_and(|s| s.contains("log file reopened"))));
    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let r = add.enqueue((2, 2)).unwrap();
    assert_eq!(r.wait(LONG).unwrap(), 4);
    assert!(
        wait_until(LONG, || std::fs::read_to_string(&log)
            .is_ok_and(|s| s.contains(r.id()))),
        "new lines go to the new file"
    );
}

#[test]
fn ttin_and_ttou_add_and_remove_workers() {
    let b = Backend::sqlite();
    let h = Hueyd::start(&b.url(), &["-k", "process", "-w", "2"]);
    assert_eq!(h.wait_workers(2, LONG).len(), 2);
    h.signal(Signal::SIGTTIN);
    assert_eq!(h.wait_workers(3, LONG).len(), 3);
    // One at a time: two identical signals sent back to back may arrive as one.
    h.signal(Signal::SIGTTOU);
    assert_eq!(h.wait_workers(2, LONG).len(), 2);
    h.signal(Signal::SIGTTOU);
    assert_eq!(h.wait_workers(1, LONG).len(), 1);
    h.signal(Signal::SIGTTOU);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.workers().len(), 1, "the last worker stays");
    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    assert_eq!(add.enqueue((5, 5)).unwrap().wait(LONG).unwrap(), 10);
}

#[test]
fn systemd_is_told_when_the_consumer_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let b = Backend::sqlite();
    let mut child = Command::new(common::hueyd::exe())
        .args(["--storage", &b.url(), "-q"])
        .env("NOTIFY_SOCKET", &sock_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}
