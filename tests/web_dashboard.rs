//! `hueyd web` as a user runs it: the real binary on a real SQLite file (and Redis), beside a
//! real consumer. HTTP-level tests of the pages, the JSON API and the safety rules, and a
//! headless Chromium that watches the overview while a consumer drains tasks, then retries a
//! dead letter by clicking its button.

#[macro_use]
mod common;
mod web_dashboard {
    pub mod harness;
    pub mod webdriver;
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::hueyd::{exe, Backend, Hueyd};
use huey::{Huey, Task};
use serde_json::{json, Value};
use web_dashboard::harness::{http, oversized_post, Web, LONG};
use web_dashboard::webdriver::{self, Browser};

/// `hueyd web ARGS` that must fail: its exit code and stderr.
fn refused(args: &[&str]) -> (i32, String) {
    let out = Command::new(exe())
        .args(["--storage", "memory:", "web"])
        .args(args)
        .env_remove("HUEY_WEB_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bind_beyond_loopback_needs_a_token() {
    let (code, err) = refused(&["--bind", "0.0.0.0:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("without --token"), "{err}");
    let (code, err) = refused(&["--bind", "0.0.0.0:0", "--token", "short"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 16"), "{err}");
    let (code, err) = refused(&["--bind", "not an address"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid --bind"), "{err}");

    // With a token it serves every interface, and asks for the token.
    let b = Backend::sqlite();
    let mut cmd = Command::new(exe());
    cmd.args(["--storage", &b.url(), "web", "--bind", "0.0.0.0:0"])
        .env("HUEY_WEB_TOKEN", "0123456789abcdef-secret");
    let web = Web::spawn(cmd);
    assert_eq!(web.get("/api/overview").status, 401);
    let bearer = [("Authorization", "Bearer 0123456789abcdef-secret")];
    let r = http("GET", &web.url("/api/overview"), &bearer, None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_token_guards_pages_api_and_actions() {
    let b = Backend::sqlite();
    let token = "a-long-enough-token-1234";
    let web = Web::start(&b.url(), &["--token", token]);
    let r = web.get("/");
    assert_eq!(r.status, 303);
    assert_eq!(r.location.as_deref(), Some("/login?next=%2F"));
    assert_eq!(web.get("/api/overview").status, 401);
    assert_eq!(web.get("/tasks/abc").status, 303);
    let login = web.get("/login?next=/dead");
    assert_eq!(login.status, 200);
    let at = login.body.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = login.body[at..at + 64].to_string();

    // A wrong token, and the login form without its CSRF token, are refused.
    let wrong = web.form(
        "/login",
        &[],
        &[("csrf", &csrf), ("token", "nope"), ("next", "/dead")],
    );
    assert_eq!(wrong.status, 401);
    let no_csrf = web.form("/login", &[], &[("token", token), ("next", "/dead")]);
    assert_eq!(no_csrf.status, 403);

    let ok = web.form(
        "/login",
        &[],
        &[("csrf", &csrf), ("token", token), ("next", "/dead")],
    );
    assert_eq!(ok.status, 303);
    assert_eq!(ok.location.as_deref(), Some("/dead"));
    let cookie = ok.cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().unwrap().to_string();
    let r = http("GET", &web.url("/dead"), &[("Cookie", &session)], None);
    assert_eq!(r.status, 200);
    // The session still needs the CSRF token to act; a bearer header does not.
    let cookie_post = web.form(
        "/actions/revoke",
        &[("Cookie", &session)],
        &[("id", "abc"), ("next", "/")],
    );
    assert_eq!(cookie_post.status, 403);
    let bearer = format!("Bearer {token}");
    let r = http(
        "POST",
        &web.url("/api/revoke"),
        &[("Authorization", &bearer)],
        Some(("application/json", r#"{"id": "abc"}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(b.app().is_id_revoked("abc").unwrap());
}

#[test]
fn posts_need_the_csrf_token_and_this_origin() {
    let b = Backend::sqlite();
    let web = Web::start(&b.url(), &[]);
    let app = b.app();
    let csrf = web.csrf(&[]);
    let fields = |t: &str| vec![("csrf", t.to_string()), ("id", "t-1".to_string())];
    let post = |headers: &[(&str, &str)], f: Vec<(&str, String)>| {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        web.form("/actions/revoke", headers, &f)
    };
    assert_eq!(post(&[], vec![("id", "t-1".into())]).status, 403);
    assert_eq!(post(&[], fields("0".repeat(64).as_str())).status, 403);
    let evil = [("Origin", "http://evil.example")];
    assert_eq!(post(&evil, fields(&csrf)).status, 403);
    assert!(!app.is_id_revoked("t-1").unwrap());
    // A JSON POST without the header is refused too.
    let r = http(
        "POST",
        &web.url("/api/revoke"),
        &[],
        Some(("application/json", r#"{"id": "t-1"}"#)),
    );
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (403, "application/json")
    );

    let origin = web.base.clone();
    let r = post(&[("Origin", &origin)], fields(&csrf));
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(app.is_id_revoked("t-1").unwrap());
    let o = web.get_json("/api/overview");
    assert_eq!(o["revoked"][0]["target"], "t-1");

    // A page on another host name (DNS rebinding) is not answered.
    let r = http("GET", &web.url("/"), &[("Host", "evil.example")], None);
    assert_eq!(r.status, 421);
}

#[test]
fn bad_ids_and_parameters_get_4xx() {
    let b = Backend::sqlite();
    let web = Web::start(&b.url(), &[]);
    let r = web.get("/tasks/no-such-task");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("No task with this id"), "{}", r.body);
    assert_eq!(web.get("/api/tasks/no-such-task").status, 404);
    assert_eq!(web.get("/tasks/a%01b").status, 400);
    assert_eq!(web.get(&format!("/tasks/{}", "x".repeat(300))).status, 400);
    assert_eq!(web.get("/tasks?id=").status, 400);
    assert_eq!(
        web.get("/tasks?id=abc").location.as_deref(),
        Some("/tasks/abc")
    );
    for q in [
        "limit=abc",
        "limit=0",
        "limit=99999999999999999999",
        "limit=-1",
    ] {
        let r = web.get(&format!("/api/dead?{q}"));
        assert_eq!(r.status, 400, "{q}");
        assert!(r.body.contains("limit"), "{}", r.body);
    }
    assert_eq!(web.get("/api/overview?minutes=0").status, 400);
    assert_eq!(web.get("/no/such/page").status, 404);
    for (path, body) in [
        ("/api/dead/retry", json!({ "keys": ["nope"] })),
        ("/api/dead/retry", json!({ "keys": [] })),
        ("/api/dead/retry", json!({ "all": true, "keys": ["x"] })),
        ("/api/dead/retry", json!([1, 2])),
        ("/api/flush", json!({ "everything": true })),
        ("/api/flush", json!({})),
        ("/api/revoke", json!({ "task": "not-registered" })),
        ("/api/revoke", json!({})),
        ("/api/cancel", json!({ "task": "add" })),
        ("/api/revoke", json!({ "id": "a\u{7}b" })),
    ] {
        let r = web.api(path, body.clone());
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert!(r.body.starts_with("{\"error\""), "{}", r.body);
    }
    let r = http(
        "POST",
        &web.url("/api/revoke"),
        &[("X-CSRF-Token", &web.csrf(&[]))],
        Some(("application/json", "{not json")),
    );
    assert_eq!(r.status, 400);
    // A body announced at 1 GiB is refused once the limit is passed, without reading it all.
    assert_eq!(oversized_post(&web, &web.csrf(&[])), 413);
    // Still serving.
    assert_eq!(web.get("/").status, 200);
}

#[test]
fn values_from_the_queue_and_the_url_are_escaped() {
    let b = Backend::sqlite();
    let web = Web::start(&b.url(), &[]);
    let echo: Task<String, String> = Task::from_name(&b.app(), "echo").unwrap();
    let evil = "<img src=x onerror=alert(1)>";
    let t = echo.enqueue(evil.into()).unwrap();
    let page = web.get(&format!("/tasks/{}", t.id()));
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(evil), "{}", page.body);
    assert!(page.body.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let r = web.get("/tasks/%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("<script>alert"), "{}", r.body);
    assert!(r.body.contains("&lt;script&gt;alert(1)"));
    let csp = "default-src 'none'; script-src 'self'";
    let home = ureq::get(&web.url("/")).call().unwrap();
    let header = |name: &str| home.headers().get(name).and_then(|v| v.to_str().ok());
    assert!(header("content-security-policy").unwrap().starts_with(csp));
    assert_eq!(header("x-frame-options"), Some("DENY"));
}

/// An app that knows only the demo tasks: a `pid` task (a testbed task) is dead-lettered by it.
fn demo_app(b: &Backend) -> Huey {
    let app = Huey::open("hueyd", &b.url()).unwrap();
    huey::demo::register(&app).unwrap();
    app
}

#[test]
fn pages_and_actions_work_on_sqlite() {
    pages_and_actions_work(Backend::sqlite());
}

#[test]
fn pages_and_actions_work_on_redis() {
    pages_and_actions_work(Backend::redis());
}

fn pages_and_actions_work(b: Backend) {
    let app = b.app();
    let web = Web::start(&b.url(), &[]);
    let add: Task<(i64, i64), i64> = Task::from_name(&app, "add").unwrap();
    let queued = add.enqueue((20, 22)).unwrap();
    let later = add.schedule((1, 1), Duration::from_secs(3600)).unwrap();
    let o = web.get_json("/api/overview");
    assert_eq!(
        (
            o["counts"]["ready"].as_u64(),
            o["counts"]["scheduled"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let default = json!({ "name": "default", "ready": 1, "in_flight": 0, "more": false,
                          "consumers": [] });
    assert_eq!(o["queues"], json!([default]));

    // A queued task: its page shows the state and the arguments as JSON.
    let t = web.get_json(&format!("/api/tasks/{}", queued.id()));
    assert_eq!(t["state"], "queued");
    assert_eq!(t["args"], json!([20, 22]));
    let page = web.get(&format!("/tasks/{}", queued.id()));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("queued") && page.body.contains("20,"),
        "{}",
        page.body
    );

    // Scheduled: listed with its eta, and the periodic task with its next run.
    let s = web.get_json("/api/scheduled");
    assert_eq!(s["scheduled"][0]["id"], later.id());
    assert_eq!(s["periodic"][0]["name"], "heartbeat");
    let page = web.get("/scheduled");
    assert!(page.body.contains(later.id()) && page.body.contains("* * * * *"));

    // Run the queued task here; the result shows as JSON.
    common::drain(&app, &["default"]);
    let t = web.get_json(&format!("/api/tasks/{}", queued.id()));
    assert_eq!(
        (t["state"].as_str(), t["result"].as_i64()),
        (Some("done"), Some(42))
    );

    // Revoke and restore the scheduled one through the API.
    assert_eq!(
        web.api("/api/revoke", json!({ "id": later.id() })).status,
        200
    );
    assert!(later.is_revoked().unwrap());
    let r = web.api("/api/restore", json!({ "id": later.id() }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!later.is_revoked().unwrap());

    dead_letters_and_flush(&b, &web, &app);
}

/// A dead letter: retried through the API, deleted through the form; then a flush.
fn dead_letters_and_flush(b: &Backend, web: &Web, app: &Huey) {
    let pid: Task<(), u32> = Task::from_name(app, "pid").unwrap();
    let lost = pid.enqueue(()).unwrap();
    common::drain(&demo_app(b), &["default"]);
    let dead = web.get_json("/api/dead");
    assert_eq!(dead[0]["id"], lost.id());
    assert_eq!(
        web.get_json(&format!("/api/tasks/{}", lost.id()))["state"],
        "dead_lettered"
    );
    let key = dead[0]["key"].as_str().unwrap();
    let r = web.api("/api/dead/retry", json!({ "keys": [key] }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["count"], 1);
    common::drain(app, &["default"]);
    assert_eq!(lost.get().unwrap(), Some(std::process::id()));
    pid.enqueue(()).unwrap();
    common::drain(&demo_app(b), &["default"]);
    let csrf = web.csrf(&[]);
    let r = web.form(
        "/actions/dead/delete",
        &[],
        &[("csrf", &csrf), ("next", "/dead")],
    );
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/dead")));
    assert_eq!(app.storage().counts().unwrap().dead, 0);

    // Flush the schedule through the form.
    let r = web.form(
        "/actions/flush",
        &[],
        &[("csrf", &csrf), ("schedule", "on")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.storage().counts().unwrap().scheduled, 0);
}

/// The number shown for a count on the overview (-1 when missing).
fn shown(browser: &Browser, key: &str) -> i64 {
    browser
        .eval(&format!(
            "const e = document.querySelector('[data-count=\"{key}\"]'); \
             return e ? Number(e.textContent) : -1;"
        ))
        .as_i64()
        .unwrap_or(-1)
}

/// Wait until the overview shows exactly the storage's counts (two reads that agree).
fn counts_agree(browser: &Browser, app: &Huey) -> bool {
    webdriver::wait_for(LONG, || {
        let c = app.storage().counts().unwrap();
        let page: Vec<i64> = ["ready", "scheduled", "in_flight", "results", "dead"]
            .iter()
            .map(|k| shown(browser, k))
            .collect();
        let want = [c.ready, c.scheduled, c.in_flight, c.results, c.dead].map(|n| n as i64);
        page == want && app.storage().counts().unwrap() == c
    })
}

#[test]
fn a_browser_sees_the_consumer_drain_and_retries_a_dead_letter_on_sqlite() {
    browser_test(Backend::sqlite, "dashboard");
}

#[test]
fn a_browser_sees_the_consumer_drain_and_retries_a_dead_letter_on_redis() {
    browser_test(Backend::redis, "dashboard-redis");
}

/// The browser test on a backend; screenshots go to `target/{shots}.png` and
/// `target/{shots}-task.png`.
fn browser_test(backend: fn() -> Backend, shots: &str) {
    if let Err(reason) = webdriver::ensure_installed() {
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let b = backend();
    let app = b.app();
    // The testbed's dashboard: it knows the `pid` task's result type, to show its result.
    let web = Web::start_exe(&common::hueyd::testbed_exe(), &b.url(), &[]);
    let sleep: Task<u64, u64> = Task::from_name(&app, "sleep").unwrap();
    sleep.enqueue_many(std::iter::repeat_n(250, 16)).unwrap();
    // `pid` is a testbed task: the plain hueyd does not know it and dead-letters it.
    let pid: Task<(), u32> = Task::from_name(&app, "pid").unwrap();
    let lost = pid.enqueue(()).unwrap();

    let browser = Browser::start();
    browser.goto(&web.url("/"));
    assert_eq!(
        shown(&browser, "ready"),
        17,
        "the page before any consumer runs"
    );

    // A consumer drains the queue; the page follows without a reload.
    let plain = Hueyd::start(&b.url(), &["-w", "2"]);
    watch_the_drain(&browser, &web, &app, lost.id());
    browser.screenshot(&screenshot(&format!("{shots}.png")));

    // The right binary is deployed; retry the dead letter by clicking its button.
    drop(plain);
    let _testbed = Hueyd::testbed(&b.url(), &["-k", "process", "-w", "2"]);
    browser.click("#dead tr[data-key] button");
    let gone = browser.wait_true(
        LONG,
        "return location.pathname === '/' && \
         document.querySelectorAll('#dead tr[data-key]').length === 0",
    );
    assert!(gone, "the dead letter is still listed after the retry");
    let ran = webdriver::wait_for(LONG, || lost.is_ready().unwrap_or(false));
    assert!(ran, "the retried task did not run");
    browser.goto(&web.url(&format!("/tasks/{}", lost.id())));
    let done = browser.eval("return document.getElementById('state').textContent");
    assert_eq!(done, json!("done"));
    let result = browser.eval("return document.querySelector('#result pre').textContent");
    assert!(
        result.as_str().unwrap().trim().parse::<u32>().is_ok(),
        "{result}"
    );

    cancel_a_running_task(
        &browser,
        &web,
        &sleep,
        &screenshot(&format!("{shots}-task.png")),
    );
}

/// Watch the overview while the consumer drains: the consumer, the dead letter and the
/// storage's counts appear without a reload; then a screenshot.
fn watch_the_drain(browser: &Browser, web: &Web, app: &Huey, lost: &str) {
    let live = browser.wait_true(
        LONG,
        "return document.querySelectorAll('#consumers tr[data-consumer]').length >= 1",
    );
    assert!(live, "the page never showed the consumer");
    let dead_shown = browser.wait_true(
        LONG,
        &format!(
            "return [...document.querySelectorAll('#dead tr[data-key]')]\
             .some(r => r.textContent.includes('{lost}'))"
        ),
    );
    assert!(dead_shown, "the page never showed the dead letter");
    assert!(webdriver::wait_for(LONG, || shown(browser, "ready") == 0));
    assert!(
        counts_agree(browser, app),
        "the page's counts are not the storage's"
    );
    assert_eq!(shown(browser, "dead"), 1);
    let queue = browser.eval(
        "return [...document.querySelectorAll('#queues tr[data-queue=\"default\"] td')]\
         .slice(0, 3).map(t => t.textContent)",
    );
    assert_eq!(queue, json!(["default", "0", "0"]));
    // Once the consumer has counted its minute, a fresh load draws it in the chart.
    let counted = webdriver::wait_for(LONG, || {
        let o = web.get_json("/api/overview");
        let done: u64 = o["throughput"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["complete"].as_u64().unwrap())
            .sum();
        done == 16
    });
    assert!(counted, "the per-minute counters never showed the 16 tasks");
    browser.goto(&web.url("/"));
}

/// A task running in a process worker: its page says where; Cancel (after the confirmation)
/// kills its worker and the task ends revoked.
fn cancel_a_running_task(browser: &Browser, web: &Web, sleep: &Task<u64, u64>, shot: &Path) {
    let long = sleep.enqueue(120_000).unwrap();
    let page = web.url(&format!("/tasks/{}", long.id()));
    let running = webdriver::wait_for(LONG, || {
        browser.goto(&page);
        browser.eval("return document.getElementById('state').textContent") == json!("running")
            && browser
                .eval("return document.getElementById('detail').textContent.includes('worker')")
                == json!(true)
            && browser
                .eval("return document.querySelector('form[action=\"/actions/cancel\"]') !== null")
                == json!(true)
    });
    assert!(running, "the task page never showed the task running");
    browser.screenshot(shot);
    browser.click("form[action=\"/actions/cancel\"] button");
    browser.accept_dialog();
    let revoked = webdriver::wait_for(LONG, || {
        browser.goto(&page);
        browser.eval("return document.getElementById('state').textContent") == json!("revoked")
    });
    assert!(revoked, "the cancelled task did not end revoked");
    assert!(long.get().is_err(), "a cancelled task has no result");
}

/// Where a screenshot goes: `target/NAME`.
fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join(name)
}

/// The storage goes away: pages and API answer 503 (the server stays up), and recover when it
/// comes back.
#[test]
fn a_lost_storage_is_a_503_not_a_crash() {
    let mut redis = common::redis_server::RedisServer::start_persistent();
    let web = Web::start(&redis.url(), &[]);
    let csrf = web.csrf(&[]);
    redis.kill();
    for path in [
        "/",
        "/api/overview",
        "/dead",
        "/api/tasks/abc",
        "/chart.svg",
    ] {
        let r = web.get(path);
        assert_eq!(r.status, 503, "{path}: {}", r.body);
    }
    let r = http(
        "POST",
        &web.url("/api/revoke"),
        &[("X-CSRF-Token", &csrf)],
        Some(("application/json", r#"{"id": "abc"}"#)),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("storage error"), "{}", r.body);
    redis.restart();
    let back = webdriver::wait_for(LONG, || web.get("/api/overview").status == 200);
    assert!(back, "the dashboard did not recover with its storage");
}

/// Idle and slow clients (a slowloris) cannot hold the dashboard's sockets: more idle
/// connections than it serves at once, a header dripped a byte at a time and a body that never
/// comes are all closed within seconds, and a request meanwhile is answered.
#[test]
fn idle_and_slow_clients_are_cut_off() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let web = Web::start(
        &format!("sqlite:{}", dir.path().join("q.db").display()),
        &[],
    );
    let addr = web.base.trim_start_matches("http://").to_string();
    let csrf = web.csrf(&[]);
    let started = Instant::now();
    // 300 connections (more than the 256 served at once) that send half a request head.
    let mut idle: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            s
        })
        .collect();
    // A POST whose body never comes (the CSRF token is right: the body is what is waited for).
    let mut body = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /api/revoke HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF-Token: {csrf}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    body.write_all(head.as_bytes()).unwrap();
    idle.push(body);
    // A request meanwhile gets its answer (once a slot frees, at the latest).
    assert_eq!(web.get("/api/overview").status, 200);
    // Every slow connection is closed by the server (it reads end of file or an error),
    // seconds after it opened, not held.
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(LONG)).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        let closed = r.is_ok()
            || r.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "connection {i}: {r:?}");
        let answer = String::from_utf8_lossy(&buf);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}
