//! Async workers with real consumers: `-k async` (futures on one runtime in the consumer) and
//! `-k process --concurrency N` (a runtime in each worker process). A timed-out or revoked
//! attempt is cancelled — its future dropped, so what it would have done after that point never
//! happens — while its worker stays up and runs the next task; a stop cancels what still runs
//! at its deadline without counting a delivery; many attempts really run at once.

#[macro_use]
mod common;

use std::path::Path;
use std::time::Duration;

use common::hueyd::{wait_until, Backend, Hueyd, Kind};
use huey::{Error, FailureKind, Huey, Task};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

fn task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Task<A, R> {
    Task::from_name(app, name).unwrap()
}

fn touch(app: &Huey) -> Task<(String, u64), u64> {
    task(app, "async_touch")
}

/// The pid of the process that runs this kind's tasks (the same one before and after a
/// cancellation is the proof that nothing was killed).
fn runner_pid(app: &Huey) -> u32 {
    let pid: Task<(), u32> = task(app, "async_pid");
    pid.enqueue(()).unwrap().wait(LONG).unwrap()
}

/// The failure an attempt ended with.
fn failure<R: serde::de::DeserializeOwned + std::fmt::Debug>(
    r: &huey::TaskResult<R>,
    h: &Hueyd,
) -> huey::TaskError {
    match r.wait(LONG) {
        Err(Error::Task(e)) => e,
        other => panic!("expected a task failure, got {other:?}: {}", h.log()),
    }
}

/// Run a file-writing task that takes `ms`; once its file exists, any earlier task's write
/// point that is due before it has passed.
fn touch_and_wait(app: &Huey, dir: &Path, name: &str, ms: u64) {
    let path = dir.join(name);
    touch(app)
        .enqueue((path.display().to_string(), ms))
        .unwrap()
        .wait(LONG)
        .unwrap();
    assert!(path.exists());
}

fn a_timed_out_async_task_is_cancelled_and_its_worker_goes_on(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let before = runner_pid(&app);
    let late = dir.path().join("late");
    let r = touch(&app)
        .call((late.display().to_string(), 1500))
        .timeout(Duration::from_millis(300))
        .enqueue()
        .unwrap();
    let e = failure(&r, &h);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert!(e.message.contains("future was dropped"), "{e}");
    // Starts after the timeout and takes longer than what was left of the cancelled one.
    touch_and_wait(&app, dir.path(), "after", 1500);
    assert!(
        !late.exists(),
        "the cancelled attempt went on after its timeout"
    );
    assert_eq!(runner_pid(&app), before, "no process was killed");
    if kind.is_process() {
        assert_eq!(h.workers(), vec![before as i32]);
    }
}

#[test]
fn a_timed_out_async_task_is_cancelled_on_an_async_worker() {
    a_timed_out_async_task_is_cancelled_and_its_worker_goes_on(Kind::Async);
}

#[test]
fn a_timed_out_async_task_is_cancelled_in_a_concurrent_process_worker() {
    a_timed_out_async_task_is_cancelled_and_its_worker_goes_on(Kind::ProcessConcurrent);
}

fn a_revoked_running_async_task_is_cancelled_and_its_worker_goes_on(b: Backend, kind: Kind) {
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1", "-c", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let before = runner_pid(&app);
    let late = dir.path().join("late");
    let r = touch(&app)
        .enqueue((late.display().to_string(), 3000))
        .unwrap();
    assert!(
        h.wait_log(&format!("id={}", r.id()), LONG),
        "never started: {}",
        h.log()
    );
    r.revoke().unwrap();
    let e = failure(&r, &h);
    assert_eq!(e.kind, FailureKind::Revoked, "{e}");
    assert!(e.message.contains("future was dropped"), "{e}");
    touch_and_wait(&app, dir.path(), "after", 3000);
    assert!(!late.exists(), "the revoked attempt went on");
    assert_eq!(runner_pid(&app), before, "no process was killed");
    if kind.is_process() {
        assert_eq!(h.workers(), vec![before as i32]);
    }
}

