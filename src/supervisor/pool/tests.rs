//! The pool with real thread workers (and a process worker that cannot start), its clock
//! driven through the `now` its checks take.

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};

use super::*;
use crate::message::{Message, MessageOptions};

const LONG: Duration = Duration::from_secs(30);

fn pool(app: &Huey, cfg: Config) -> (Pool, Receiver<Tagged>) {
    let (tx, rx) = mpsc::channel();
    let sink: EventSink = Arc::new(move |t| tx.send(t).is_ok());
    (Pool::new(app, &cfg, sink), rx)
}

fn job(id: u64, task: &str, args: &impl serde::Serialize, timeout_ms: Option<u64>) -> Box<Job> {
    let options = MessageOptions {
        timeout_ms,
        ..MessageOptions::default()
    };
    let msg = Message::new(task, postcard::to_allocvec(args).unwrap(), options);
    Box::new(Job {
        id,
        lease: Lease(format!("lease-{id}")),
        payload: msg.encode().unwrap(),
        msg,
        started: Instant::now(),
        deadline: None,
        lease_until: Instant::now(),
    })
}

/// Feed worker events to the pool until `done` holds; returns what the pool handed back.
fn until(pool: &mut Pool, rx: &Receiver<Tagged>, done: impl Fn(&Pool) -> bool) -> Returns {
    let deadline = Instant::now() + LONG;
    let mut all = Returns::default();
    while !done(pool) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = rx.recv_timeout(left).expect("a worker event in time");
        let r = pool.on_event(event);
        all.ended.extend(r.ended);
        all.unstarted.extend(r.unstarted);
    }
    all
}

fn respawn_at(pool: &Pool) -> Option<Instant> {
    match pool.slots[0].state {
        State::Down { respawn_at } => respawn_at,
        _ => None,
    }
}

#[test]
fn the_respawn_delay_doubles_up_to_a_limit() {
    assert_eq!(respawn_delay(0), Duration::ZERO, "not a boot loop: at once");
    assert_eq!(respawn_delay(1), Duration::from_millis(200));
    assert_eq!(respawn_delay(2), Duration::from_millis(400));
    assert_eq!(respawn_delay(8), Duration::from_millis(25_600));
    assert_eq!(respawn_delay(100), Duration::from_millis(25_600));
}

#[test]
fn a_worker_that_cannot_start_is_tried_again_later_each_time() {
    let app = Huey::open("pool", "memory:").unwrap();
    let cfg = Config {
        kind: WorkerKind::Process,
        worker_exe: Some("/nonexistent/hueyd".into()),
        ..Config::default()
    };
    let (mut pool, _rx) = pool(&app, cfg);
    pool.add();
    assert_eq!(pool.slots[0].quick_deaths, 1);
    let mut at = respawn_at(&pool).expect("a respawn time");
    for wait_ms in [400, 800, 1600] {
        pool.check(at - Duration::from_millis(1));
        assert_eq!(respawn_at(&pool), Some(at), "not before its time");
        pool.check(at);
        let next = respawn_at(&pool).expect("a respawn time");
        assert_eq!(next - at, Duration::from_millis(wait_ms));
        at = next;
    }
    pool.stop();
    pool.check(at);
    assert_eq!(respawn_at(&pool), Some(at), "no respawn while stopping");
    assert_eq!(pool.room(1, 0), 0);
}

#[test]
fn a_worker_is_recycled_after_max_tasks_and_its_old_events_are_ignored() {
    let app = Huey::open("pool", "memory:").unwrap();
    app.task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .unwrap();
    let cfg = Config {
        max_tasks: Some(1),
        log_tasks: false,
        ..Config::default()
    };
    let (mut pool, rx) = pool(&app, cfg);
    pool.add();
    until(&mut pool, &rx, |p| p.room(1, 0) == 1);
    pool.hand_over(0, job(1, "add", &(2i64, 3i64), None))
        .unwrap_or_else(|_| panic!("the worker is up"));
    assert_eq!((pool.busy(), pool.room(1, 0)), (1, 0));

    let done = until(&mut pool, &rx, |p| p.busy() == 0);
    let [ended] = &done.ended[..] else {
        panic!("one attempt ended")
    };
    let out = ended.outcome.as_ref().expect("it ran");
    assert_eq!(postcard::from_bytes::<i64>(&out.value).unwrap(), 5);
    assert_eq!((ended.job.id, ended.lost), (1, false));
    assert_eq!(pool.slots[0].gen, 2, "replaced by a fresh worker");

    // The old worker's exit (generation 1) must not take the new one's slot down.
    let mut events = Vec::new();
    while events.len() < 2 {
        events.push(rx.recv_timeout(LONG).expect("a worker event in time"));
    }
    events.sort_by_key(|t| t.gen);
    assert!(matches!(events[0].event, WorkerEvent::Exited { .. }));
    assert!(matches!(events[1].event, WorkerEvent::Ready { .. }));
    for t in events {
        let r = pool.on_event(t);
        assert!(r.ended.is_empty() && r.unstarted.is_empty());
    }
    assert_eq!(pool.room(1, 0), 1, "the new worker is up");
}

