//! Fleet-wide semaphores on real storages (memory, SQLite files, a real redis-server, a real
//! Postgres): at most N holders at once across threads and processes, permits of a killed
//! holder expire, the task option reschedules a task that finds no free permit (in-process and
//! on two consumers with process workers), and `hueyd locks` lists the permits held.

#[macro_use]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::hueyd::{wait_until, Backend};
use huey::{Error, Huey, Task};

const HELPER_URL: &str = "HUEY_SEMAPHORE_HELPER_URL";
const LONG: Duration = Duration::from_secs(60);

/// One app per contender: its own storage connection (the memory backend exists once per
/// process, so its contenders share it).
fn opener(b: &Option<Backend>) -> impl Fn() -> Huey + Send + Sync + Clone + 'static {
    let url = b.as_ref().map(|b| b.url());
    let memory = Huey::open("sem", "memory:").unwrap();
    move || match &url {
        Some(u) => Huey::open("sem", u.as_str()).unwrap(),
        None => memory.clone(),
    }
}

/// `on_all!(name, |b: Option<Backend>| ...)`: the body on memory (`None`), SQLite, Redis and
/// Postgres.
macro_rules! on_all {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn memory() {
                $body(None)
            }
            #[test]
            fn sqlite() {
                $body(Some(Backend::sqlite()))
            }
            #[test]
            fn redis() {
                $body(Some(Backend::redis()))
            }
            #[test]
            fn postgres() {
                $body(Some(Backend::postgres()))
            }
        }
    };
}

on_all!(n_permits_admit_n_holders_then_refuse, |b: Option<
    Backend,
>| {
    let app = opener(&b)();
    let sem = app.semaphore("exports", 3, LONG);
    let held: Vec<_> = (0..3).map(|_| sem.acquire().unwrap()).collect();
    assert_eq!(sem.held().unwrap(), 3);
    match sem.acquire() {
        Err(e @ Error::NoPermit { .. }) => {
            assert!(e.to_string().contains("\"exports\""), "{e}");
            assert!(e.to_string().contains('3'), "{e}");
        }
        other => panic!("a fourth holder got in: {other:?}"),
    }
    // Another semaphore's permits are apart.
    assert!(app.semaphore("imports", 1, LONG).acquire().is_ok());
    let listed = huey::semaphore::held_semaphores(&app).unwrap();
    assert_eq!(listed, vec![("exports".to_string(), 3, 3)]);
    let mut held = held.into_iter();
    assert!(held.next().unwrap().release().unwrap(), "still ours");
    let again = sem.acquire().expect("a permit given back can be taken");
    drop(again);
    drop(held);
    assert_eq!(
        sem.held().unwrap(),
        0,
        "dropped guards give their permits back"
    );
    assert_eq!(sem.with_permit(|| sem.held().unwrap()).unwrap(), 1);
    let _one = sem.acquire().unwrap();
    assert_eq!(sem.clear().unwrap(), 1);
    assert_eq!(sem.held().unwrap(), 0);
});

on_all!(
    sixteen_contenders_never_exceed_three_permits,
    |b: Option<Backend>| {
        let open = opener(&b);
        let max = Arc::new(AtomicI64::new(0));
        let contenders: Vec<_> = (0..16)
            .map(|_| {
                let (open, max) = (open.clone(), max.clone());
                thread::spawn(move || {
                    let app = open();
                    let sem = app.semaphore("contended", 3, LONG);
                    for _ in 0..6 {
                        let permit = loop {
                            match sem.acquire() {
                                Ok(p) => break p,
                                Err(Error::NoPermit { .. }) => {
                                    thread::sleep(Duration::from_millis(1))
                                }
                                Err(e) => panic!("{e}"),
                            }
                        };
                        // How many hold a permit now, counted in the storage itself.
                        let now = app.storage().incr("holders", 1).unwrap();
                        max.fetch_max(now, Ordering::SeqCst);
                        thread::sleep(Duration::from_millis(3));
                        app.storage().incr("holders", -1).unwrap();
                        assert!(
                            permit.release().unwrap(),
                            "the permit was ours until released"
                        );
                    }
                })
            })
            .collect();
        for c in contenders {
            c.join().unwrap();
        }
        let max = max.load(Ordering::SeqCst);
        assert!((1..=3).contains(&max), "{max} holders at once");
        assert_eq!(opener(&b)().storage().incr("holders", 0).unwrap(), 0);
    }
);