#[test]
fn a_revoked_running_async_task_is_cancelled_on_an_async_worker() {
    a_revoked_running_async_task_is_cancelled_and_its_worker_goes_on(
        Backend::sqlite(),
        Kind::Async,
    );
}

#[test]
fn a_revoked_running_async_task_is_cancelled_in_a_concurrent_process_worker() {
    a_revoked_running_async_task_is_cancelled_and_its_worker_goes_on(
        Backend::redis(),
        Kind::ProcessConcurrent,
    );
}

#[test]
fn an_async_task_that_never_yields_is_ended_by_killing_its_process_after_a_grace() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::ProcessConcurrent.testbed(&b.url(), &["-w", "1"]);
    let before = runner_pid(&app);
    let block: Task<u64, u64> = task(&app, "async_block");
    let r = block
        .call(120_000)
        .timeout(Duration::from_millis(200))
        .enqueue()
        .unwrap();
    let e = failure(&r, &h);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert!(e.message.contains("did not stop"), "{e}");
    let after = runner_pid(&app);
    assert_ne!(after, before, "the stuck worker was replaced");
}

fn an_async_task_that_blocks_its_thread_is_named_in_a_warning(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "1"]);
    runner_pid(&app);
    let block: Task<u64, u64> = task(&app, "async_block");
    let r = block.enqueue(2500).unwrap();
    // No timeout: nothing else would ever say that the runtime is stalled.
    assert!(
        h.wait_log("without yielding", LONG),
        "not reported: {}",
        h.log()
    );
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains("without yielding"))
        .unwrap();
    assert!(
        line.contains("async_block") && line.contains(r.id()),
        "{line}"
    );
    assert_eq!(r.wait(LONG).unwrap(), 2500);
    assert!(
        h.wait_log("gave its runtime thread back", LONG),
        "{}",
        h.log()
    );
}

#[test]
fn an_async_task_that_blocks_its_thread_is_named_in_a_warning_on_an_async_worker() {
    an_async_task_that_blocks_its_thread_is_named_in_a_warning(Kind::Async);
}

#[test]
fn an_async_task_that_blocks_its_thread_is_named_in_a_warning_in_a_process_worker() {
    an_async_task_that_blocks_its_thread_is_named_in_a_warning(Kind::ProcessConcurrent);
}

#[test]
fn a_sync_task_past_its_timeout_on_an_async_worker_is_abandoned_and_others_go_on() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::Async.testbed(&b.url(), &["-w", "4"]);
    let before = runner_pid(&app);
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let r = sleep
        .call(20_000)
        .timeout(Duration::from_millis(300))
        .enqueue()
        .unwrap();
    let e = failure(&r, &h);
    assert_eq!(e.kind, FailureKind::Timeout, "{e}");
    assert!(e.message.contains("thread was abandoned"), "{e}");
    assert_eq!(sleep.enqueue(1).unwrap().wait(LONG).unwrap(), 1);
    assert_eq!(runner_pid(&app), before);
}

#[test]
fn sync_tasks_on_an_async_worker_do_not_hold_up_its_futures() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::Async.testbed(&b.url(), &["-w", "16"]);
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let cpu: Task<u64, u64> = task(&app, "cpu");
    // Busy threads: more sync tasks than the machine has cores.
    let blocked = sleep
        .enqueue_many([15_000, 15_000, 15_000, 15_000])
        .unwrap();
    let spinning = cpu.enqueue_many([4_000_000_000, 4_000_000_000]).unwrap();
    assert!(wait_until(LONG, || h.log().matches("task started").count() == 6));
    let quick: Task<u64, u64> = task(&app, "async_sleep");
    for r in quick.enqueue_many((0..8).map(|_| 10)).unwrap() {
        assert_eq!(r.wait(LONG).unwrap(), 10);
    }
    let still_running = blocked.iter().chain(&spinning);
    assert!(
        still_running.into_iter().all(|r| !r.is_ready().unwrap()),
        "the async tasks finished while the sync ones ran"
    );
}

