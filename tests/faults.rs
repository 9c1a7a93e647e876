//! Nothing is lost under crashes, restarts and bad input: real worker kills, real supervisor
//! kills, a real Redis restart, garbage in storage, corrupt frames, broken databases.
//! Each test prints a line of figures (`--nocapture` shows them).

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::hueyd::{children, wait_until, Backend, Hueyd};
use common::redis_server::RedisServer;
use huey::message::Message;
use huey::storage::{Batch, Ready};
use huey::{Error, FailureKind, Huey, Task, TaskError, TaskResult};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

fn record(app: &Huey) -> Task<u64, u32> {
    Task::from_name(app, "record").unwrap()
}

/// Wait for every handle; storage errors (a restarting Redis) are retried.
fn settle<R: serde::de::DeserializeOwned>(
    hs: &[TaskResult<R>],
    timeout: Duration,
) -> Vec<Option<Result<R, TaskError>>> {
    let end = Instant::now() + timeout;
    hs.iter()
        .map(|h| loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            match h.wait(left.min(Duration::from_secs(2))) {
                Ok(v) => break Some(Ok(v)),
                Err(Error::Task(e)) => break Some(Err(e)),
                Err(Error::Timeout(_)) => continue,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        })
        .collect()
}

/// Figures of one run: (completed, failed for good, missing, ran more than once).
fn tally(outcomes: &[Option<Result<u32, TaskError>>]) -> (usize, usize, usize, usize) {
    let ok = outcomes.iter().filter(|o| matches!(o, Some(Ok(_)))).count();
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Err(_))))
        .count();
    let missing = outcomes.iter().filter(|o| o.is_none()).count();
    let twice = outcomes
        .iter()
        .filter(|o| matches!(o, Some(Ok(n)) if *n > 1))
        .count();
    (ok, failed, missing, twice)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Kill random workers every `every` while `n` tasks of `ms` milliseconds drain.
fn workers_killed_at_random_lose_nothing(b: Backend, n: usize, ms: u64, every: Duration) {
    let app = b.app();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "4", "-q"]);
    h.wait_workers(4, LONG);
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(ms, n))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (done, kills, pid) = (done.clone(), kills.clone(), h.pid());
        let app = app.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()));
            // A kill only after some task finished since the last one: on a loaded machine a
            // worker can take longer than `every` to start, and killing each before it is ready
            // would only measure the respawn back-off, never a loss.
            let mut seen = 0;
            while !done.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < 200 {
                std::thread::sleep(every);
                let results = app.storage().counts().map(|c| c.results).unwrap_or(seen);
                if results <= seen {
                    continue;
                }
                seen = results;
                let ws = children(pid);
                if !ws.is_empty() {
                    let w = ws[(rng.next() % ws.len() as u64) as usize];
                    if kill(Pid::from_raw(w), Signal::SIGKILL).is_ok() {
                        kills.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let outcomes = settle(&handles, Duration::from_secs(120));
    done.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let (ok, failed, missing, twice) = tally(&outcomes);
    let kills = kills.load(Ordering::SeqCst);
    println!("workers killed: tasks {n} of {ms} ms, kills {kills}, completed {ok}, failed {failed}, lost {missing}, ran twice {twice}");
    assert_eq!(
        missing, 0,
        "every task has its result or a recorded final failure"
    );
    assert!(kills >= 5, "the test killed workers ({kills})");
    // Only the attempt running when its worker died runs again; tasks queued behind it in the
    // worker's pipe go back to the waiting line unstarted.
    assert!(
        twice + failed <= kills,
        "{twice} ran twice and {failed} failed with {kills} kills"
    );
    for o in outcomes.iter().flatten() {
        if let Err(e) = o {
            assert_eq!(e.kind, FailureKind::WorkerLost, "{e}");
        }
    }
}

#[test]
fn workers_killed_at_random_lose_nothing_on_sqlite() {
    workers_killed_at_random_lose_nothing(Backend::sqlite(), 2000, 3, Duration::from_millis(100));
}

#[test]
fn workers_killed_at_random_lose_nothing_on_redis() {
    workers_killed_at_random_lose_nothing(Backend::redis(), 2000, 3, Duration::from_millis(100));
}

#[test]
fn workers_killed_with_tasks_queued_in_their_pipes_lose_nothing() {
    // Instant tasks: each worker is handed several at once.
    workers_killed_at_random_lose_nothing(Backend::sqlite(), 20_000, 0, Duration::from_millis(20));
}

fn killed_supervisor_then_a_new_one_completes_everything(b: Backend) {
    let app = b.app();
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(2, 1000))
        .unwrap();
    let h = Hueyd::testbed(
        &b.url(),
        &["-k", "process", "-w", "4", "-q", "--lease", "1"],
    );
    assert!(wait_until(LONG, || app.storage().counts().unwrap().results >= 200));
    h.signal(Signal::SIGKILL);
    drop(h);
    let _h2 = Hueyd::testbed(
        &b.url(),
        &["-k", "process", "-w", "4", "-q", "--lease", "1"],
    );
    let outcomes = settle(&handles, LONG);
    let (ok, failed, missing, twice) = tally(&outcomes);
    println!("supervisor killed: tasks 1000, completed {ok}, failed {failed}, lost {missing}, ran twice {twice}");
    assert_eq!((ok, missing), (1000, 0));
}

#[test]
fn killed_supervisor_then_a_new_one_completes_everything_on_sqlite() {
    killed_supervisor_then_a_new_one_completes_everything(Backend::sqlite());
}

#[test]
fn killed_supervisor_then_a_new_one_completes_everything_on_redis() {
    killed_supervisor_then_a_new_one_completes_everything(Backend::redis());
}

#[test]
fn redis_restarted_mid_drain_and_the_consumer_completes_everything() {
    let mut server = RedisServer::start_persistent();
    let url = server.url();
    let app = Huey::open("hueyd", &url).unwrap();
    common::testbed::register(&app).unwrap();
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(2, 1000))
        .unwrap();
    let mut h = Hueyd::testbed(&url, &["-k", "process", "-w", "4", "-q"]);
    assert!(wait_until(LONG, || app
        .storage()
        .counts()
        .map(|c| c.results >= 150)
        .unwrap_or(false)));
    server.restart();
    let outcomes = settle(&handles, Duration::from_secs(90));
    let (ok, failed, missing, twice) = tally(&outcomes);
    println!("redis restarted: tasks 1000, completed {ok}, failed {failed}, lost {missing}, ran twice {twice}");
    assert_eq!((ok, missing), (1000, 0), "{}", h.log());
    assert!(
        h.wait_exit(Duration::from_millis(10)).is_none(),
        "the consumer survived"
    );
}

