//! The storage cases against SQLite files, plus what only a file shared by several processes
//! can show.
#[macro_use]
mod common;

use std::sync::Arc;

use huey::storage::{SqliteOptions, SqliteStorage, Storage};

fn open(path: &std::path::Path) -> Arc<dyn Storage> {
    Arc::new(SqliteStorage::open(path.to_str().unwrap(), SqliteOptions::default()).unwrap())
}

/// The storage cases, against SQLite.
#[path = "common/cases/mod.rs"]
mod cases;

/// New connections on one database file in a fresh directory.
fn factory() -> impl Fn() -> Arc<dyn Storage> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huey.db");
    move || {
        let _keep = &dir;
        open(&path)
    }
}

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::suite::{ack, enqueue, names, ready, request, waiting};
use huey::storage::{Batch, Kv, Lease, Synchronous};
use huey::Error;

/// The environment variable that hands a helper process its database path.
const DB_ENV: &str = "HUEY_TEST_SQLITE_DB";

/// Run one `#[ignore]`d helper test of this binary in a new process.
fn spawn_helper(name: &str, db: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The text after `marker` in a helper's output line (libtest may print its own
/// "test name ... " before it on the same line).
fn marked(line: &str, marker: &str) -> Option<String> {
    line.split_once(marker)
        .map(|(_, rest)| rest.trim().to_string())
}

/// The database a helper was given, or `None` when run by hand without one.
fn helper_db() -> Option<PathBuf> {
    std::env::var_os(DB_ENV).map(PathBuf::from)
}

fn open_err(path: &str) -> String {
    match SqliteStorage::open(path, SqliteOptions::default()) {
        Ok(_) => panic!("opening {path} should fail"),
        Err(e @ Error::Storage { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e:?}"),
    }
}

#[test]
#[ignore = "helper: run by two_processes_drain_one_queue_delivering_each_item_once"]
fn helper_drain() {
    let Some(db) = helper_db() else { return };
    let s = open(&db);
    loop {
        let ds = s
            .dequeue(&waiting(
                request("drain", &["default"], 5, Duration::from_secs(60)),
                Duration::from_millis(300),
            ))
            .unwrap();
        if ds.is_empty() {
            if s.counts().unwrap().ready == 0 {
                return;
            }
            continue;
        }
        for name in names(&ds) {
            println!("GOT {name}");
        }
        ack(&*s, ds.into_iter().map(|d| d.lease).collect());
    }
}

#[test]
fn two_processes_drain_one_queue_delivering_each_item_once() {
    const N: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("huey.db");
    let s = open(&db);
    enqueue(
        &*s,
        (0..N)
            .map(|i| ready(&format!("item{i}"), "default", 0))
            .collect(),
    );
    let children: Vec<Child> = (0..2).map(|_| spawn_helper("helper_drain", &db)).collect();
    let mut all = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "helper failed: {:?}", out.status);
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| marked(l, "GOT "))
            .collect();
        println!("one process took {} items", got.len());
        all.extend(got);
    }
    assert_eq!(all.len(), N, "every item delivered exactly once in total");
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), N, "no item delivered twice");
    assert_eq!(s.counts().unwrap(), Default::default());
}

#[test]
#[ignore = "helper: run by lease_of_a_killed_process_expires_and_another_process_takes_it"]
fn helper_lease_and_hang() {
    let Some(db) = helper_db() else { return };
    let s = open(&db);
    let ds = s
        .dequeue(&request("doomed", &["default"], 1, Duration::from_secs(2)))
        .unwrap();
    assert_eq!(ds.len(), 1);
    println!("LEASED {}", ds[0].lease.0);
    thread::sleep(Duration::from_secs(120));
}

#[test]
fn lease_of_a_killed_process_expires_and_another_process_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("huey.db");
    let s = open(&db);
    enqueue(&*s, vec![ready("precious", "default", 0)]);
    let mut child = spawn_helper("helper_lease_and_hang", &db);
    let stdout = child.stdout.take().unwrap();
    let lease = BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| marked(&l, "LEASED "))
        .expect("the helper leased the message");
    let leased_at = Instant::now();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let now = s
        .dequeue(&request(
            "survivor",
            &["default"],
            1,
            Duration::from_secs(60),
        ))
        .unwrap();
    if leased_at.elapsed() < Duration::from_secs(1) {
        assert!(now.is_empty(), "taken while the dead process's lease held");
    }
    let ds = if now.is_empty() {
        s.dequeue(&waiting(
            request("survivor", &["default"], 1, Duration::from_secs(60)),
            Duration::from_secs(20),
        ))
        .unwrap()
    } else {
        now
    };
    assert_eq!(names(&ds), ["precious"]);
    assert_eq!(ds[0].deliveries, 2);
    // The dead process's lease can no longer ack it.
    assert!(!s.apply(&Batch::ack(Lease(lease))).unwrap(), "fenced off");
    assert_eq!(s.counts().unwrap().in_flight, 1);
}

