//! The command task on the real consumer, real SQLite files and a real redis-server:
//! `hueyd enqueue --command -- PROGRAM ARGS`, run only with `--allow-commands`, with its exit
//! status and output tails as the result, and its process group killed on timeout.

#[macro_use]
mod common;

use std::process::Command;
use std::time::Duration;

use common::hueyd::{exe, wait_until, Backend, Hueyd};
use huey::command::{CommandOutput, TAIL_BYTES};
use huey::{Error, Huey};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

/// `hueyd enqueue [FLAGS] --command -- ARGV...`; the new id.
fn enqueue(b: &Backend, flags: &[&str], argv: &[&str]) -> String {
    let out = Command::new(exe())
        .args(["--storage", &b.url(), "enqueue"])
        .args(flags)
        .arg("--command")
        .arg("--")
        .args(argv)
        .env_remove("HUEY_STORAGE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn outcome(app: &Huey, id: &str) -> Result<CommandOutput, huey::TaskError> {
    match app.result::<CommandOutput>(id).wait(LONG) {
        Ok(v) => Ok(v),
        Err(Error::Task(e)) => Err(e),
        Err(e) => panic!("no outcome for {id}: {e}"),
    }
}

both!(commands_are_refused_without_allow_commands, |b: Backend| {
    let app = b.app();
    let _h = Hueyd::start(&b.url(), &[]);
    let id = enqueue(&b, &[], &["/bin/sh", "-c", "touch should-not-exist"]);
    let e = outcome(&app, &id).unwrap_err();
    assert!(e.message.contains("--allow-commands"), "{e}");
});

both!(
    commands_run_with_status_output_and_timeouts,
    |b: Backend| { commands_run(b, "thread") }
);

#[test]
fn commands_run_in_process_workers() {
    commands_run(Backend::sqlite(), "process")
}

fn commands_run(b: Backend, kind: &str) {
    let app = b.app();
    let _h = Hueyd::start(&b.url(), &["--allow-commands", "-w", "4", "-k", kind]);
    let ok = enqueue(&b, &[], &["/bin/sh", "-c", "echo out; echo err >&2"]);
    let failing = enqueue(
        &b,
        &["--retries", "0"],
        &["/bin/sh", "-c", "echo bad >&2; exit 3"],
    );
    let huge = enqueue(
        &b,
        &[],
        &["/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x"],
    );
    let slow = enqueue(
        &b,
        &["--timeout", "1"],
        &["/bin/sh", "-c", "sleep 60 & echo $!; sleep 60"],
    );
    let missing = enqueue(&b, &[], &["/nonexistent/program"]);

    let out = outcome(&app, &ok).unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (0, "out\n", "err\n")
    );

    let e = outcome(&app, &failing).unwrap_err();
    let out: CommandOutput = serde_json::from_str(&e.message).unwrap();
    assert_eq!((out.status, out.stderr.as_str()), (3, "bad\n"));

    let out = outcome(&app, &huge).unwrap();
    assert_eq!(out.stdout.len(), TAIL_BYTES, "the last 64 KiB");

    let e = outcome(&app, &slow).unwrap_err();
    let json = e.message.split_once("; ").map(|(_, j)| j).unwrap_or("");
    let out: CommandOutput = serde_json::from_str(json).unwrap_or_else(|_| panic!("{e}"));
    let bg: i32 = out.stdout.trim().parse().unwrap();
    assert!(
        wait_until(LONG, || !std::path::Path::new(&format!("/proc/{bg}"))
            .exists()
            || std::fs::read_to_string(format!("/proc/{bg}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "the background sleep {bg} went with its process group"
    );

    let e = outcome(&app, &missing).unwrap_err();
    assert!(e.message.contains("cannot run"), "{e}");
}

both!(
    a_process_that_leaves_the_group_with_the_pipes_does_not_hold_the_task,
    |b: Backend| {
        let app = b.app();
        let _h = Hueyd::start(&b.url(), &["--allow-commands"]);
        // `setsid` puts the sleep in a session (and process group) of its own, out of reach of the
        // group kill, with the program's stdout and stderr still open: a daemon started by a
        // script. The task ends when the script does, with what it printed.
        let id = enqueue(
            &b,
            &[],
            &["/bin/sh", "-c", "setsid sleep 300 & echo $!; echo done >&2"],
        );
        let out = outcome(&app, &id);
        if let Some(pid) = out.as_ref().ok().and_then(|o| o.stdout.trim().parse().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let out = out.unwrap();
        assert_eq!((out.status, out.stderr.as_str()), (0, "done\n"));
    }
);