fn several_consumers_run_each_task_exactly_once(b: Backend, consumers: usize) {
    let app = b.app();
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(1, 2000))
        .unwrap();
    let _hs: Vec<Hueyd> = (0..consumers)
        .map(|_| Hueyd::testbed(&b.url(), &["-k", "thread", "-w", "2", "-q"]))
        .collect();
    let outcomes = settle(&handles, LONG);
    let (ok, _, missing, twice) = tally(&outcomes);
    println!(
        "{consumers} consumers: tasks 2000, completed {ok}, lost {missing}, ran twice {twice}"
    );
    assert_eq!((ok, missing, twice), (2000, 0, 0));
}

#[test]
fn two_consumers_run_each_task_exactly_once_on_sqlite() {
    several_consumers_run_each_task_exactly_once(Backend::sqlite(), 2);
}

#[test]
fn four_consumers_run_each_task_exactly_once_on_sqlite() {
    several_consumers_run_each_task_exactly_once(Backend::sqlite(), 4);
}

#[test]
fn two_consumers_run_each_task_exactly_once_on_redis() {
    several_consumers_run_each_task_exactly_once(Backend::redis(), 2);
}

#[test]
fn three_consumers_run_each_task_exactly_once_on_redis() {
    several_consumers_run_each_task_exactly_once(Backend::redis(), 3);
}

#[test]
fn four_consumers_run_each_task_exactly_once_on_redis() {
    several_consumers_run_each_task_exactly_once(Backend::redis(), 4);
}

#[test]
fn poison_task_ends_in_the_dead_letter_place_and_others_are_unaffected() {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "2", "-q"]);
    let crash: Task<(), ()> = Task::from_name(&app, "crash").unwrap();
    let poison = crash.call(()).retries(2).enqueue().unwrap();
    let others = record(&app)
        .enqueue_many(std::iter::repeat_n(1, 100))
        .unwrap();
    let Err(Error::Task(e)) = poison.wait(LONG) else {
        panic!("expected a final failure")
    };
    assert_eq!(
        (e.kind, e.attempt),
        (FailureKind::WorkerLost, 3),
        "three deliveries, then dead"
    );
    assert!(wait_until(LONG, || app.storage().counts().unwrap().dead == 1));
    let dead = app.storage().dead(10).unwrap();
    assert_eq!(dead[0].id, poison.id());
    assert!(dead[0].error.contains("SIGABRT"), "{}", dead[0].error);
    let (ok, _, missing, twice) = tally(&settle(&others, LONG));
    assert_eq!((ok, missing, twice), (100, 0, 0));
}