/// Run by the test below in a child process: take every permit of `doomed` (TTL 2 s), say
/// so, and hang until killed.
#[test]
#[ignore]
fn helper_hold_permits_and_hang() {
    let Ok(url) = std::env::var(HELPER_URL) else {
        return;
    };
    let app = Huey::open("sem", url.as_str()).unwrap();
    let sem = app.semaphore("doomed", 2, Duration::from_secs(2));
    let held = (sem.acquire().unwrap(), sem.acquire().unwrap());
    println!("HELD");
    thread::sleep(Duration::from_secs(120));
    drop(held);
}

both!(permits_of_a_killed_holder_expire, |b: Backend| {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_hold_permits_and_hang",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_URL, b.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.contains("HELD"));
    assert!(held, "the helper took the permits");
    let held_at = Instant::now();
    child.kill().unwrap(); // SIGKILL: no chance to give the permits back
    child.wait().unwrap();
    let app = Huey::open("sem", b.url().as_str()).unwrap();
    let sem = app.semaphore("doomed", 2, LONG);
    let refused = sem.acquire();
    if held_at.elapsed() < Duration::from_secs(1) {
        assert!(
            matches!(refused, Err(Error::NoPermit { .. })),
            "taken while the dead holder's permits lived"
        );
    }
    drop(refused);
    assert!(
        wait_until(Duration::from_secs(30), || sem.held().unwrap() == 0),
        "the dead holder's permits expired"
    );
    let a = sem.acquire().unwrap();
    let b = sem.acquire().unwrap();
    drop((a, b));
});

/// Register `capped(ms)`: at most 2 runs at once under the semaphore `capped`; a run counts
/// the runs in progress in storage and returns that count.
fn register_capped(app: &Huey) -> Task<u64, i64> {
    app.task("capped")
        .semaphore("capped", 2)
        .semaphore_ttl(LONG)
        .retries(10_000)
        .retry_delay(Duration::from_millis(5))
        .register_with_context(|ms: u64, ctx: &huey::TaskContext| {
            let s = ctx.app().storage();
            let now = s.incr("capped-now", 1).map_err(|e| e.to_string())?;
            thread::sleep(Duration::from_millis(ms));
            s.incr("capped-now", -1).map_err(|e| e.to_string())?;
            Ok::<_, String>(now)
        })
        .unwrap()
}