#[test]
fn sync_tasks_that_fill_the_blocking_pool_do_not_hold_up_async_tasks() {
    let b = Backend::sqlite();
    let app = b.app();
    // 16 blocking threads; twice as many sync tasks, so the pool has a queue too.
    let h = Kind::Async.testbed(&b.url(), &["-w", "64"]);
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let blocked = sleep.enqueue_many((0..32).map(|_| 8_000)).unwrap();
    assert!(wait_until(LONG, || h.log().matches("task started").count() >= 32));
    let quick: Task<u64, u64> = task(&app, "async_sleep");
    for r in quick.enqueue_many((0..8).map(|_| 10)).unwrap() {
        assert_eq!(r.wait(LONG).unwrap(), 10);
    }
    assert!(
        blocked.iter().all(|r| !r.is_ready().unwrap()),
        "the async tasks waited for the sync ones: {}",
        h.log()
    );
}

fn many_attempts_run_at_once(args: &[&str], tasks: usize, at_least: i64) {
    let b = Backend::redis();
    let app = b.app();
    let h = Hueyd::testbed(&b.url(), args);
    let in_flight: Task<u64, i64> = task(&app, "in_flight");
    let rs = in_flight
        .enqueue_many(std::iter::repeat_n(500, tasks))
        .unwrap();
    let seen: Vec<i64> = rs
        .iter()
        .map(|r| r.wait(LONG).unwrap_or_else(|e| panic!("{e}: {}", h.log())))
        .collect();
    let most = seen.iter().copied().max().unwrap();
    assert!(most >= at_least, "at most {most} at once");
    assert_eq!(app.storage().incr("in-flight", 0).unwrap(), 0);
}

#[test]
fn an_async_worker_runs_hundreds_of_attempts_at_once() {
    many_attempts_run_at_once(&["-k", "async", "-w", "500", "-q"], 500, 250);
}

#[test]
fn concurrent_process_workers_run_their_concurrency_each_at_once() {
    let args = ["-k", "process", "-w", "2", "--concurrency", "64", "-q"];
    many_attempts_run_at_once(&args, 256, 64);
}

fn a_stop_cancels_running_futures_and_releases_them_without_counting_a_delivery(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let args = ["-w", "4", "--stop-timeout", "0.3", "--max-deliveries", "1"];
    let mut h = kind.testbed(&b.url(), &args);
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("f{i}")).display().to_string())
        .collect();
    let rs = touch(&app)
        .enqueue_many(paths.iter().map(|p| (p.clone(), 3000)))
        .unwrap();
    assert!(wait_until(LONG, || h.log().matches("task started").count() == 2));
    h.signal(Signal::SIGTERM);
    let status = h.wait_exit(LONG).expect("exits");
    assert!(status.success(), "{status:?}: {}", h.log());
    assert!(
        rs.iter().all(|r| !r.is_ready().unwrap()),
        "not acknowledged"
    );
    assert_eq!(app.storage().counts().unwrap().ready, 2, "released");
    // One delivery allowed: had the cancelled one counted, they would be dead-lettered now.
    let _h2 = kind.testbed(&b.url(), &args);
    for r in &rs {
        r.wait(LONG).unwrap();
    }
    assert!(paths.iter().all(|p| Path::new(p).exists()));
    assert_eq!(app.storage().counts().unwrap().dead, 0);
}

#[test]
fn a_stop_cancels_running_futures_on_an_async_worker() {
    a_stop_cancels_running_futures_and_releases_them_without_counting_a_delivery(Kind::Async);
}

#[test]
fn a_stop_cancels_running_futures_in_concurrent_process_workers() {
    a_stop_cancels_running_futures_and_releases_them_without_counting_a_delivery(
        Kind::ProcessConcurrent,
    );
}