fn garbage_in_the_queue_is_dead_lettered_and_the_consumer_goes_on(b: Backend) {
    let app = b.app();
    let good = Message::new(
        "add",
        postcard::to_allocvec(&(1i64, 2i64)).unwrap(),
        Default::default(),
    );
    let encoded = good.encode().unwrap();
    let unknown = Message::new("no_such_task", vec![], Default::default());
    let bad_args = Message::new("add", vec![1], Default::default());
    let raw = |id: &str, payload: Vec<u8>| Ready {
        id: id.into(),
        queue: "default".into(),
        priority: 0,
        payload,
    };
    app.storage()
        .apply(&Batch {
            enqueue: vec![
                raw("empty", vec![]),
                raw("junk", vec![0xde, 0xad, 0xbe, 0xef]),
                raw("truncated", encoded[..encoded.len() / 2].to_vec()),
                raw(&unknown.id, unknown.encode().unwrap()),
                raw(&bad_args.id, bad_args.encode().unwrap()),
            ],
            ..Batch::default()
        })
        .unwrap();
    let fine = record(&app)
        .enqueue_many(std::iter::repeat_n(1, 20))
        .unwrap();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "2", "-q"]);
    let (ok, _, missing, _) = tally(&settle(&fine, LONG));
    assert_eq!((ok, missing), (20, 0));
    let Err(Error::Task(e)) = app.result::<i64>(bad_args.id.clone()).wait(LONG) else {
        panic!()
    };
    assert_eq!(e.kind, FailureKind::Undecodable, "{e}");
    let Err(Error::Task(e)) = app.result::<()>(unknown.id.clone()).wait(LONG) else {
        panic!()
    };
    assert_eq!(e.kind, FailureKind::UnknownTask);
    assert!(wait_until(LONG, || app.storage().counts().unwrap().dead == 4));
    let errors: Vec<String> = app
        .storage()
        .dead(10)
        .unwrap()
        .into_iter()
        .map(|d| d.error)
        .collect();
    assert!(
        errors.iter().filter(|e| e.contains("undecodable")).count() == 3,
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no_such_task")),
        "{errors:?}"
    );
}

#[test]
fn garbage_in_the_queue_is_dead_lettered_and_the_consumer_goes_on_on_sqlite() {
    garbage_in_the_queue_is_dead_lettered_and_the_consumer_goes_on(Backend::sqlite());
}

#[test]
fn garbage_in_the_queue_is_dead_lettered_and_the_consumer_goes_on_on_redis() {
    garbage_in_the_queue_is_dead_lettered_and_the_consumer_goes_on(Backend::redis());
}

#[test]
fn worker_writing_a_corrupt_or_oversized_frame_is_replaced() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "1"]);
    let garble: Task<u32, ()> = Task::from_name(&app, "garble").unwrap();
    for len in [16, u32::MAX] {
        let r = garble.enqueue(len).unwrap();
        let Err(Error::Task(e)) = r.wait(LONG) else {
            panic!("expected worker lost")
        };
        assert_eq!(e.kind, FailureKind::WorkerLost);
        assert!(e.message.contains("protocol error"), "{}", e.message);
        let after = record(&app).enqueue(1).unwrap();
        assert_eq!(
            after.wait(LONG).unwrap(),
            1,
            "the next task runs on a new worker"
        );
    }
    let log = h.log();
    assert!(
        log.contains("corrupt frame") && log.contains("exceeds"),
        "{log}"
    );
}

/// A worker that writes into its result pipe without pause cannot hold the supervisor's loop:
/// the other worker's tasks complete meanwhile, and the flooding task's timeout is enforced.
#[test]
fn a_worker_flooding_its_result_pipe_does_not_starve_the_others() {
    let b = Backend::sqlite();
    let app = b.app();
    let _h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "2", "-q"]);
    let flood: Task<u64, u64> = Task::from_name(&app, "flood").unwrap();
    let flooding = flood
        .call(600_000)
        .timeout(Duration::from_secs(3))
        .enqueue()
        .unwrap();
    let others = record(&app)
        .enqueue_many(std::iter::repeat_n(1, 200))
        .unwrap();
    let (ok, _, missing, _) = tally(&settle(&others, LONG));
    assert_eq!((ok, missing), (200, 0));
    let Err(Error::Task(e)) = flooding.wait(LONG) else {
        panic!("expected a timeout")
    };
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
}