#[test]
fn a_task_past_its_timeout_ends_and_the_jobs_behind_it_are_given_back_in_order() {
    let app = Huey::open("pool", "memory:").unwrap();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    app.task("block")
        .register(move |(): ()| {
            let (open, cv) = &*g;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok::<_, String>(())
        })
        .unwrap();
    let cfg = Config {
        log_tasks: false,
        ..Config::default()
    };
    let (mut pool, rx) = pool(&app, cfg);
    pool.add();
    until(&mut pool, &rx, |p| p.room(3, 0) == 3);
    for id in 1..=3 {
        let i = pool.emptiest(3, 0, 0).expect("room");
        pool.hand_over(i, job(id, "block", &(), Some(50)))
            .unwrap_or_else(|_| panic!("the worker is up"));
    }
    let deadline = pool.jobs().next().and_then(|j| j.deadline).expect("timed");

    assert!(pool
        .check(deadline - Duration::from_millis(1))
        .ended
        .is_empty());
    let out = pool.check(deadline);
    let [ended] = &out.ended[..] else {
        panic!("one attempt ended")
    };
    assert_eq!(ended.job.id, 1);
    let failure = ended.outcome.as_ref().expect_err("a failure");
    assert_eq!(failure.kind, FailureKind::Timeout);
    let back: Vec<u64> = out.unstarted.iter().map(|j| j.id).collect();
    assert_eq!(back, [2, 3], "never started, in order");
    assert_eq!((pool.slots[0].gen, pool.busy()), (2, 0), "a fresh worker");

    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    until(&mut pool, &rx, |p| p.room(1, 0) == 1);
}

#[test]
fn large_jobs_wait_for_an_idle_worker_and_small_ones_fill_a_byte_budget() {
    use crate::supervisor::dispatcher::PIPE_BYTES;
    let app = Huey::open("pool", "memory:").unwrap();
    let (mut pool, _rx) = pool(&app, Config::default());
    let mut slot = Slot::new(1, false, Instant::now());
    (slot.gen, slot.state) = (1, State::Up);
    pool.slots.push(slot);
    assert_eq!(
        pool.emptiest(8, 0, 10 * PIPE_BYTES),
        Some(0),
        "idle: any size"
    );
    pool.slots[0].running.insert(1, job(1, "long", &(), None));
    assert_eq!(
        pool.emptiest(8, 0, PIPE_BYTES + 1),
        None,
        "not behind a running job"
    );
    let fits = job(2, "small", &vec![0u8; PIPE_BYTES / 2], None);
    let size = fits.payload.len();
    assert_eq!(pool.emptiest(8, 0, size), Some(0));
    pool.slots[0].queued.push_back(fits);
    assert_eq!(pool.emptiest(8, 0, size), None, "the budget is spent");
    assert_eq!(pool.emptiest(8, 0, 100), Some(0), "small ones still fit");
    assert_eq!(pool.emptiest(2, 0, 100), None, "and the depth holds too");
}

