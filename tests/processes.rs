//! The supervisor never blocks on a worker, and task code runs in a clean process context:
//! real consumers, real worker processes, real signals. Each test attacks one way a process
//! boundary could hang the supervisor, run a task twice or leak the worker protocol.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::hueyd::{exe, testbed_exe, wait_until, Backend, Hueyd, Kind};
use huey::message::{Message, MAX_DEPTH, MAX_MESSAGE_BYTES};
use huey::storage::{Batch, Ready};
use huey::{Error, FailureKind, Huey, Task};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

type Spawned = (u32, Option<i32>, String);

fn spawn_task(app: &Huey) -> Task<(Vec<String>, bool), Spawned> {
    Task::from_name(app, "spawn").unwrap()
}

/// Make tasks look fast to the consumer, so it queues several in each worker's pipe.
fn warm_up(app: &Huey) {
    let add: Task<(i64, i64), i64> = Task::from_name(app, "add").unwrap();
    let hs = add.enqueue_many(std::iter::repeat_n((1, 2), 400)).unwrap();
    for h in &hs {
        assert_eq!(h.wait(LONG).unwrap(), 3);
    }
}

fn raw(id: &str, payload: Vec<u8>) -> Ready {
    Ready {
        id: id.into(),
        queue: "default".into(),
        priority: 0,
        payload,
    }
}

#[test]
fn large_frames_queued_behind_a_long_task_never_block_the_supervisor() {
    let b = Backend::sqlite();
    let app = b.app();
    let mut h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1", "--lease", "3"]);
    warm_up(&app);
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let t0 = Instant::now();
    let long = sleep
        .call(30_000)
        .timeout(Duration::from_secs(2))
        .enqueue()
        .unwrap();
    let big = "x".repeat(20_000);
    let echoes = echo
        .enqueue_many(std::iter::repeat_n(big.clone(), 12))
        .unwrap();
    assert!(h.wait_log("task=sleep", LONG), "{}", h.log());
    // Every echo leased: they are on their way into the busy worker's pipe.
    assert!(wait_until(LONG, || app
        .storage()
        .counts()
        .unwrap()
        .in_flight
        == 13));
    let sent = Instant::now();
    h.signal(Signal::SIGTERM);
    // Blocked on the pipe, the supervisor handled it only once the 30 s task ended.
    assert!(
        h.wait_log("stopping gracefully", Duration::from_secs(8)),
        "SIGTERM not handled within 8 s: {}",
        h.log()
    );
    println!("SIGTERM handled after {:?}", sent.elapsed());
    let Err(Error::Task(e)) = long.wait(LONG) else {
        panic!("expected a timeout")
    };
    let fired = t0.elapsed();
    println!("the 2 s timeout fired after {fired:?}");
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert!(
        fired < Duration::from_secs(10),
        "timeout fired after {fired:?}"
    );
    assert!(h.wait_exit(LONG).expect("exits").success());
    let _h2 = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    for r in &echoes {
        assert_eq!(r.wait(LONG).unwrap(), big);
    }
}

#[test]
fn a_message_over_the_size_limit_is_refused_at_enqueue() {
    let b = Backend::sqlite();
    let app = b.app();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let err = echo.enqueue("x".repeat(MAX_MESSAGE_BYTES)).unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    assert_eq!(app.storage().counts().unwrap().ready, 0, "nothing written");
    assert_eq!(echo.enqueue("small".into()).unwrap().id().len(), 36);
}

#[test]
fn a_message_over_the_size_limit_in_storage_is_dead_lettered_and_workers_go_on() {
    let b = Backend::sqlite();
    let app = b.app();
    let huge = Message::new(
        "echo",
        postcard::to_allocvec(&"x".repeat(MAX_MESSAGE_BYTES)).unwrap(),
        Default::default(),
    );
    // Written by hand: the producer's encoder refuses it.
    let mut bytes = vec![huey::message::VERSION];
    postcard::to_io(&huge, &mut bytes).unwrap();
    app.storage()
        .apply(&Batch {
            enqueue: vec![raw(&huge.id, bytes)],
            ..Batch::default()
        })
        .unwrap();
    drop(huge);
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let after = echo
        .enqueue_many(["a".to_string(), "b".to_string()])
        .unwrap();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "2"]);
    for (r, want) in after.iter().zip(["a", "b"]) {
        assert_eq!(r.wait(LONG).unwrap(), want);
    }
    assert!(wait_until(LONG, || app.storage().counts().unwrap().dead == 1));
    let dead = app.storage().dead(10).unwrap();
    assert!(dead[0].error.contains("limit"), "{}", dead[0].error);
}