fn hueyd_fails_cleanly(storage: &str, needle: &str) {
    let out = std::process::Command::new(common::hueyd::exe())
        .args(["--storage", storage])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{storage}: should not start");
    assert!(
        out.status.code().is_some(),
        "{storage}: exited, not crashed: {:?}",
        out.status
    );
    assert!(err.contains(needle), "{storage}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database ".repeat(100)).unwrap();
    hueyd_fails_cleanly(
        &format!("sqlite:{}", path.display()),
        "not a SQLite database",
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("these are my notes"),
        "left untouched"
    );
}

#[test]
fn a_read_only_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.db");
    drop(Huey::open("hueyd", &format!("sqlite:{}", path.display())).unwrap());
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&path)
        .status();
    if !matches!(immutable, Ok(s) if s.success()) {
        println!(
            "skipped: chattr +i is not available here, so a file cannot be made read-only for root"
        );
        return;
    }
    let _undo = Defer(|| {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&path)
            .status();
    });
    hueyd_fails_cleanly(&format!("sqlite:{}", path.display()), "read-only");
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let port = common::redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    hueyd_fails_cleanly(&url, "cannot reach Redis");
    let e = Huey::open("hueyd", &url).unwrap_err().to_string();
    assert!(e.contains("cannot reach Redis"), "{e}");
}

struct Defer<F: FnMut()>(F);
impl<F: FnMut()> Drop for Defer<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        println!("skipped: cannot mount a small tmpfs here (needs root), so a full disk cannot be simulated");
        return;
    }
    let _unmount = Defer(|| {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mnt)
            .status();
    });
    let url = format!("sqlite:{}", mnt.join("huey.db").display());
    let app = Huey::open("hueyd", &url).unwrap();
    huey::demo::register(&app).unwrap();
    let echo: Task<String, String> = Task::from_name(&app, "echo").unwrap();
    let before = echo.enqueue("before".into()).unwrap();
    // Fill the disk.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let mut refused = 0;
    for _ in 0..200 {
        match echo.enqueue("x".repeat(10_000)) {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("full") || msg.contains("disk"), "{msg}");
                refused += 1;
                break;
            }
            Ok(_) => continue, // free pages inside the database file absorb a few
        }
    }
    assert_eq!(refused, 1, "a full disk refuses the enqueue with an error");
    std::fs::remove_file(&filler).unwrap();
    let after = echo.enqueue("after".into()).unwrap();
    let _h = Hueyd::start(&url, &["-w", "1", "-q"]);
    assert_eq!(before.wait(LONG).unwrap(), "before");
    assert_eq!(after.wait(LONG).unwrap(), "after");
}

#[test]
fn sigterm_during_a_drain_acknowledges_only_what_finished() {
    let b = Backend::sqlite();
    let app = b.app();
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(5, 400))
        .unwrap();
    let mut h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "4", "-q"]);
    assert!(wait_until(LONG, || app.storage().counts().unwrap().results >= 50));
    h.signal(Signal::SIGTERM);
    assert!(h.wait_exit(LONG).expect("exits").success());
    let c = app.storage().counts().unwrap();
    assert_eq!(c.in_flight, 0, "nothing left leased");
    assert_eq!(
        c.results + c.ready,
        400,
        "every task is either done (with its result) or still queued: {c:?}"
    );
    let _h2 = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "4", "-q"]);
    let (ok, _, missing, twice) = tally(&settle(&handles, LONG));
    assert_eq!((ok, missing, twice), (400, 0, 0));
}

#[test]
fn sighup_during_a_drain_loses_nothing() {
    let b = Backend::sqlite();
    let app = b.app();
    let handles = record(&app)
        .enqueue_many(std::iter::repeat_n(3, 600))
        .unwrap();
    let h = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "4", "-q"]);
    let mut reloads = 0;
    for target in [100, 250, 400] {
        assert!(wait_until(LONG, || app.storage().counts().unwrap().results >= target));
        h.signal(Signal::SIGHUP);
        reloads += 1;
    }
    let (ok, _, missing, twice) = tally(&settle(&handles, LONG));
    println!(
        "sighup: tasks 600, reloads {reloads}, completed {ok}, lost {missing}, ran twice {twice}"
    );
    assert_eq!((ok, missing, twice), (600, 0, 0));
}
