//! `hueyd`'s options beyond its flags: `HUEY_*` variables and the `--config` file (and their
//! precedence), completions and the man page, read-only commands on a storage that does not
//! exist, and the pidfile lock between real consumers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::hueyd::{children, exe, wait_until};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hueyd ARGS` with `HUEY_*` variables `envs` (and no others from the test's environment).
fn hueyd(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(exe());
    for (k, _) in std::env::vars() {
        if k.starts_with("HUEY_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(envs.iter().copied());
    cmd
}

fn output(args: &[&str]) -> Output {
    hueyd(args, &[]).output().unwrap()
}

/// A consumer started by a test, killed (with its workers) if the test ends first.
struct Consumer {
    child: Child,
    log: PathBuf,
}

impl Consumer {
    fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Consumer {
        let log = dir.join(format!("consumer-{}.log", rand_suffix()));
        let child = hueyd(args, envs)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Consumer { child, log }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn started_line(&self) -> String {
        assert!(
            wait_until(LONG, || self.log().contains("consumer started")),
            "{}",
            self.log()
        );
        let log = self.log();
        log.lines()
            .find(|l| l.contains("consumer started"))
            .unwrap()
            .to_string()
    }
    fn stop(&mut self) -> bool {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        wait_until(LONG, || self.child.try_wait().unwrap().is_some())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let workers = children(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            let _ = kill(Pid::from_raw(w), Signal::SIGKILL);
        }
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("q.db").display())
}

// ----- environment and config file ---------------------------------------------------

#[test]
fn a_flag_beats_its_variable_which_beats_the_config_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("huey.toml");
    std::fs::write(
        &config,
        "workers = 2\nkind = \"process\"\nqueue = [\"from-file\"]\nno_periodic = true\n",
    )
    .unwrap();
    let pidfile = dir.path().join("c.pid");
    let mut c = Consumer::start(
        dir.path(),
        &["--config", config.to_str().unwrap(), "-Q", "from-flag"],
        &[
            ("HUEY_STORAGE", &sqlite(dir.path())),
            ("HUEY_WORKERS", "3"),
            ("HUEY_QUEUE", "from-env"),
            ("HUEY_PIDFILE", pidfile.to_str().unwrap()),
        ],
    );
    let line = c.started_line();
    // flag > env: the queue; env > file: the workers; file > default: the kind.
    assert!(line.contains("queues=[\"from-flag\"]"), "{line}");
    assert!(line.contains("workers=3"), "{line}");
    assert!(line.contains("kind=Process"), "{line}");
    assert!(wait_until(LONG, || pid_in(&pidfile) == Some(c.pid())));
    assert!(c.stop());

    // Without the flag and the variables, the file's values hold.
    let mut c = Consumer::start(
        dir.path(),
        &[
            "--storage",
            &sqlite(dir.path()),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let line = c.started_line();
    assert!(line.contains("queues=[\"from-file\"]"), "{line}");
    assert!(line.contains("workers=2"), "{line}");
    assert!(c.stop());
}

#[test]
fn variables_set_consumer_flags() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Consumer::start(
        dir.path(),
        &[],
        &[
            ("HUEY_STORAGE", &sqlite(dir.path())),
            ("HUEY_NO_PERIODIC", "yes"),
            ("HUEY_QUIET", "off"),
            ("HUEY_KIND", "process"),
            ("HUEY_WORKERS", "2"),
            ("HUEY_QUEUE", "high,low"),
            ("HUEY_LOG_FORMAT", "json"),
        ],
    );
    assert!(wait_until(LONG, || c.log().contains("consumer started")));
    let log = c.log();
    let line = log
        .lines()
        .find(|l| l.contains("consumer started"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(v["workers"], 2, "{line}");
    assert_eq!(v["kind"], "Process", "{line}");
    assert_eq!(v["queues"], "[\"high\", \"low\"]", "{line}");
    assert!(c.stop());

    let out = hueyd(&["-n"], &[("HUEY_WORKERS", "zero")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("zero"), "{out:?}");
}

#[test]
fn every_consumer_flag_has_its_variable() {
    use clap::Args;
    let cmd = huey::cli::ConsumerArgs::augment_args(clap::Command::new("consumer"));
    let mut checked = 0;
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let long = arg.get_long().expect("a long flag");
        let want = format!("HUEY_{}", long.to_uppercase().replace('-', "_"));
        let env = arg.get_env().and_then(|e| e.to_str());
        assert_eq!(env, Some(want.as_str()), "--{long}");
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

#[test]
fn config_file_unknown_keys_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    let cf = config.to_str().unwrap();
    let db = dir.path().join("q.db");
    let storage = format!("sqlite:{}", db.display());

    std::fs::write(&config, "workers = 2\nwrokers = 3\n").unwrap();
    let out = output(&["--storage", &storage, "--config", cf]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown key \"wrokers\"") && err.contains(cf),
        "{err}"
    );

    std::fs::write(&config, "workers = \"many\"\n").unwrap();
    let out = output(&["--storage", &storage, "--config", cf]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("workers") && err.contains("many"), "{err}");

    std::fs::write(&config, "no-periodic = \"yes\"\n").unwrap();
    let out = output(&["--storage", &storage, "--config", cf]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("expected true or false"),
        "{out:?}"
    );

    std::fs::write(&config, "workers = [\n").unwrap();
    let out = output(&["--storage", &storage, "--config", cf]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains(cf), "{out:?}");

    let out = output(&["--storage", &storage, "--config", "/nonexistent/huey.toml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("/nonexistent/huey.toml"),
        "{out:?}"
    );
    assert!(!db.exists(), "no consumer started");
}

// ----- completions and man page -----------------------------------------------------------

#[test]
fn completions_are_valid_scripts_that_know_the_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = text(&out.stdout);
    for needle in ["hueyd", "status", "enqueue", "completions", "--workers"] {
        assert!(script.contains(needle), "{needle:?} missing");
    }
    let file = dir.path().join("hueyd.bash");
    std::fs::write(&file, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = output(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(text(&out.stdout).contains("status"), "{shell}");
    }
    let out = output(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn man_page_names_the_program_and_its_subcommands() {
    let out = output(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = text(&out.stdout);
    assert!(page.contains(".TH hueyd"), "{page}");
    for needle in [
        "status",
        "enqueue",
        "completions",
        "workers",
        "HUEY_WORKERS",
    ] {
        assert!(page.contains(needle), "{needle:?} missing from:\n{page}");
    }
}

// ----- read-only commands ------------------------------------------------------------------

#[test]
fn read_only_commands_refuse_a_sqlite_database_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.db");
    let storage = format!("sqlite:{}", db.display());
    let id = "6a1f0c8e-0000-4000-8000-000000000000";
    let commands: [&[&str]; 13] = [
        &["status"],
        &["inspect", id],
        &["consumers"],
        &["result", id],
        &["results"],
        &["pending"],
        &["scheduled"],
        &["dead"],
        &["locks"],
        &["periodic", "list"],
        &["periodic", "pause", "nightly"],
        &["periodic", "resume", "nightly"],
        &["periodic", "remove", "nightly"],
    ];
    for cmd in commands {
        let mut args = vec!["--storage", storage.as_str()];
        args.extend_from_slice(cmd);
        let out = output(&args);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("no such SQLite database") && err.contains("typo.db"),
            "{cmd:?}: {err}"
        );
        assert!(!db.exists(), "{cmd:?} created the database");
    }

    // `tasks` lists the registry and does not touch the storage.
    let out = output(&["--storage", &storage, "tasks"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("add("), "{out:?}");
    assert!(!db.exists(), "tasks created the database");

    // A command that writes still creates it, after which reading works.
    let out = output(&["--storage", &storage, "enqueue", "add", "[1, 2]"]);
    assert!(out.status.success(), "{out:?}");
    let out = output(&["--storage", &storage, "status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("\"ready\":1"), "{out:?}");
}

// ----- pidfile -----------------------------------------------------------------------------

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether process `pid` has `path` open.
fn has_open(pid: i32, path: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
}

#[test]
fn a_second_consumer_on_a_held_pidfile_fails_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hueyd.pid");
    let pf = pidfile.to_str().unwrap();
    let storage = sqlite(dir.path());
    let mut first = Consumer::start(
        dir.path(),
        &[
            "--storage",
            &storage,
            "-n",
            "-k",
            "process",
            "-w",
            "2",
            "--pidfile",
            pf,
        ],
        &[],
    );
    assert!(
        wait_until(LONG, || pid_in(&pidfile) == Some(first.pid())),
        "{}",
        first.log()
    );
    let out = output(&["--storage", &storage, "-n", "--pidfile", pf]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("locked by pid {}", first.pid())) && err.contains(pf),
        "{err}"
    );
    assert_eq!(pid_in(&pidfile), Some(first.pid()), "left as it was");

    // The lock is the supervisor's alone: its workers do not hold the file.
    let path = pidfile.canonicalize().unwrap();
    assert!(has_open(first.pid(), &path), "the supervisor holds it");
    let workers = children(first.pid());
    assert_eq!(workers.len(), 2, "{}", first.log());
    for w in workers {
        assert!(!has_open(w, &path), "worker {w} inherited the pidfile");
    }

    assert!(first.stop());
    assert!(!pidfile.exists(), "removed at exit");
}

#[test]
fn a_pidfile_left_by_a_killed_consumer_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hueyd.pid");
    let pf = pidfile.to_str().unwrap();
    let storage = sqlite(dir.path());
    let mut dead = Consumer::start(
        dir.path(),
        &[
            "--storage",
            &storage,
            "-n",
            "-k",
            "process",
            "-w",
            "2",
            "--pidfile",
            pf,
        ],
        &[],
    );
    assert!(wait_until(LONG, || pid_in(&pidfile) == Some(dead.pid())));
    let workers = children(dead.pid());
    kill(Pid::from_raw(dead.pid()), Signal::SIGKILL).unwrap();
    dead.child.wait().unwrap();
    assert_eq!(
        pid_in(&pidfile),
        Some(dead.pid()),
        "a SIGKILL leaves the file"
    );
    // Its workers follow it (they would not hold the lock anyway).
    assert!(wait_until(LONG, || workers.iter().all(|&w| kill(
        Pid::from_raw(w),
        None
    )
    .is_err())));

    let mut next = Consumer::start(
        dir.path(),
        &["--storage", &storage, "-n", "--pidfile", pf],
        &[],
    );
    assert!(
        wait_until(LONG, || pid_in(&pidfile) == Some(next.pid())),
        "{}",
        next.log()
    );
    assert!(next.log().contains("taking over pidfile"), "{}", next.log());
    assert!(next.stop());
    assert!(!pidfile.exists(), "removed at exit");
}

#[test]
fn a_pidfile_path_that_is_no_plain_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let storage = sqlite(dir.path());
    // A link (say, planted in a shared directory) to a file the consumer may write as root.
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = dir.path().join("hueyd.pid");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let missing_dir = dir.path().join("no-such-dir").join("hueyd.pid");
    let cases = [
        (link.clone(), "is a symbolic link"),
        (dir.path().to_path_buf(), "Is a directory"),
        (missing_dir.clone(), "No such file or directory"),
    ];
    for (path, says) in cases {
        let pf = path.to_str().unwrap();
        let out = output(&["--storage", &storage, "-n", "--pidfile", pf]);
        assert_eq!(out.status.code(), Some(2), "{pf}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.contains(pf) && err.contains(says), "{pf}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    assert!(!missing_dir.parent().unwrap().exists());
}

#[test]
fn a_consumer_refused_for_its_flags_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let storage = sqlite(dir.path());
    let bad: [&[&str]; 4] = [
        &["-w", "2000"],
        &["-k", "thread", "--concurrency", "4"],
        &["-Q", ""],
        &["-Q", "high,,low"],
    ];
    for flags in bad {
        let mut args = vec!["--storage", storage.as_str(), "-n"];
        args.extend_from_slice(flags);
        let out = output(&args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {out:?}");
        assert!(!db.exists(), "{flags:?} created the database");
    }
}
