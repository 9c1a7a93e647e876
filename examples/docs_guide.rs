//! The examples of docs/guide.md, run by `cargo test` (tests/docs_examples.rs): tasks and
//! options, scheduling, results, retries, revocation, task control, periodic tasks. Runs on a
//! temporary SQLite file with the library's execute path standing in for a consumer.

use std::time::{Duration, SystemTime};

use huey::storage::DequeueRequest;
use huey::task::Control;
use huey::{Crontab, Error, FailureKind, Huey, Revoke, TaskContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Resize {
    path: String,
    width: u32,
}

/// What a consumer does, in this thread: run everything that is ready.
fn run_ready(app: &Huey) -> huey::Result<usize> {
    let req = DequeueRequest {
        consumer: "guide".into(),
        queues: vec!["default".into()],
        max: 100,
        lease: Duration::from_secs(30),
        wait: Duration::ZERO,
        max_deliveries: 5,
    };
    let mut n = 0;
    loop {
        app.storage().promote_due(huey::clock::now_ms(), 1000)?;
        let batch = app.storage().dequeue(&req)?;
        if batch.is_empty() {
            return Ok(n);
        }
        for d in &batch {
            app.execute(d)?;
            n += 1;
        }
    }
}

fn main() -> huey::Result<()> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = Huey::open(
        "guide",
        &format!("sqlite:{}", dir.path().join("guide.db").display()),
    )?;

    // --- Tasks and options --------------------------------------------------------------
    let resize = app
        .task("resize")
        .retries(3)
        .retry_delay(Duration::from_secs(10))
        .retry_backoff(2.0) // 10 s, 20 s, 40 s
        .timeout(Duration::from_secs(60))
        .register(|r: Resize| {
            if r.width == 0 {
                return Err(format!("{}: width must be positive", r.path));
            }
            Ok(format!("{}@{}", r.path, r.width))
        })?;
    let cleanup = app.task("cleanup").register(|(): ()| Ok::<_, String>(()))?;

    // --- Enqueue, schedule, per-call options ---------------------------------------------
    let thumb = resize.enqueue(Resize {
        path: "a.png".into(),
        width: 128,
    })?;
    let later = resize.schedule(
        Resize {
            path: "b.png".into(),
            width: 64,
        },
        Duration::from_secs(3600),
    )?;
    let at = resize.schedule(
        Resize {
            path: "c.png".into(),
            width: 32,
        },
        SystemTime::now() + Duration::from_secs(7200),
    )?;
    let urgent = resize
        .call(Resize {
            path: "d.png".into(),
            width: 16,
        })
        .priority(10)
        .expires(Duration::from_secs(300))
        .retries(0)
        .enqueue()?;
    let many = resize.enqueue_many((1..=3).map(|i| Resize {
        path: format!("{i}.png"),
        width: i,
    }))?;
    cleanup.enqueue(())?;

    // --- Results ---------------------------------------------------------------------------
    assert_eq!(thumb.get()?, None, "nothing before a consumer ran it");
    run_ready(&app)?;
    assert_eq!(thumb.get()?.as_deref(), Some("a.png@128"));
    assert_eq!(
        thumb.get()?.as_deref(),
        Some("a.png@128"),
        "the handle keeps what it read"
    );
    assert_eq!(urgent.wait(Duration::from_secs(1))?, "d.png@16");
    for (h, i) in many.iter().zip(1..) {
        assert_eq!(h.get()?, Some(format!("{i}.png@{i}")));
    }
    match later.wait(Duration::from_millis(50)) {
        Err(Error::Timeout(_)) => {} // scheduled an hour ahead
        other => panic!("{other:?}"),
    }

    // A failure, for good: a typed error with the message, the attempt and the id.
    let bad = resize
        .call(Resize {
            path: "e.png".into(),
            width: 0,
        })
        .retries(0)
        .enqueue()?;
    run_ready(&app)?;
    match bad.get() {
        Err(Error::Task(e)) => {
            assert_eq!((e.kind, e.attempt), (FailureKind::Error, 1));
            assert_eq!(e.message, "e.png: width must be positive");
        }
        other => panic!("{other:?}"),
    }

    // --- Task ids and unique tasks ------------------------------------------------------------
    let invoice = resize
        .call(Resize {
            path: "invoice-42.png".into(),
            width: 300,
        })
        .id("invoice-42")
        .unique()
        .enqueue()?;
    assert!(!invoice.is_duplicate());
    let again = resize
        .call(Resize {
            path: "invoice-42.png".into(),
            width: 300,
        })
        .id("invoice-42")
        .unique()
        .enqueue()?;
    assert!(again.is_duplicate()); // still queued: nothing written
    run_ready(&app)?;
    let by_id = app.result::<String>("invoice-42");
    assert_eq!(by_id.get()?.as_deref(), Some("invoice-42.png@300"));
    // Finished: the id can be enqueued again.
    let resent = resize
        .call(Resize {
            path: "invoice-42.png".into(),
            width: 300,
        })
        .id("invoice-42")
        .unique()
        .enqueue()?;
    assert!(!resent.is_duplicate());
    run_ready(&app)?;

    // --- Revoke, restore, reschedule --------------------------------------------------------
    at.revoke()?;
    assert!(at.is_revoked()?);
    resize.revoke_with(Revoke::until(SystemTime::now() + Duration::from_secs(60)))?;
    resize.restore()?;
    let moved = later.reschedule(Duration::ZERO)?; // the original is revoked once
    run_ready(&app)?;
    assert_eq!(moved.get()?.as_deref(), Some("b.png@64"));

    // --- Task control: the context, Cancel and Retry -----------------------------------------
    let fetch =
        app.task("fetch")
            .retries(1)
            .register_with_context(|url: String, ctx: &TaskContext| {
                if url.is_empty() {
                    return Err(Control::Cancel("no URL".into())); // no retry
                }
                if ctx.attempt() == 1 {
                    // Run again in a moment without using up the retry.
                    return Err(Control::Retry {
                        delay: Duration::ZERO,
                        reason: "busy".into(),
                    });
                }
                Ok(format!("{url} on attempt {}", ctx.attempt()))
            })?;
    let ok = fetch.enqueue("https://example.com".into())?;
    let canceled = fetch.enqueue(String::new())?;
    run_ready(&app)?;
    assert_eq!(
        ok.get()?.as_deref(),
        Some("https://example.com on attempt 2")
    );
    assert!(matches!(canceled.get(), Err(Error::Task(e)) if e.kind == FailureKind::Canceled));

    // --- Periodic tasks ---------------------------------------------------------------------
    app.task("report")
        .periodic(Crontab::parse("0 9 * * 1-5")?) // 09:00 UTC on weekdays
        .register(|(): ()| Ok::<_, String>(()))?;
    app.task("tick")
        .periodic(Crontab::parse_in_zone("*/30 * * * * *", "Europe/Paris")?) // seconds field
        .register(|(): ()| Ok::<_, String>(()))?;

    app.task("weekly")
        .periodic(Crontab::parse("0 9 * * MON-FRI")?) // names, 7 = Sunday, @daily, L, W, #
        .register(|(): ()| Ok::<_, String>(()))?;

    // --- Progress -----------------------------------------------------------------------------
    let import =
        app.task("import")
            .register_with_context(|rows: Vec<String>, ctx: &TaskContext| {
                for (i, _row) in rows.iter().enumerate() {
                    ctx.progress(i as u64 + 1, rows.len() as u64, "importing")?;
                }
                Ok::<_, huey::Error>(rows.len())
            })?;
    let handle = import.enqueue(vec!["a".into(), "b".into(), "c".into()])?;
    run_ready(&app)?;
    let p = handle.progress()?.expect("a progress report");
    println!("{}/{} {} ({:?})", p.done, p.total, p.message, p.fraction());
    assert_eq!((p.done, p.total), (3, 3));

    // --- Immediate mode, for an app's own tests -----------------------------------------------
    app.set_immediate(true);
    assert_eq!(
        resize
            .enqueue(Resize {
                path: "t.png".into(),
                width: 1
            })?
            .get()?
            .as_deref(),
        Some("t.png@1")
    );
    app.set_immediate(false);
    println!("guide examples ran");
    Ok(())
}