#[test]
fn a_task_can_run_the_apps_own_binary() {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    let argv: Vec<String> = [exe(), "--storage", &b.url(), "enqueue", "add", "[20, 22]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = spawn_task(&app).enqueue((argv, true)).unwrap();
    let (_, code, stdout) = r.wait(LONG).unwrap();
    assert_eq!(code, Some(0), "the child exited {code:?}");
    let id = stdout.trim().to_string();
    assert_eq!(id.len(), 36, "a task id on stdout: {stdout:?}");
    assert_eq!(app.result::<i64>(id).wait(LONG).unwrap(), 42);
}

#[test]
fn a_child_left_running_does_not_hide_its_workers_death() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    let worker = h.wait_workers(1, LONG)[0];
    // A grandchild that holds the worker's result pipe open (as a forked child would).
    let argv = ["sh", "-c", "sleep 60 >/dev/null 4>/proc/$PPID/fd/4 &"];
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let r = spawn_task(&app).enqueue((argv, true)).unwrap();
    assert_eq!(r.wait(LONG).unwrap().1, Some(0));
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    let running = sleep.enqueue(60_000).unwrap();
    assert!(h.wait_log("task=sleep", LONG));
    let killed = Instant::now();
    kill(Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    let Err(Error::Task(e)) = running.wait(Duration::from_secs(30)) else {
        panic!("the worker's death was not noticed: {}", h.log())
    };
    println!("worker death noticed after {:?}", killed.elapsed());
    assert_eq!(e.kind, FailureKind::WorkerLost, "{e}");
    assert!(killed.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_task_subprocess_can_be_stopped_by_sigterm() {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    let argv: Vec<String> = ["sleep", "60"].iter().map(|s| s.to_string()).collect();
    let (pid, _, _) = spawn_task(&app)
        .enqueue((argv, false))
        .unwrap()
        .wait(LONG)
        .unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || dead(pid)),
        "SIGTERM ignored"
    );
}

/// A message nested `levels` deep through `on_complete`, as raw bytes (no deep value is built).
fn deep_message(levels: usize) -> (String, Vec<u8>) {
    let leaf = Message::new(
        "add",
        postcard::to_allocvec(&(1i64, 2i64)).unwrap(),
        Default::default(),
    );
    let bytes = leaf.encode().unwrap();
    // The body ends with three `None`s: on_complete, on_error, chord.
    let head = &bytes[1..bytes.len() - 3];
    let mut out = vec![bytes[0]];
    for _ in 0..levels {
        out.extend_from_slice(head);
        out.push(1);
    }
    out.extend_from_slice(head);
    out.extend([0, 0, 0]);
    for _ in 0..levels {
        out.extend([0, 0]);
    }
    (leaf.id, out)
}

#[test]
fn a_pipeline_longer_than_the_depth_limit_is_refused_at_enqueue() {
    let b = Backend::sqlite();
    let app = b.app();
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let mut p = add.s((1, 2)).pipeline();
    for _ in 0..MAX_DEPTH + 1 {
        p = p.then(&add, 1);
    }
    let err = p.enqueue().unwrap_err();
    assert!(err.to_string().contains("nest"), "{err}");
    assert_eq!(app.storage().counts().unwrap().ready, 0, "nothing written");
}

#[test]
fn a_message_nested_too_deep_in_storage_is_dead_lettered_and_admin_survives() {
    let b = Backend::sqlite();
    let app = b.app();
    let (id, bytes) = deep_message(300_000);
    app.storage()
        .apply(&Batch {
            enqueue: vec![raw(&id, bytes)],
            ..Batch::default()
        })
        .unwrap();
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(testbed_exe())
            .args(["--storage", &b.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    admin(&["pending"]);
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let after = add.enqueue((2, 2)).unwrap();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    assert_eq!(after.wait(LONG).unwrap(), 4);
    assert!(wait_until(LONG, || app.storage().counts().unwrap().dead == 1));
    let dead = app.storage().dead(10).unwrap();
    assert!(dead[0].error.contains("nest"), "{}", dead[0].error);
    assert!(!h.log().contains("overflow"), "{}", h.log());
    admin(&["dead"]);
    admin(&["dead", "--json"]);
}

#[test]
fn a_stop_waits_for_the_workers_shutdown_hooks() {
    for (kind, workers) in [
        (Kind::Process, 2),
        (Kind::ProcessConcurrent, 2),
        (Kind::Async, 1),
    ] {
        a_stop_waits_for_the_shutdown_hooks_of(kind, workers);
    }
}

/// `workers`: how many run hooks (an async worker is one runtime, whatever `-w` says).
fn a_stop_waits_for_the_shutdown_hooks_of(kind: Kind, workers: i64) {
    let b = Backend::sqlite();
    let app = b.app();
    app.storage().incr("shutdown-sleep-ms", 500).unwrap();
    let mut h = kind.testbed(&b.url(), &["-w", "2"]);
    assert!(wait_until(LONG, || app
        .storage()
        .incr("worker-starts", 0)
        .unwrap()
        == workers));
    h.signal(Signal::SIGTERM);
    assert!(h.wait_exit(LONG).expect("exits").success());
    assert_eq!(
        app.storage().incr("worker-stops", 0).unwrap(),
        workers,
        "{kind:?}: every worker ran its shutdown hook: {}",
        h.log()
    );
}

#[test]
fn no_worker_is_spawned_once_stopping() {
    let b = Backend::sqlite();
    let app = b.app();
    let mut h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    h.wait_workers(1, LONG);
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    let r = sleep.enqueue(3_000).unwrap();
    assert!(h.wait_log("task=sleep", LONG));
    h.signal(Signal::SIGTERM);
    assert!(h.wait_log("stopping gracefully", LONG));
    h.signal(Signal::SIGHUP);
    h.signal(Signal::SIGTTIN);
    let starts = app.storage().incr("worker-starts", 0).unwrap();
    let mut most = 0;
    let end = Instant::now() + LONG;
    while h.wait_exit(Duration::from_millis(20)).is_none() && Instant::now() < end {
        most = most.max(h.workers().len());
    }
    assert_eq!(r.wait(LONG).unwrap(), 3_000, "the running task finished");
    assert!(most <= 1, "{most} workers while stopping: {}", h.log());
    assert_eq!(app.storage().incr("worker-starts", 0).unwrap(), starts);
}

/// Whether a process is gone, or a zombie nobody has reaped yet.
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn a_timed_out_task_leaves_no_child_behind() {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 120", pidfile.display());
    let argv: Vec<String> = ["sh", "-c", &script]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = spawn_task(&app)
        .call((argv, true))
        .timeout(Duration::from_secs(1))
        .enqueue()
        .unwrap();
    match r.wait(LONG) {
        Err(Error::Task(e)) => assert_eq!(e.kind, FailureKind::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(LONG, || dead(pid)),
        "the task's child {pid} outlived its killed worker"
    );
}

#[test]
fn a_second_stop_signal_cuts_the_wait_for_shutdown_hooks() {
    let b = Backend::sqlite();
    let app = b.app();
    app.storage().incr("shutdown-sleep-ms", 60_000).unwrap();
    let mut h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    h.wait_workers(1, LONG);
    h.signal(Signal::SIGTERM);
    assert!(h.wait_log("stopping gracefully", LONG));
    let second = Instant::now();
    h.signal(Signal::SIGTERM);
    assert!(h.wait_exit(LONG).is_some(), "it exits");
    // Waiting out the hook would take the whole bounded wait (10 s).
    assert!(
        second.elapsed() < Duration::from_secs(8),
        "took {:?} after the second signal: {}",
        second.elapsed(),
        h.log()
    );
}

#[test]
fn a_task_cut_short_by_a_second_signal_is_not_left_leased_on_thread_workers() {
    let b = Backend::redis();
    let app = b.app();
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    for _ in 0..3 {
        let mut h = Hueyd::testbed(&b.url(), &["-k", "thread", "-w", "2"]);
        sleep.enqueue(20_000).unwrap();
        assert!(h.wait_log("task=sleep", LONG), "{}", h.log());
        h.signal(Signal::SIGTERM);
        assert!(h.wait_log("stopping gracefully", LONG));
        h.signal(Signal::SIGTERM);
        assert!(h.wait_exit(LONG).is_some());
        let c = app.storage().counts().unwrap();
        assert_eq!((c.in_flight, c.ready), (0, 1), "{}", h.log());
        app.storage()
            .flush(huey::storage::Flush {
                queue: true,
                ..Default::default()
            })
            .unwrap();
    }
}

#[test]
fn a_worker_started_by_hand_is_a_clear_usage_error() {
    let out = std::process::Command::new(testbed_exe())
        .arg("status")
        .env("HUEY_WORKER", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HUEY_WORKER"), "{err}");
}

#[test]
fn a_result_too_large_for_a_frame_fails_the_task_and_the_worker_goes_on() {
    for kind in [Kind::Process, Kind::ProcessConcurrent] {
        a_result_too_large_for_a_frame_fails_the_task_on(kind);
    }
}

fn a_result_too_large_for_a_frame_fails_the_task_on(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = kind.testbed(&b.url(), &["-w", "1"]);
    let pid: Task<(), u32> = Task::from_name(&app, "pid").unwrap();
    let before = pid.enqueue(()).unwrap().wait(LONG).unwrap();
    let script = "head -c 70000000 /dev/zero | tr '\\0' x".to_string();
    let argv: Vec<String> = vec!["sh".into(), "-c".into(), script];
    match spawn_task(&app).enqueue((argv, true)).unwrap().wait(LONG) {
        Err(Error::Task(e)) => {
            assert_eq!(e.kind, FailureKind::Error);
            assert!(e.message.contains("over the"), "{}", e.message);
        }
        other => panic!(
            "expected a failure, got {:?}",
            other.map(|(p, c, o)| (p, c, o.len()))
        ),
    }
    assert_eq!(
        pid.enqueue(()).unwrap().wait(LONG).unwrap(),
        before,
        "the same worker"
    );
}