fn workflows_of_async_tasks_run_on_concurrent_workers(kind: Kind) {
    let b = Backend::sqlite();
    let app = b.app();
    let h = kind.testbed(&b.url(), &["-w", "2"]);
    let add: Task<(i64, i64), i64> = task(&app, "async_add");
    // A pipeline, and a chord whose sync callback sums async members.
    let p = add
        .s((1, 2))
        .then(&add, 10)
        .then(&add, 100)
        .enqueue()
        .unwrap();
    assert_eq!(p.wait(LONG).unwrap(), 113);
    let collect: Task<Vec<Result<i64, huey::TaskError>>, i64> = task(&app, "collect");
    let chord = add
        .map((0..20).map(|i| (i, 1)))
        .then_with(&collect)
        .enqueue()
        .unwrap();
    assert_eq!(chord.callback.wait(LONG).unwrap(), (1..=20).sum::<i64>());
    // Retries: one retry, then the failure is final; each run counted.
    let failing: Task<u64, u32> = task(&app, "async_failing");
    let r = failing.enqueue(10).unwrap();
    assert_eq!(failure(&r, &h).kind, FailureKind::Error);
    let runs = app.storage().incr(&format!("runs:{}", r.id()), 0).unwrap();
    assert_eq!(runs, 2, "one attempt and one retry");
    // A lock held elsewhere makes the attempt fail as locked; released, it runs.
    let locked: Task<u64, u64> = task(&app, "async_locked_sleep");
    let guard = app.lock_task("demo-lock").acquire().unwrap();
    assert_eq!(
        failure(&locked.enqueue(1).unwrap(), &h).kind,
        FailureKind::Locked
    );
    drop(guard);
    assert_eq!(locked.enqueue(1).unwrap().wait(LONG).unwrap(), 1);
    // Over its rate limit, a call waits for the next window.
    let limited: Task<(), u8> = task(&app, "async_limited");
    assert_eq!(limited.enqueue(()).unwrap().wait(LONG).unwrap(), 1);
    let second = limited.enqueue(()).unwrap();
    assert!(wait_until(LONG, || app
        .storage()
        .counts()
        .unwrap()
        .scheduled
        == 1));
    assert!(!second.is_ready().unwrap());
}

#[test]
fn workflows_of_async_tasks_run_on_an_async_worker() {
    workflows_of_async_tasks_run_on_concurrent_workers(Kind::Async);
}

#[test]
fn workflows_of_async_tasks_run_in_concurrent_process_workers() {
    workflows_of_async_tasks_run_on_concurrent_workers(Kind::ProcessConcurrent);
}