/// A pool with one async worker running up to `concurrency` attempts of `nap(ms)` at once.
#[cfg(feature = "async")]
fn async_pool(concurrency: usize) -> (Huey, Pool, Receiver<Tagged>) {
    let app = Huey::open("pool", "memory:").unwrap();
    app.task("nap")
        .register_async(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
        .unwrap();
    let cfg = Config {
        kind: WorkerKind::Async,
        workers: concurrency,
        log_tasks: false,
        ..Config::default()
    };
    let (mut pool, rx) = pool(&app, cfg);
    pool.add();
    until(&mut pool, &rx, |p| p.room(1, 0) == concurrency);
    (app, pool, rx)
}

#[cfg(feature = "async")]
fn hand(pool: &mut Pool, job: Box<Job>) {
    let i = pool.emptiest(1, 0, job.payload.len()).expect("room");
    pool.hand_over(i, job)
        .unwrap_or_else(|_| panic!("the worker is up"));
}

#[test]
#[cfg(feature = "async")]
fn a_concurrent_worker_runs_its_jobs_at_once_and_they_end_in_any_order() {
    let (_app, mut pool, rx) = async_pool(3);
    for (id, ms) in [(1, 400u64), (2, 10), (3, 150)] {
        hand(&mut pool, job(id, "nap", &ms, None));
    }
    assert_eq!(
        (pool.busy(), pool.room(8, 0)),
        (3, 0),
        "all running, no more room"
    );
    assert!(pool.jobs().all(|j| j.deadline.is_none()));
    let mut order = Vec::new();
    while order.len() < 3 {
        let r = until(&mut pool, &rx, |p| p.busy() < 3 - order.len());
        order.extend(r.ended.iter().map(|e| e.job.id));
        assert!(r.ended.iter().all(|e| e.outcome.is_ok()));
    }
    assert_eq!(order, [2, 3, 1], "each as it ends");
    assert_eq!(pool.room(1, 0), 3);
}

#[test]
#[cfg(feature = "async")]
fn a_concurrent_worker_cancels_a_revoked_job_and_its_others_go_on() {
    let (app, mut pool, rx) = async_pool(2);
    let long = job(1, "nap", &60_000u64, None);
    app.revoke_id(&long.msg.id, crate::revoke::Revoke::default())
        .unwrap();
    hand(&mut pool, long);
    hand(&mut pool, job(2, "nap", &300u64, None));
    let later = Instant::now() + Duration::from_secs(2);
    assert!(
        pool.cancel_revoked(later).ended.is_empty(),
        "asked, not ended"
    );
    let r = until(&mut pool, &rx, |p| p.busy() < 2);
    let [ended] = &r.ended[..] else {
        panic!("one attempt ended")
    };
    assert_eq!(ended.job.id, 1);
    let f = ended.outcome.as_ref().expect_err("revoked");
    assert_eq!(f.kind, FailureKind::Revoked, "{f:?}");
    assert_eq!(pool.slots[0].gen, 1, "the same worker");
    let r = until(&mut pool, &rx, |p| p.busy() == 0);
    assert!(r.ended[0].outcome.is_ok(), "the other one finished");
}

#[test]
#[cfg(feature = "async")]
fn an_attempt_a_concurrent_worker_does_not_end_is_given_up_after_the_grace() {
    let (_app, mut pool, rx) = async_pool(2);
    hand(&mut pool, job(1, "nap", &60_000u64, Some(60_000)));
    hand(&mut pool, job(2, "nap", &20u64, None));
    let deadline = pool.jobs().find_map(|j| j.deadline).expect("timed");
    assert!(
        pool.check(deadline).ended.is_empty(),
        "the worker's own timer first"
    );
    let out = pool.check(deadline + health::GRACE);
    let [ended] = &out.ended[..] else {
        panic!("one attempt ended")
    };
    assert_eq!(ended.job.id, 1);
    let f = ended.outcome.as_ref().expect_err("timed out");
    assert_eq!(f.kind, FailureKind::Timeout, "{f:?}");
    let r = until(&mut pool, &rx, |p| p.busy() == 0);
    assert_eq!(r.ended[0].job.id, 2, "the other attempt ran on");
    assert_eq!(
        pool.slots[0].gen, 1,
        "an in-process runtime is not replaced"
    );
}

/// Takes one off a count of attempts running when dropped.
#[cfg(feature = "async")]
struct Leaves(Arc<std::sync::atomic::AtomicUsize>);

#[cfg(feature = "async")]
impl Drop for Leaves {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `nap(ms)` that also records the most attempts of it running at once.
#[cfg(feature = "async")]
fn counting_app() -> (Huey, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let app = Huey::open("pool", "memory:").unwrap();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = most.clone();
    app.task("nap")
        .register_async(move |ms: u64| {
            let (now, most) = (now.clone(), most.clone());
            async move {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                // Counted out when its future is dropped, cancelled or not.
                let _out = Leaves(now);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, String>(ms)
            }
        })
        .unwrap();
    (app, seen)
}

#[cfg(feature = "async")]
#[test]
fn an_async_worker_holds_jobs_ahead_and_starts_them_itself_never_past_its_concurrency() {
    let (app, most) = counting_app();
    let cfg = Config {
        kind: WorkerKind::Async,
        workers: 2,
        log_tasks: false,
        ..Config::default()
    };
    let (mut pool, rx) = pool(&app, cfg);
    pool.add();
    until(&mut pool, &rx, |p| p.room(1, 3) == 5);
    for id in 1..=5 {
        let j = job(id, "nap", &100u64, None);
        let i = pool.emptiest(1, 3, j.payload.len()).expect("room");
        pool.hand_over(i, j).unwrap_or_else(|_| panic!("up"));
    }
    assert_eq!((pool.busy(), pool.jobs().count()), (2, 5), "2 run, 3 wait");
    assert_eq!(pool.room(1, 3), 0);
    let mut order = Vec::new();
    while order.len() < 5 {
        let r = until(&mut pool, &rx, |p| p.jobs().count() < 5 - order.len());
        assert!(r.ended.iter().all(|e| e.outcome.is_ok()));
        order.extend(r.ended.iter().map(|e| e.job.id));
        assert!(pool.busy() <= 2);
    }
    order.sort_unstable();
    assert_eq!(order, [1, 2, 3, 4, 5], "each ran once");
    assert_eq!(
        most.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "never more at once than the concurrency"
    );
}

#[cfg(feature = "async")]
#[test]
fn a_runner_starts_waiting_attempts_in_order_and_a_cancelled_waiting_one_never_starts() {
    use crate::worker::runtime::Runner;
    let (app, most) = counting_app();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let report: crate::worker::runtime::Report = Arc::new(move |job, out| {
        let _ = tx.lock().unwrap().send((job, out));
    });
    let runner = Runner::new(app, 1, 1, 1, report).unwrap();
    let nap = |ms: u64| {
        Message::new(
            "nap",
            postcard::to_allocvec(&ms).unwrap(),
            Default::default(),
        )
    };
    runner.start(1, nap(60_000));
    runner.start(2, nap(10));
    runner.start(3, nap(10));
    runner.start(4, nap(10));
    assert!(runner.cancel(3), "a waiting one is cancelled");
    let (job, out) = rx.recv_timeout(LONG).unwrap();
    assert_eq!(job, 3);
    let f = out.expect_err("revoked");
    assert_eq!(f.kind, FailureKind::Revoked, "{f:?}");
    assert!(!runner.cancel(3), "and gone");
    assert!(runner.cancel(1), "the running one");
    let ends: Vec<_> = (0..3).map(|_| rx.recv_timeout(LONG).unwrap()).collect();
    let ids: Vec<u64> = ends.iter().map(|(j, _)| *j).collect();
    assert_eq!(ids, [1, 2, 4], "in order, 3 never ran");
    assert_eq!(ends[0].1.as_ref().unwrap_err().kind, FailureKind::Revoked);
    assert!(ends[1].1.is_ok() && ends[2].1.is_ok());
    runner.wait_idle();
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[cfg(feature = "async")]
#[test]
fn a_job_revoked_while_waiting_in_an_async_worker_is_cancelled_there_and_never_starts() {
    let (app, most) = counting_app();
    let cfg = Config {
        kind: WorkerKind::Async,
        workers: 1,
        log_tasks: false,
        ..Config::default()
    };
    let (mut pool, rx) = pool(&app, cfg);
    pool.add();
    until(&mut pool, &rx, |p| p.room(1, 1) == 2);
    let long = job(1, "nap", &60_000u64, None);
    let waiting = job(2, "nap", &10u64, None);
    app.revoke_id(&waiting.msg.id, crate::revoke::Revoke::default())
        .unwrap();
    for j in [long, waiting] {
        let i = pool.emptiest(1, 1, j.payload.len()).expect("room");
        pool.hand_over(i, j).unwrap_or_else(|_| panic!("up"));
    }
    assert_eq!(
        (pool.busy(), pool.jobs().count()),
        (1, 2),
        "1 runs, 1 waits"
    );
    let later = Instant::now() + Duration::from_secs(2);
    assert!(pool.cancel_revoked(later).ended.is_empty(), "asked");
    let r = until(&mut pool, &rx, |p| p.jobs().count() == 1);
    let [ended] = &r.ended[..] else {
        panic!("one job ended")
    };
    assert_eq!(ended.job.id, 2, "the waiting one");
    let f = ended.outcome.as_ref().expect_err("revoked");
    assert_eq!(f.kind, FailureKind::Revoked, "{f:?}");
    assert!(
        pool.slots[0].cancelling.is_empty(),
        "nothing left to wait for"
    );
    assert!(f.message.contains("before it started"), "{f:?}");
    assert_eq!(pool.busy(), 1, "the long one still runs");
    assert!(most.load(std::sync::atomic::Ordering::SeqCst) <= 1);
}

#[test]
fn each_removal_retires_one_more_busy_worker_and_one_always_stays() {
    let app = Huey::open("pool", "memory:").unwrap();
    let (mut pool, _rx) = pool(&app, Config::default());
    for id in 1..=3 {
        let mut slot = Slot::new(1, false, Instant::now());
        (slot.gen, slot.state) = (1, State::Up);
        slot.running.insert(id, job(id, "long", &(), None));
        pool.slots.push(slot);
    }
    let retired = |p: &Pool| p.slots.iter().filter(|s| s.retired).count();
    pool.remove();
    assert_eq!(retired(&pool), 1);
    // Still busy, the first retiring slot is not picked again.
    pool.remove();
    assert_eq!(retired(&pool), 2);
    pool.remove();
    assert_eq!(retired(&pool), 2, "the last worker stays");
    assert!(!pool.slots[0].retired && pool.slots[1].retired && pool.slots[2].retired);
}