both!(task_option_caps_runs_across_consumers, |b: Backend| {
    let producer = Huey::open("sem", b.url().as_str()).unwrap();
    let capped = register_capped(&producer);
    let handles: Vec<_> = (0..12).map(|_| capped.enqueue(20).unwrap()).collect();
    let done = Arc::new(AtomicI64::new(0));
    let consumers: Vec<_> = (0..4)
        .map(|i| {
            let (url, done) = (b.url(), done.clone());
            thread::spawn(move || {
                let app = Huey::open("sem", url.as_str()).unwrap();
                register_capped(&app);
                let req = common::suite::request(&format!("c{i}"), &["default"], 1, LONG);
                let deadline = Instant::now() + Duration::from_secs(120);
                while done.load(Ordering::SeqCst) < 12 && Instant::now() < deadline {
                    let s = app.storage();
                    s.promote_due(huey::clock::now_ms(), 100).unwrap();
                    let ds = s.dequeue(&req).unwrap();
                    if ds.is_empty() {
                        thread::sleep(Duration::from_millis(2));
                    }
                    for d in &ds {
                        let events = app.execute(d).unwrap();
                        if events.iter().any(|e| e.kind == huey::EventKind::Complete) {
                            done.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.join().unwrap();
    }
    let counts: Vec<i64> = handles
        .iter()
        .map(|h| h.wait(Duration::from_secs(10)).unwrap())
        .collect();
    assert!(counts.iter().all(|n| (1..=2).contains(n)), "{counts:?}");
    assert_eq!(producer.semaphore("capped", 2, LONG).held().unwrap(), 0);
});

both!(hueyd_locks_lists_held_permits, |b: Backend| {
    let app = b.app();
    let _lock = app.lock_task("nightly").acquire().unwrap();
    let _p = app.semaphore("exports", 3, LONG).acquire().unwrap();
    let out = Command::new(common::hueyd::exe())
        .args(["--storage", &b.url(), "locks", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["locks"], serde_json::json!(["nightly"]));
    assert_eq!(
        v["semaphores"],
        serde_json::json!([{"name": "exports", "held": 1, "permits": 3}])
    );
    let out = Command::new(common::hueyd::exe())
        .args(["--storage", &b.url(), "locks"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("semaphore  exports  1/3 permits held"),
        "{text}"
    );
});

both!(
    two_consumers_with_process_workers_keep_to_the_permits,
    |b: Backend| {
        let app = b.app();
        let kind = common::hueyd::Kind::Process;
        let consumers = [
            kind.testbed(&b.url(), &["-w", "3"]),
            kind.testbed(&b.url(), &["-w", "3"]),
        ];
        let capped: Task<u64, i64> = Task::from_name(&app, "capped").unwrap();
        let handles: Vec<_> = (0..12).map(|_| capped.enqueue(100).unwrap()).collect();
        let counts: Vec<i64> = handles
            .iter()
            .map(|h| {
                h.wait(Duration::from_secs(120))
                    .unwrap_or_else(|e| panic!("{e}: {}", consumers[0].log()))
            })
            .collect();
        assert!(counts.iter().all(|n| (1..=2).contains(n)), "{counts:?}");
        assert_eq!(app.semaphore("capped", 2, LONG).held().unwrap(), 0);
    }
);

on_all!(a_permit_held_longer_than_its_ttl_is_renewed, |b: Option<
    Backend,
>| {
    let open = opener(&b);
    let ttl = Duration::from_millis(300);
    let holder = open().semaphore("renewed", 1, ttl);
    let other = open().semaphore("renewed", 1, ttl);
    let permit = holder.acquire().unwrap();
    // Four TTLs: without renewal the permit would be gone after the first.
    let until = Instant::now() + ttl * 4;
    while Instant::now() < until {
        match other.acquire() {
            Err(Error::NoPermit { .. }) => {}
            other => panic!("a second holder got in while the first held on: {other:?}"),
        }
        thread::sleep(Duration::from_millis(25));
    }
    assert!(permit.release().unwrap(), "still ours after four TTLs");
    assert!(other.acquire().is_ok(), "given back, it can be taken");
});

both!(
    a_task_running_past_its_permit_ttl_keeps_the_cap,
    |b: Backend| {
        let app = b.app();
        let consumer = common::hueyd::Kind::Process.testbed(&b.url(), &["-w", "2"]);
        let solo: Task<u64, i64> = Task::from_name(&app, "solo").unwrap();
        // Each run lasts five times the permit's 300 ms TTL; two workers are free for them.
        let handles: Vec<_> = (0..2).map(|_| solo.enqueue(1500).unwrap()).collect();
        let counts: Vec<i64> = handles
            .iter()
            .map(|h| {
                h.wait(LONG)
                    .unwrap_or_else(|e| panic!("{e}: {}", consumer.log()))
            })
            .collect();
        assert_eq!(
            counts,
            vec![1, 1],
            "the second run started while the first held the permit"
        );
        assert_eq!(app.semaphore("solo", 1, LONG).held().unwrap(), 0);
    }
);