#[test]
fn concurrent_workers_killed_at_random_lose_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let b = Backend::sqlite();
    let app = b.app();
    let h = Hueyd::testbed(
        &b.url(),
        &["-k", "process", "-w", "4", "--concurrency", "8", "-q"],
    );
    h.wait_workers(4, LONG);
    let record: Task<u64, u32> = task(&app, "async_record");
    let handles = record.enqueue_many(std::iter::repeat_n(20, 3000)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (done, kills, pid) = (done.clone(), kills.clone(), h.pid());
        std::thread::spawn(move || {
            let mut rng = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
            while !done.load(Ordering::SeqCst) && kills.load(Ordering::SeqCst) < 100 {
                std::thread::sleep(Duration::from_millis(100));
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let ws = common::hueyd::children(pid);
                if let Some(&w) = ws.get((rng % ws.len().max(1) as u64) as usize) {
                    let w = nix::unistd::Pid::from_raw(w);
                    if nix::sys::signal::kill(w, Signal::SIGKILL).is_ok() {
                        kills.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let outcomes: Vec<Result<u32, huey::TaskError>> = handles
        .iter()
        .map(|r| match r.wait(Duration::from_secs(120)) {
            Ok(runs) => Ok(runs),
            Err(Error::Task(e)) => Err(e),
            Err(e) => panic!("no outcome: {e}: {}", h.log()),
        })
        .collect();
    done.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    let kills = kills.load(Ordering::SeqCst);
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    let twice = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(n) if *n > 1))
        .count();
    println!("kills {kills}, failed {failed}, ran twice {twice}");
    assert!(kills >= 3, "the test killed workers ({kills})");
    // A kill ends the attempts running in that process (at most its concurrency); the jobs
    // it had not started are never run twice.
    assert!(
        twice + failed <= kills * 8,
        "{twice} ran twice and {failed} failed with {kills} kills"
    );
    for e in outcomes.iter().filter_map(|o| o.as_ref().err()) {
        assert_eq!(e.kind, FailureKind::WorkerLost, "{e}");
    }
}

#[test]
fn a_revoked_sync_task_in_a_concurrent_process_worker_is_given_up_and_the_worker_goes_on() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::ProcessConcurrent.testbed(&b.url(), &["-w", "1", "-c", "0.2"]);
    let before = runner_pid(&app);
    let sleep: Task<u64, u64> = task(&app, "sleep");
    let r = sleep.enqueue(600_000).unwrap();
    assert!(h.wait_log(&format!("id={}", r.id()), LONG), "{}", h.log());
    r.revoke().unwrap();
    assert_eq!(failure(&r, &h).kind, FailureKind::Revoked);
    assert_eq!(sleep.enqueue(1).unwrap().wait(LONG).unwrap(), 1);
    assert_eq!(runner_pid(&app), before, "no process was killed");
}

#[test]
fn a_sync_task_that_timed_out_waiting_for_a_blocking_thread_never_starts() {
    let b = Backend::sqlite();
    let app = b.app();
    // Four more sync tasks at once than the async worker has blocking threads (4 per CPU, at
    // least 16: see docs/async-workers.md).
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = (4 * cpus).max(16);
    let workers = (threads + 4).to_string();
    let h = Kind::Async.testbed(&b.url(), &["-w", &workers, "-q"]);
    let record: Task<u64, u32> = task(&app, "record");
    let rs: Vec<_> = (0..threads + 4)
        .map(|_| {
            let call = record.call(2000).retries(0);
            call.timeout(Duration::from_millis(500)).enqueue().unwrap()
        })
        .collect();
    for r in &rs {
        assert_eq!(failure(r, &h).kind, FailureKind::Timeout);
    }
    // Queued behind the abandoned ones: once it runs, every one of them was taken up.
    assert_eq!(
        record
            .call(1)
            .retries(0)
            .enqueue()
            .unwrap()
            .wait(LONG)
            .unwrap(),
        1
    );
    let ran = rs
        .iter()
        .filter(|r| app.storage().incr(&format!("runs:{}", r.id()), 0).unwrap() > 0)
        .count();
    assert_eq!(
        ran, threads,
        "the four that had no thread before their timeout never ran"
    );
}

/// Jobs an async worker holds beyond its lanes (tasks were short, so it takes more than it
/// runs), revoked while they wait behind long ones: cancelled where they wait, they end as
/// `Revoked` and never run.
#[test]
fn jobs_revoked_while_waiting_for_a_lane_of_an_async_worker_never_run() {
    let b = Backend::sqlite();
    let app = b.app();
    let h = Kind::Async.testbed(&b.url(), &["-w", "2", "-c", "0.2"]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // A fast pace: the worker then takes as many jobs again as it has lanes.
    let warm: Vec<_> = (0..200)
        .map(|i| touch(&app).enqueue((path(&format!("w{i}")), 0)).unwrap())
        .collect();
    for r in &warm {
        r.wait(LONG).unwrap();
    }
    let longs: Vec<_> = (0..2)
        .map(|i| touch(&app).enqueue((path(&format!("l{i}")), 4000)).unwrap())
        .collect();
    let held: Vec<_> = (0..2)
        .map(|i| touch(&app).enqueue((path(&format!("h{i}")), 10)).unwrap())
        .collect();
    // All four leased: the long ones run, the others were handed over to wait for a lane.
    assert!(
        wait_until(LONG, || app.storage().counts().unwrap().in_flight == 4),
        "{}",
        h.log()
    );
    for r in &held {
        r.revoke().unwrap();
    }
    for (i, r) in held.iter().enumerate() {
        let e = failure(r, &h);
        assert_eq!(e.kind, FailureKind::Revoked, "{e}");
        assert!(e.message.contains("before it started"), "{e}");
        assert!(!dir.path().join(format!("h{i}")).exists(), "it ran");
    }
    for r in &longs {
        r.wait(LONG).unwrap();
    }
}
