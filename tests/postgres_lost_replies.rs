//! One-statement writes on Postgres whose reply is lost with their session: the statement ran
//! and committed, the server sent its answer, then ended the session (`pg_terminate_backend`)
//! before the client read that answer. The client reads the answer and the server's goodbye
//! together and is told only of the goodbye, so it cannot know that the statement ran: sent
//! again, an enqueue would be written twice. Such a write is an error, and is not sent again.
//! A take is made of statements that are safe to send again (a read, then the delete of the
//! row version read), so it returns the result.
//!
//! The client is a `hueyd` subcommand, stopped (SIGSTOP) while its statement waits for a lock
//! the test holds; the lock is let go, the statement commits, its session is ended, and only
//! then is the client let go on (SIGCONT).
#[macro_use]
mod common;

use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::pg_server::{fresh_schema, shared as server};
use common::suite::put_result;
use huey::storage;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn app_client() -> postgres::Client {
    postgres::Client::connect(&server().url(), postgres::NoTls).unwrap()
}

/// Wait (up to 30 s) until `sql`, a query of one value, answers something, and return it.
fn wait_for(c: &mut postgres::Client, sql: &str, what: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(row) = c.query_opt(sql, &[]).unwrap() {
            return row.get(0);
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = c
                .query("SELECT format('%s %s %s %s', application_name, state, wait_event_type, left(query, 50)) FROM pg_stat_activity", &[])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            panic!("timed out waiting: {what}; sessions {seen:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn hueyd(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hueyd"))
        .args(args)
        .env_remove("HUEY_STORAGE")
        .env_remove("HUEY_PG_SCHEMA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Run `client` (a `hueyd` subcommand on `schema`) while `table` is locked so that its write
/// waits; stop it, let the write commit, end its session, let it go on. Returns its exit code,
/// stdout and stderr.
fn cut_off_after_commit(
    schema: &str,
    table: &str,
    client: impl FnOnce() -> Child,
) -> (i32, String, String) {
    let mut c = app_client();
    let mut locker = app_client();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute(&format!("LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE"))
        .unwrap();
    let client = client();
    let app = format!("huey/{schema}");
    let pid = wait_for(
        &mut c,
        &format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{app}' \
             AND wait_event_type = 'Lock'"
        ),
        "the write waits for the lock",
    );
    let child = Pid::from_raw(client.id() as i32);
    kill(child, Signal::SIGSTOP).unwrap();
    tx.commit().unwrap();
    wait_for(
        &mut c,
        &format!("SELECT pid FROM pg_stat_activity WHERE pid = {pid} AND state = 'idle'"),
        "the write committed and its answer was sent",
    );
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_for(
        &mut c,
        &format!("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {pid})"),
        "the session ended",
    );
    kill(child, Signal::SIGCONT).unwrap();
    let out = client.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn url_in(schema: &str) -> String {
    format!("{}?schema={schema}", server().url())
}

#[test]
fn an_enqueue_whose_answer_is_lost_with_its_session_is_an_error_and_written_once() {
    let schema = fresh_schema();
    let url = url_in(&schema);
    let s = storage::open(&url, "test").unwrap();
    let client = || hueyd(&["--storage", &url, "enqueue", "add", "[1, 2]"]);
    let (code, out, err) = cut_off_after_commit(&schema, "queue", client);
    assert_eq!(
        s.counts().unwrap().ready,
        1,
        "enqueued once, never twice (exit {code}, {out}{err})"
    );
    assert_ne!(
        code, 0,
        "the enqueue cannot be known to have gone through: {out}"
    );
    assert!(err.contains(&schema), "the error names the storage: {err}");
}

/// Run by the take test in a process of its own (this test binary, started again): take the
/// result `r1` from the storage `HUEY_TAKE_URL` names, print what came back and exit 0 for a
/// value, 3 for none, 1 for an error. Without that variable it does nothing.
#[test]
fn take_in_a_process_of_its_own() {
    let Ok(url) = std::env::var("HUEY_TAKE_URL") else {
        return;
    };
    let s = storage::open(&url, "test").unwrap();
    let code = match s.result("r1", true) {
        Ok(Some(v)) => {
            println!("taken {}", String::from_utf8_lossy(&v));
            0
        }
        Ok(None) => 3,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    };
    std::process::exit(code);
}

/// A take reads the result, then deletes the row version it read: both are safe to send
/// again, so a take whose answer was lost with its session still returns the result, once.
#[test]
fn a_take_whose_answer_is_lost_with_its_session_still_returns_the_result() {
    let schema = fresh_schema();
    let url = url_in(&schema);
    let s = storage::open(&url, "test").unwrap();
    put_result(&*s, "r1", b"3", None);
    let client = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "take_in_a_process_of_its_own", "--nocapture"])
            .env("HUEY_TAKE_URL", &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (code, out, err) = cut_off_after_commit(&schema, "results", client);
    assert_eq!(code, 0, "the result is returned: {out}{err}");
    assert!(out.contains("taken 3"), "{out}{err}");
    assert_eq!(s.result("r1", false).unwrap(), None, "and taken");
}
