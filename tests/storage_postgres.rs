//! The storage cases against a private PostgreSQL server (started once for this test binary;
//! each case gets a schema of its own), plus what only Postgres shows.
#[macro_use]
mod common;

use std::sync::Arc;

use common::pg_server::PgServer;
use huey::storage::{self, Storage};

/// The storage cases, against Postgres.
#[path = "common/cases/mod.rs"]
mod cases;

use common::pg_server::{fresh_schema, shared as server};

fn url_in(schema: &str) -> String {
    format!("{}?schema={schema}", server().url())
}

/// New connections on one fresh schema.
fn factory() -> impl Fn() -> Arc<dyn Storage> {
    let url = url_in(&fresh_schema());
    move || storage::open(&url, "test").expect("open the test postgres")
}

use std::thread;
use std::time::{Duration, Instant};

use common::suite::{ack, enqueue, names, ready, request, waiting, LONG_LEASE};
use huey::{Error, Huey, Task};

fn open(url: &str) -> Arc<dyn Storage> {
    storage::open(url, "test").expect("open the test postgres")
}

/// A plain client on the test server, as an application holds one.
fn app_client() -> postgres::Client {
    postgres::Client::connect(&server().url(), postgres::NoTls).unwrap()
}

fn url_error(url: &str) -> String {
    match storage::open(url, "t") {
        Ok(_) => panic!("{url} should not open"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn opens_through_a_unix_socket_and_keeps_schemas_apart() {
    let schema = fresh_schema();
    let tcp = open(&url_in(&schema));
    let unix = open(&format!("{}&schema={schema}", server().unix_url()));
    let other = open(&url_in(&fresh_schema()));
    assert_eq!(unix.backend(), "postgres");
    enqueue(&*tcp, vec![ready("a", "default", 0)]);
    assert_eq!(unix.counts().unwrap().ready, 1, "one schema, two ways in");
    assert_eq!(
        other.counts().unwrap().ready,
        0,
        "another schema sees nothing"
    );
    let n: i64 = app_client()
        .query_one(&format!("SELECT COUNT(*) FROM {schema}.queue"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the rows are in the schema the URL names");
}

#[test]
fn bad_urls_and_unreachable_servers_are_clear_errors() {
    let base = server().url();
    for (url, needle) in [
        (format!("{base}?schema=Bad-Name"), "schema="),
        (
            format!("{base}?sslmode=require&sslrootcert=/nonexistent/ca.pem"),
            "sslrootcert=/nonexistent/ca.pem",
        ),
        (
            "postgres://huey@127.0.0.1:notaport/x".to_string(),
            "invalid",
        ),
    ] {
        let e = url_error(&url);
        assert!(e.contains(needle), "{url}: {e}");
    }
    // Nobody listens on this port (a fresh one, never 5432).
    let port = common::redis_server::free_port();
    let e = url_error(&format!(
        "postgres://huey@127.0.0.1:{port}/postgres?connect_timeout=2"
    ));
    assert!(e.contains("postgres 127.0.0.1/postgres"), "{e}");
}

#[test]
fn a_schema_newer_than_this_build_is_a_clear_error_and_left_alone() {
    let schema = fresh_schema();
    let s = open(&url_in(&schema));
    enqueue(&*s, vec![ready("kept", "default", 0)]);
    let mut c = app_client();
    c.execute(
        &format!("UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'"),
        &[],
    )
    .unwrap();
    let e = url_error(&url_in(&schema));
    assert!(e.contains("version 99"), "{e}");
    assert!(e.contains("reads version 1"), "{e}");
    let n: i64 = c
        .query_one(&format!("SELECT COUNT(*) FROM {schema}.queue"), &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing was dropped or migrated");
}

fn add_task(app: &Huey) -> Task<(i64, i64), i64> {
    app.task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
        .unwrap()
}

#[test]
fn enqueue_in_a_rolled_back_transaction_leaves_no_task() {
    let url = url_in(&fresh_schema());
    let app = Huey::open("t", url.as_str()).unwrap();
    let add = add_task(&app);
    let mut c = app_client();
    let mut tx = c.transaction().unwrap();
    add.enqueue_in(&mut tx, (1, 2)).unwrap();
    add.enqueue_many_in(&mut tx, [(3, 4), (5, 6)]).unwrap();
    add.call((7, 8))
        .delay(Duration::from_secs(60))
        .enqueue_in(&mut tx)
        .unwrap();
    // Unique calls are refused here (their claim is taken by enqueue()), with a clear error.
    let e = add
        .call((9, 9))
        .id("u")
        .unique()
        .enqueue_in(&mut tx)
        .unwrap_err();
    assert!(e.to_string().contains("unique"), "{e}");
    assert_eq!(
        app.storage().counts().unwrap().ready,
        0,
        "invisible before the commit"
    );
    tx.rollback().unwrap();
    let counts = app.storage().counts().unwrap();
    assert_eq!((counts.ready, counts.scheduled), (0, 0));
}

#[test]
fn enqueue_in_a_committed_transaction_wakes_a_waiting_consumer_at_once() {
    let url = url_in(&fresh_schema());
    let app = Huey::open("t", url.as_str()).unwrap();
    let add = add_task(&app);
    let consumer = open(&url);
    let waiter = thread::spawn(move || {
        let got = consumer
            .dequeue(&waiting(
                request("c", &["default"], 10, LONG_LEASE),
                Duration::from_secs(30),
            ))
            .unwrap();
        (got.len(), Instant::now())
    });
    thread::sleep(Duration::from_millis(300)); // let it block (not a synchronisation)
    let mut c = app_client();
    let mut tx = c.transaction().unwrap();
    tx.execute("CREATE TEMP TABLE orders(id int)", &[]).unwrap();
    let handles = add.enqueue_many_in(&mut tx, [(1, 1), (2, 2)]).unwrap();
    assert_eq!(handles.len(), 2);
    tx.commit().unwrap();
    let committed = Instant::now();
    let (n, woke) = waiter.join().unwrap();
    assert!(n >= 1, "the consumer got the committed tasks");
    let lag = woke.saturating_duration_since(committed);
    println!("woken {lag:?} after the commit");
    assert!(lag < Duration::from_secs(2), "woken by NOTIFY: {lag:?}");
}

#[test]
fn enqueue_in_needs_an_app_on_postgres() {
    let app = Huey::open("t", "memory:").unwrap();
    let add = add_task(&app);
    let mut c = app_client();
    let mut tx = c.transaction().unwrap();
    let e = add.enqueue_in(&mut tx, (1, 2)).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(e.to_string().contains("postgres://"), "{e}");
}

/// Terminate every connection of the storage in `schema` (`application_name` huey/SCHEMA).
fn terminate_huey_connections(schema: &str) -> i64 {
    let mut c = app_client();
    c.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&format!("huey/{schema}")],
    )
    .unwrap()
    .len() as i64
}

#[test]
fn terminated_connections_are_replaced_and_the_listener_comes_back() {
    let schema = fresh_schema();
    let url = url_in(&schema);
    let s = open(&url);
    enqueue(&*s, vec![ready("before", "default", 0)]);
    assert!(terminate_huey_connections(&schema) >= 1);
    // The pooled connections are gone: the next calls open new ones, nothing lost.
    let ds = s
        .dequeue(&request("c", &["default"], 5, LONG_LEASE))
        .unwrap();
    assert_eq!(names(&ds), ["before"]);
    assert_eq!(ack(&*s, ds.into_iter().map(|d| d.lease).collect()), 1);
    // Again and again: the server's goodbye may be read as the answer to the next statement
    // before the connection is seen closed, and that statement still runs again elsewhere.
    for round in 0..20 {
        enqueue(&*s, vec![ready(&format!("r{round}"), "default", 0)]);
        terminate_huey_connections(&schema);
        let ds = s
            .dequeue(&request("c", &["default"], 5, LONG_LEASE))
            .unwrap();
        assert_eq!(names(&ds), [format!("r{round}")]);
        assert_eq!(ack(&*s, ds.into_iter().map(|d| d.lease).collect()), 1);
        terminate_huey_connections(&schema);
        assert_eq!(s.counts().unwrap().ready, 0);
    }
    // A blocked dequeue is still woken by another handle's enqueue after the listener died.
    terminate_huey_connections(&schema);
    let other = open(&url);
    let s2 = s.clone();
    let waiter = thread::spawn(move || {
        s2.dequeue(&waiting(
            request("c", &["default"], 5, LONG_LEASE),
            Duration::from_secs(30),
        ))
        .unwrap()
    });
    thread::sleep(Duration::from_millis(300));
    enqueue(&*other, vec![ready("after", "default", 0)]);
    assert_eq!(names(&waiter.join().unwrap()), ["after"]);
}

/// A pooled connection the server ended while it sat idle is found closed before a producer's
/// one-statement enqueue goes out on it (one idle for 100 ms or more is checked first): the
/// enqueue runs on a new connection and succeeds.
#[test]
fn an_enqueue_after_its_pooled_connection_was_terminated_goes_through() {
    let schema = fresh_schema();
    let s = open(&url_in(&schema));
    enqueue(&*s, vec![ready("first", "default", 0)]);
    let idle_since = Instant::now();
    assert!(terminate_huey_connections(&schema) >= 1);
    let mut c = app_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("huey/{schema}")],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(Instant::now() < deadline, "the sessions did not end");
        thread::sleep(Duration::from_millis(10));
    }
    // Idle past the pool's check (the sessions ending took some of it).
    thread::sleep(Duration::from_millis(150).saturating_sub(idle_since.elapsed()));
    enqueue(&*s, vec![ready("second", "default", 0)]);
    assert_eq!(s.counts().unwrap().ready, 2);
}

/// A producer's enqueue whose session is ended while its commit waits for a synchronous
/// standby (kept on the primary: the server warns that it committed locally, then closes the
/// connection without a FATAL message) is an error, and not sent again: sent again, it would
/// be enqueued twice. Its own server, set to wait for a standby that never comes.
#[test]
fn an_enqueue_cut_off_after_its_commit_is_an_error_and_not_written_twice() {
    let own = PgServer::start();
    let url = format!("{}?schema=syncrep", own.url());
    let s = open(&url);
    // A pooled connection, which takes the setting before its next statement.
    assert_eq!(s.counts().unwrap().ready, 0);
    own.psql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
    own.psql("SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while own.psql("SHOW synchronous_standby_names") != "nobody" {
        assert!(Instant::now() < deadline, "the setting was not loaded");
        thread::sleep(Duration::from_millis(20));
    }
    let producer = s.clone();
    let enqueued = thread::spawn(move || {
        producer.apply(&huey::storage::Batch {
            enqueue: vec![ready("once", "default", 0)],
            ..Default::default()
        })
    });
    let waiting = "SELECT pid FROM pg_stat_activity \
                   WHERE application_name = 'huey/syncrep' AND wait_event = 'SyncRep'";
    let pid = loop {
        let pid = own.psql(waiting);
        if !pid.is_empty() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the commit did not wait for the standby"
        );
        thread::sleep(Duration::from_millis(20));
    };
    own.psql(&format!("SELECT pg_terminate_backend({pid})"));
    // Commits no longer wait: one sent again would be written now.
    own.psql("ALTER SYSTEM RESET synchronous_standby_names");
    own.psql("SELECT pg_reload_conf()");
    let outcome = enqueued.join().unwrap();
    let e = outcome.expect_err("the session ended under the statement");
    assert!(e.to_string().contains("syncrep"), "names the schema: {e}");
    assert_eq!(
        own.psql("SELECT COUNT(*) FROM syncrep.queue"),
        "1",
        "committed once, never twice"
    );
}

/// A consumer drains while the server is stopped and started again under it (its own server:
/// the others of this binary share one): calls fail while it is down, then work again, and
/// every message is delivered and the queue ends empty; none is lost. An ack that meets the
/// restart is an error, but may have committed (its answer lost with the session): such a
/// message is not delivered again, so the drain ends when the queue is empty, not when every
/// ack returned true.
#[test]
fn a_server_restart_mid_drain_loses_nothing() {
    const N: usize = 300;
    let mut own = PgServer::start();
    let url = format!("{}?schema=restart", own.url());
    let s = open(&url);
    enqueue(
        &*s,
        (0..N)
            .map(|i| ready(&format!("m{i}"), "default", 0))
            .collect(),
    );
    let consumer = s.clone();
    let drain = thread::spawn(move || {
        let mut delivered = std::collections::HashSet::new();
        let mut errors = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        let empty = |s: &dyn Storage| {
            s.counts()
                .is_ok_and(|c| c.ready == 0 && c.in_flight == 0 && c.scheduled == 0)
        };
        while (delivered.len() < N || !empty(&*consumer)) && Instant::now() < deadline {
            let mut req = request("c", &["default"], 4, Duration::from_secs(2));
            req.wait = Duration::from_millis(200);
            let ds = match consumer.dequeue(&req) {
                Ok(ds) => ds,
                Err(_) => {
                    errors += 1;
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            for d in ds {
                // An ack that failed before it committed leaves the lease to expire: delivered
                // again. One that committed, its answer lost, leaves nothing to deliver.
                let _ = consumer.apply(&huey::storage::Batch::ack(d.lease.clone()));
                delivered.insert(String::from_utf8(d.payload).unwrap());
                thread::sleep(Duration::from_millis(2));
            }
        }
        (delivered.len(), errors)
    });
    let wait_until = Instant::now() + Duration::from_secs(30);
    while s.counts().unwrap().ready as usize > N * 2 / 3 {
        assert!(Instant::now() < wait_until, "the drain did not start");
        thread::sleep(Duration::from_millis(10));
    }
    own.restart();
    let (delivered, errors) = drain.join().unwrap();
    println!("{errors} calls failed while the server was down");
    assert_eq!(delivered, N, "every message delivered");
    let counts = s.counts().unwrap();
    assert_eq!((counts.ready, counts.in_flight), (0, 0));
}

/// A measurement, not a check (run by hand): enqueue and drain `HUEY_PG_TASKS` tasks (50,000 by
/// default) through one handle in batches, and print the rates and the queue table's size
/// after the drain, before and after a plain `VACUUM`.
///
/// `cargo test --test storage_postgres measure_table_size -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run by hand"]
fn measure_table_size_after_many_tasks() {
    let n: usize = std::env::var("HUEY_PG_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let schema = fresh_schema();
    let s = open(&url_in(&schema));
    let mut c = app_client();
    for round in 1..=3 {
        let (enqueued, drained) = enqueue_and_drain(&*s, n);
        let size = |c: &mut postgres::Client| -> i64 {
            c.query_one(
                &format!("SELECT pg_total_relation_size('{schema}.queue')"),
                &[],
            )
            .unwrap()
            .get(0)
        };
        let after = size(&mut c);
        c.batch_execute(&format!("VACUUM {schema}.queue")).unwrap();
        let vacuumed = size(&mut c);
        println!(
            "round {round}, {n} tasks: enqueue {:.0}/s (batches of 1000), drain {:.0}/s (100 per \
             dequeue, acks in one apply_all); queue table {} KiB after the drain, {} KiB after \
             VACUUM",
            n as f64 / enqueued.as_secs_f64(),
            n as f64 / drained.as_secs_f64(),
            after / 1024,
            vacuumed / 1024
        );
    }
}

/// Enqueue `n` tasks in batches of 1,000, then drain them; how long each took.
fn enqueue_and_drain(s: &dyn Storage, n: usize) -> (Duration, Duration) {
    let payload = vec![7u8; 200];
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let items = chunk
            .iter()
            .map(|i| huey::storage::Ready {
                id: format!("task-{i}"),
                queue: "default".into(),
                priority: 0,
                payload: payload.clone(),
            })
            .collect();
        enqueue(s, items);
    }
    let enqueued = started.elapsed();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let ds = s
            .dequeue(&request("m", &["default"], 100, LONG_LEASE))
            .unwrap();
        done += ack(s, ds.into_iter().map(|d| d.lease).collect());
    }
    (enqueued, started.elapsed())
}

/// A server that refuses writes (as a standby given by mistake does) and a statement timeout
/// are clear errors; what was stored before is untouched.
#[test]
fn read_only_server_and_statement_timeouts_are_clear_errors() {
    let schema = fresh_schema();
    let s = open(&url_in(&schema));
    enqueue(&*s, vec![ready("kept", "default", 0)]);
    let read_only = open(&format!(
        "{}&options=-c%20default_transaction_read_only%3Don",
        url_in(&schema)
    ));
    let batch = huey::storage::Batch {
        enqueue: vec![ready("refused", "default", 0)],
        ..Default::default()
    };
    let e = read_only.apply(&batch).unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert!(e.contains("standby"), "{e}");
    assert!(e.contains(&schema), "the error names the schema: {e}");
    assert_eq!(read_only.counts().unwrap().ready, 1, "reads still work");
    let e = url_error(&format!(
        "{}&options=-c%20default_transaction_read_only%3Don",
        url_in(&fresh_schema())
    ));
    assert!(
        e.contains("read-only"),
        "a schema cannot be created there: {e}"
    );

    // Hold a row lock so the next write waits past a 200 ms statement timeout.
    let timed = open(&format!(
        "{}&options=-c%20statement_timeout%3D200",
        url_in(&schema)
    ));
    let ds = s
        .dequeue(&request("c", &["default"], 1, LONG_LEASE))
        .unwrap();
    let mut c = app_client();
    let mut tx = c.transaction().unwrap();
    tx.execute(&format!("LOCK TABLE {schema}.queue IN EXCLUSIVE MODE"), &[])
        .unwrap();
    let e = timed
        .apply(&huey::storage::Batch::ack(ds[0].lease.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("57014"), "{e}");
    tx.rollback().unwrap();
    assert!(
        timed
            .apply(&huey::storage::Batch::ack(ds[0].lease.clone()))
            .unwrap(),
        "the retried ack went through: nothing was lost"
    );
    assert_eq!(s.counts().unwrap().in_flight, 0);
}

#[test]
fn a_message_over_the_size_limit_is_refused_in_a_transaction_and_outside_it() {
    let url = url_in(&fresh_schema());
    let app = Huey::open("t", url.as_str()).unwrap();
    let echo = app
        .task("echo")
        .register(|s: String| Ok::<_, String>(s))
        .unwrap();
    app.set_max_message_bytes(1024);
    let big = "x".repeat(4096);
    let e = echo.enqueue(big.clone()).unwrap_err().to_string();
    assert!(e.contains("over the limit of 1024 bytes"), "{e}");
    let mut c = app_client();
    let mut tx = c.transaction().unwrap();
    let e = echo.enqueue_in(&mut tx, big).unwrap_err().to_string();
    assert!(e.contains("over the limit of 1024 bytes"), "{e}");
    echo.enqueue_in(&mut tx, "small".into()).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        app.storage().counts().unwrap().ready,
        1,
        "only the small one"
    );
}

/// Run `hueyd ARGS...` with `env`; its exit code and stderr.
fn hueyd(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hueyd"))
        .args(args)
        .env_remove("HUEY_STORAGE")
        .env_remove("HUEY_PG_SCHEMA")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn rows_in(schema: &str) -> Option<i64> {
    let mut c = app_client();
    let exists = c
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 \
             AND table_name = 'queue'",
            &[&schema],
        )
        .unwrap()
        .is_some();
    exists.then(|| {
        c.query_one(&format!("SELECT COUNT(*) FROM {schema}.queue"), &[])
            .unwrap()
            .get(0)
    })
}

#[test]
fn pg_schema_flag_and_env_override_the_urls_schema() {
    let (in_url, flag, env) = (fresh_schema(), fresh_schema(), fresh_schema());
    let url = url_in(&in_url);
    let (code, err) = hueyd(
        &[
            "--storage",
            &url,
            "--pg-schema",
            &flag,
            "enqueue",
            "add",
            "[2, 3]",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (code, err) = hueyd(
        &["enqueue", "add", "[4, 5]"],
        &[("HUEY_STORAGE", &url), ("HUEY_PG_SCHEMA", &env)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(rows_in(&flag), Some(1), "--pg-schema picks the schema");
    assert_eq!(rows_in(&env), Some(1), "HUEY_PG_SCHEMA picks the schema");
    assert_eq!(rows_in(&in_url), None, "the URL's schema was never created");

    // A newer schema than this build knows: a clear error, and nothing changed.
    app_client()
        .execute(
            &format!("UPDATE {flag}.meta SET value = '99' WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap();
    let (code, err) = hueyd(&["--storage", &url, "--pg-schema", &flag, "status"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("version 99") && err.contains(&flag), "{err}");
    assert_eq!(rows_in(&flag), Some(1));

    // Bad input: exit 2 with the reason.
    let (code, err) = hueyd(
        &["--storage", &url, "--pg-schema", "Bad-Name", "status"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--pg-schema"), "{err}");
    let (code, err) = hueyd(
        &["--storage", "memory:", "--pg-schema", &flag, "status"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a postgres:// URL"), "{err}");
}

/// Run `f` with an async client on the test server, as an async application holds one.
fn with_async_client<T>(f: impl AsyncFnOnce(&mut tokio_postgres::Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&server().url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        f(&mut client).await
    })
}

#[test]
fn enqueue_in_async_in_a_rolled_back_transaction_leaves_no_task() {
    let url = url_in(&fresh_schema());
    let app = Huey::open("t", url.as_str()).unwrap();
    let add = add_task(&app);
    with_async_client(async |c| {
        let tx = c.transaction().await.unwrap();
        add.enqueue_in_async(&tx, (1, 2)).await.unwrap();
        let many = add.enqueue_many_in_async(&tx, [(3, 4), (5, 6)]).await;
        assert_eq!(many.unwrap().len(), 2);
        add.call((7, 8))
            .delay(Duration::from_secs(60))
            .enqueue_in_async(&tx)
            .await
            .unwrap();
        // The sync storage blocks: off the runtime's thread.
        let storage = app.storage();
        let counts = tokio::task::spawn_blocking(move || storage.counts().unwrap());
        assert_eq!(
            counts.await.unwrap().ready,
            0,
            "invisible before the commit"
        );
        tx.rollback().await.unwrap();
    });
    let counts = app.storage().counts().unwrap();
    assert_eq!((counts.ready, counts.scheduled), (0, 0));
}

#[test]
fn enqueue_in_async_commits_with_the_application_and_a_running_consumer_runs_it() {
    let url = url_in(&fresh_schema());
    let app = Huey::open("t", url.as_str()).unwrap();
    let add = add_task(&app);
    let _consumer = common::hueyd::Hueyd::start(&url, &["-k", "thread", "-w", "2"]);
    let handles = with_async_client(async |c| {
        let tx = c.transaction().await.unwrap();
        tx.execute("CREATE TEMP TABLE orders(id int)", &[])
            .await
            .unwrap();
        let one = add.enqueue_in_async(&tx, (1, 1)).await.unwrap();
        let mut handles = add
            .enqueue_many_in_async(&tx, [(2, 2), (3, 3)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        handles.insert(0, one);
        handles
    });
    for (i, h) in handles.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(h.wait(Duration::from_secs(60)).unwrap(), 2 * n);
    }
    let e = with_async_client(async |c| {
        let memory = Huey::open("m", "memory:").unwrap();
        let tx = c.transaction().await.unwrap();
        add_task(&memory).enqueue_in_async(&tx, (1, 2)).await
    });
    assert!(matches!(e, Err(Error::Config(_))), "{e:?}");
}

#[test]
fn sslmode_disable_and_both_unix_socket_forms_connect() {
    let schema = fresh_schema();
    let s = open(&format!("{}&schema={schema}", server().unix_url()));
    enqueue(&*s, vec![ready("a", "default", 0)]);
    let dir = server().unix_url();
    let dir = dir
        .split("host=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let encoded = dir.replace('/', "%2F");
    let port = server().port();
    for url in [
        format!("{}?sslmode=disable&schema={schema}", server().url()),
        format!("postgresql://huey@{encoded}:{port}/postgres?schema={schema}"),
        format!("postgres:///postgres?host={dir}&port={port}&user=huey&schema={schema}"),
    ] {
        assert_eq!(open(&url).counts().unwrap().ready, 1, "{url}");
    }
}

#[test]
fn sslmode_require_without_tls_on_the_server_is_a_clear_error() {
    let e = url_error(&format!("{}?sslmode=require", server().url()));
    assert!(e.contains("postgres 127.0.0.1/postgres"), "{e}");
    assert!(e.contains("TLS"), "{e}");
}

#[test]
fn sslmode_require_connects_with_tls_and_checks_the_certificate() {
    let tls_server = PgServer::start();
    let ca = tls_server.enable_tls();
    let base = format!("{}?schema={}", tls_server.url(), fresh_schema());
    // Not trusted without the test CA.
    let e = url_error(&format!("{base}&sslmode=require"));
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    let mut open_now = Vec::new();
    for mode in ["require", "verify-full"] {
        let url = format!("{base}&sslmode={mode}&sslrootcert={}", ca.display());
        let s = open(&url);
        enqueue(&*s, vec![ready(mode, "default", 0)]);
        open_now.push(s);
    }
    let used_tls = tls_server.psql(
        "SELECT count(*), bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name LIKE 'huey/%'",
    );
    let (n, all) = used_tls.split_once('|').unwrap();
    assert!(n.parse::<u32>().unwrap() >= 2, "{used_tls}");
    assert_eq!(all, "t", "every huey connection is encrypted");
    let s = open(&format!("{base}&sslmode=disable"));
    assert_eq!(s.counts().unwrap().ready, 2);
}

/// Outcomes written together (acknowledgements with their results, as a consumer sends them):
/// each acknowledged batch stores its result, a batch whose lease is gone stores nothing, and
/// when two batches store one id the later one wins, as when written one by one.
#[test]
fn outcomes_written_together_store_results_only_for_held_leases() {
    use huey::storage::{Batch, ResultPut};
    let url = url_in(&fresh_schema());
    let s = open(&url);
    enqueue(
        &*s,
        (0..4)
            .map(|i| ready(&format!("o{i}"), "default", 0))
            .collect(),
    );
    let ds = s
        .dequeue(&request("m", &["default"], 4, LONG_LEASE))
        .unwrap();
    assert_eq!(ds.len(), 4);
    let put = |id: &str, v: &str| ResultPut {
        id: id.into(),
        value: v.as_bytes().to_vec(),
        ttl: None,
    };
    // The third task's row is gone (acknowledged elsewhere) before this outcome is written.
    assert_eq!(ack(&*open(&url), vec![ds[2].lease.clone()]), 1);
    let batch = |i: usize, results: Vec<ResultPut>| Batch {
        results,
        ..Batch::ack(ds[i].lease.clone())
    };
    let written = s
        .apply_all(&[
            batch(0, vec![put("r0", "a")]),
            batch(1, vec![put("same", "first"), put("r1", "b")]),
            batch(2, vec![put("stale", "x")]),
            batch(3, vec![put("same", "second")]),
        ])
        .unwrap();
    assert_eq!(written, vec![true, true, false, true]);
    assert_eq!(s.result("r0", false).unwrap(), Some(b"a".to_vec()));
    assert_eq!(s.result("r1", false).unwrap(), Some(b"b".to_vec()));
    assert_eq!(s.result("same", false).unwrap(), Some(b"second".to_vec()));
    assert_eq!(s.result("stale", false).unwrap(), None);
    let counts = s.counts().unwrap();
    assert_eq!((counts.ready, counts.in_flight), (0, 0));
}

/// The notifications up to a marker sent now on the same channel (notifications arrive in
/// commit order, so those of writes committed before it arrive before it).
fn notified_before_marker(listener: &mut postgres::Client, channel: &str) -> usize {
    use postgres::fallible_iterator::FallibleIterator;
    app_client()
        .execute(&format!("NOTIFY {channel}, 'marker'"), &[])
        .unwrap();
    let mut seen = 0;
    let mut notifications = listener.notifications();
    let mut it = notifications.timeout_iter(Duration::from_secs(30));
    loop {
        let n = it.next().unwrap().expect("the marker in time");
        if n.payload() == "marker" {
            return seen;
        }
        seen += 1;
    }
}

/// An outcome that stores a result wakes waiters (one notification on the schema's channel);
/// one that stores none, or whose lease was lost (its result not stored), sends none.
#[test]
fn an_outcome_notifies_only_when_it_stores_a_result() {
    use huey::storage::{Batch, ResultPut};
    let schema = fresh_schema();
    let s = open(&url_in(&schema));
    let channel = format!("huey_{schema}");
    enqueue(
        &*s,
        (0..3)
            .map(|i| ready(&format!("n{i}"), "default", 0))
            .collect(),
    );
    let ds = s
        .dequeue(&request("m", &["default"], 3, LONG_LEASE))
        .unwrap();
    assert_eq!(ds.len(), 3);
    let mut listener = app_client();
    listener.execute(&format!("LISTEN {channel}"), &[]).unwrap();
    assert_eq!(notified_before_marker(&mut listener, &channel), 0);
    assert!(s.apply(&Batch::ack(ds[0].lease.clone())).unwrap());
    assert_eq!(
        notified_before_marker(&mut listener, &channel),
        0,
        "an acknowledgement without a result wakes nobody"
    );
    let with_result = |i: usize| Batch {
        results: vec![ResultPut {
            id: format!("r{i}"),
            value: b"v".to_vec(),
            ttl: None,
        }],
        ..Batch::ack(ds[i].lease.clone())
    };
    assert_eq!(ack(&*open(&url_in(&schema)), vec![ds[1].lease.clone()]), 1);
    assert!(!s.apply(&with_result(1)).unwrap(), "its lease is gone");
    assert_eq!(
        notified_before_marker(&mut listener, &channel),
        0,
        "a result not stored wakes nobody"
    );
    assert!(s.apply(&with_result(2)).unwrap());
    assert_eq!(
        notified_before_marker(&mut listener, &channel),
        1,
        "a stored result wakes the waiters"
    );
    assert_eq!(s.result("r2", false).unwrap(), Some(b"v".to_vec()));
}