#[test]
fn threads_share_one_storage_enqueueing_and_dequeueing() {
    const PER_PRODUCER: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("huey.db"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for p in 0..2 {
        let s = s.clone();
        threads.push(thread::spawn(move || {
            for i in 0..PER_PRODUCER {
                enqueue(&*s, vec![ready(&format!("p{p}-{i}"), "default", 0)]);
            }
        }));
    }
    for c in 0..3 {
        let (s, seen) = (s.clone(), seen.clone());
        threads.push(thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.lock().unwrap().len() < 2 * PER_PRODUCER && Instant::now() < deadline {
                let ds = s
                    .dequeue(&waiting(
                        request(&format!("c{c}"), &["default"], 4, Duration::from_secs(60)),
                        Duration::from_millis(50),
                    ))
                    .unwrap();
                seen.lock().unwrap().extend(names(&ds));
                ack(&*s, ds.into_iter().map(|d| d.lease).collect());
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2 * PER_PRODUCER);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2 * PER_PRODUCER);
    assert_eq!(s.counts().unwrap(), Default::default());
}

#[test]
fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("huey.db");
    for sync in [Synchronous::Off, Synchronous::Normal, Synchronous::Full] {
        let s = SqliteStorage::open(
            db.to_str().unwrap(),
            SqliteOptions {
                synchronous: sync,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        enqueue(&s, vec![ready(&format!("{sync:?}"), "default", 0)]);
        s.incr("opened", 1).unwrap();
    }
    let s = open(&db);
    assert_eq!(s.incr("opened", 0).unwrap(), 3);
    assert_eq!(s.pending(10).unwrap(), [&b"Off"[..], b"Normal", b"Full"]);
}

#[test]
fn storage_url_opens_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("via-url.db");
    let s = huey::storage::open(&format!("sqlite:{}", db.display()), "app").unwrap();
    assert_eq!(s.backend(), "sqlite");
    s.put(huey::storage::Ns::Data, "k", b"v", None).unwrap();
    assert!(db.exists());
}

#[test]
fn opening_a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(
        &path,
        "these are not the bytes of a SQLite database\n".repeat(100),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let msg = open_err(path);
    assert!(
        msg.contains(&format!("{path} is not a SQLite database")),
        "{msg}"
    );
    // The file is left alone.
    assert!(std::fs::read_to_string(path)
        .unwrap()
        .starts_with("these are"));
}

#[test]
fn opening_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("huey.db");
    let msg = open_err(path.to_str().unwrap());
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(msg.contains("no-such-dir"), "{msg}");
}

#[test]
fn opening_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let msg = open_err(dir.path().to_str().unwrap());
    assert!(msg.contains("is a directory"), "{msg}");
}

/// Make `path` immutable with `chattr +i` (read-only even for root); false where unsupported.
fn make_immutable(path: &Path) -> bool {
    Command::new("chattr")
        .arg("+i")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn make_mutable(path: &Path) {
    let _ = Command::new("chattr").arg("-i").arg(path).status();
}

#[test]
fn read_only_database_is_a_clear_error() {
    // On a real file system under the target directory: tmpfs may not support `chattr`.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = dir.path().join("huey.db");
    drop(open(&db));
    if !make_immutable(&db) {
        println!("skipped: cannot make a file read-only here (chattr +i unsupported)");
        return;
    }
    let result = SqliteStorage::open(db.to_str().unwrap(), SqliteOptions::default());
    make_mutable(&db);
    let msg = match result {
        Ok(_) => panic!("an immutable database opened for writing"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("read-only"), "{msg}");
    assert!(msg.contains(db.to_str().unwrap()), "{msg}");
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sub = dir.path().join("locked");
    std::fs::create_dir(&sub).unwrap();
    let existing = sub.join("existing.db");
    drop(open(&existing));
    if !make_immutable(&sub) {
        println!("skipped: cannot make a directory read-only here (chattr +i unsupported)");
        return;
    }
    let fresh = SqliteStorage::open(sub.join("new.db").to_str().unwrap(), Default::default());
    let old = SqliteStorage::open(existing.to_str().unwrap(), Default::default());
    make_mutable(&sub);
    for (what, result) in [("new", fresh), ("existing", old)] {
        let msg = match result {
            Ok(_) => panic!("a {what} database opened in an unwritable directory"),
            Err(e) => e.to_string(),
        };
        println!("{what}: {msg}");
        assert!(msg.contains("locked"), "{msg}");
        assert!(msg.contains("writable"), "{msg}");
    }
}

#[test]
fn many_connections_can_create_one_fresh_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("huey.db");
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let db = db.clone();
            thread::spawn(move || {
                let s = SqliteStorage::open(db.to_str().unwrap(), SqliteOptions::default())?;
                s.incr("opened", 1)?;
                enqueue(&s, vec![ready(&format!("m{i}"), "default", 0)]);
                Ok::<_, Error>(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let s = open(&db);
    assert_eq!(s.incr("opened", 0).unwrap(), 6);
    assert_eq!(s.counts().unwrap().ready, 6);
}

#[test]
fn sqlite_url_takes_durability_and_busy_timeout_options() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("opts.db");
    let url = format!("sqlite:{}?synchronous=full&busy_timeout=2.5", db.display());
    let s = huey::storage::open(&url, "t").unwrap();
    enqueue(&*s, vec![ready("x", "default", 0)]);
    assert_eq!(s.counts().unwrap().ready, 1);
    assert!(db.exists(), "the query is not part of the file name");
    for bad in [
        "?synchronous=sometimes",
        "?busy_timeout=soon",
        "?busy_timeout=3000000",
        "?journal=off",
    ] {
        let e = huey::storage::open(&format!("sqlite:{}{bad}", db.display()), "t")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid storage URL"), "{bad}: {e}");
    }
}

#[test]
fn a_database_locked_by_another_process_is_a_clear_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let url = format!("sqlite:{}?busy_timeout=0.2", db.display());
    let s = huey::storage::open(&url, "t").unwrap();
    enqueue(&*s, vec![ready("before", "default", 0)]);

    // Another connection (as another process would) holds the write lock.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let batch = Batch {
        enqueue: vec![ready("during", "default", 0)],
        ..Batch::default()
    };
    let e = s.apply(&batch).unwrap_err().to_string();
    assert!(e.contains("locked"), "{e}");
    assert!(e.contains("locked.db"), "the error names the file: {e}");

    holder.execute_batch("COMMIT").unwrap();
    s.apply(&batch).unwrap();
    assert_eq!(
        s.counts().unwrap().ready,
        2,
        "the retried write went through, nothing lost"
    );
}

/// Rows of expiring entries in the file, counted through a connection of its own.
fn expiring_rows(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT (SELECT COUNT(*) FROM kv) + (SELECT COUNT(*) FROM results)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .unwrap()
}

/// A long run compressed: thousands of claims, results and rate-limit windows with a short TTL
/// are written round after round, with the consumer's purge (bounded calls, repeated while
/// one hits its bound) between rounds. The file holds only what has not expired yet; without
/// the purge it holds everything ever written.
#[test]
fn expired_rows_are_deleted_so_the_file_stays_bounded() {
    use huey::clock::now_ms;
    use huey::storage::{Ns, ResultPut};
    const TTL: Duration = Duration::from_millis(100);
    const ROUNDS: usize = 60;
    const PER_ROUND: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("purge.db");
    let s = open(&db);
    // (written from, written until, rows) per round.
    let mut rounds: Vec<(u64, u64, u64)> = Vec::new();
    let mut most = 0;
    let ttl = TTL.as_millis() as u64;
    for r in 0..ROUNDS {
        let from = now_ms();
        for i in 0..PER_ROUND {
            let key = format!("periodic:task:{r}:{i}");
            assert!(s.put_if_empty(Ns::Claims, &key, b"1", Some(TTL)).unwrap());
        }
        let results = (0..PER_ROUND)
            .map(|i| ResultPut {
                id: format!("{r}-{i}"),
                value: vec![0; 32],
                ttl: Some(TTL),
            })
            .collect();
        s.apply(&Batch {
            results,
            ..Batch::default()
        })
        .unwrap();
        for w in 0..20 {
            s.incr_expiring(&format!("window:{r}:{w}"), 1, TTL).unwrap();
        }
        rounds.push((from, now_ms(), (2 * PER_ROUND + 20) as u64));
        thread::sleep(Duration::from_millis(20));

        // The consumer's purge: bounded calls, again while one hits its bound.
        let now = now_ms();
        while s.purge_expired(now, 500).unwrap() == 500 {}
        let left = expiring_rows(&db);
        most = most.max(left);
        // Rounds that expired entirely are gone; rounds not expired at all are all there.
        let live_at_most: u64 = rounds.iter().filter(|r| r.1 + ttl > now).map(|r| r.2).sum();
        let live_at_least: u64 = rounds.iter().filter(|r| r.0 + ttl > now).map(|r| r.2).sum();
        assert!(
            (live_at_least..=live_at_most).contains(&left),
            "round {r}: {left} rows, expected {live_at_least}..={live_at_most}"
        );
    }
    let written: u64 = rounds.iter().map(|r| r.2).sum();
    eprintln!("expiring rows: at most {most} at once, {written} written");
    assert!(
        most * 4 < written,
        "at most {most} rows at once of {written} written"
    );
    // Counts never included expired rows: the same before and after the last purge.
    thread::sleep(TTL + Duration::from_millis(50));
    assert_eq!(s.counts().unwrap().results, 0);
    while s.purge_expired(now_ms(), 500).unwrap() == 500 {}
    assert_eq!(expiring_rows(&db), 0);
    assert_eq!(s.counts().unwrap().results, 0);

    // The purge finds expired rows through the indexes on expiry, not by scanning.
    let c = rusqlite::Connection::open(&db).unwrap();
    for (table, key) in [("results", "rowid"), ("kv", "ns, key")] {
        let sql =
            format!("EXPLAIN QUERY PLAN SELECT {key} FROM {table} WHERE expires <= 5 LIMIT 10");
        let plan: Vec<String> = c
            .prepare(&sql)
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains(&format!("{table}_expires"))),
            "{table}: {plan:?}"
        );
    }
}
