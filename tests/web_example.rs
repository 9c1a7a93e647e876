//! The axum example (`examples/web.rs`) over real HTTP, with a real `hueyd` consuming its
//! tasks, on a SQLite file and on Redis: enqueue, await the result, unknown ids, bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::hueyd::{Backend, Hueyd};
use serde_json::{json, Value};

/// The running example, killed when dropped.
struct Web {
    child: Child,
    base: String,
}

impl Web {
    fn start(url: &str) -> Web {
        let mut child = Command::new(common::example("web"))
            .args(["--storage", url, "--bind", "127.0.0.1:0"])
            .env_remove("HUEY_STORAGE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the web example");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Web { child, base }
    }

    /// (status, JSON body) of a request; error statuses are answers too.
    fn call(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        // Error statuses are answers too.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let out = match body {
            Some(b) => agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b),
            None => agent.get(&url).call(),
        };
        let mut resp = out.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}, body {text:?} is not JSON: {e}"));
        (status, body)
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.call(path, Some(body))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(path, None)
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enqueue_then_await(b: &Backend) {
    let web = Web::start(&b.url());
    let (status, body) = web.post("/tasks/add", "[2, 3]");
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();

    // No consumer yet: the wait runs out and says so.
    let (status, body) = web.get(&format!("/tasks/{id}?timeout=0.2"));
    assert_eq!((status, &body["state"]), (202, &json!("pending")), "{body}");

    // A request that waits while the consumer starts gets the result when it is written.
    let waiting = {
        let url = format!("{}/tasks/{id}?timeout=60", web.base);
        std::thread::spawn(move || {
            ureq::get(&url)
                .call()
                .unwrap()
                .into_body()
                .read_json::<Value>()
        })
    };
    let _consumer = Hueyd::start(&b.url(), &["-k", "thread", "-w", "2"]);
    let body = waiting.join().unwrap().unwrap();
    assert_eq!(body, json!({ "id": id, "state": "done", "result": 5 }));
    // Kept: asking again gives it again at once.
    let (status, body) = web.get(&format!("/tasks/{id}?timeout=0"));
    assert_eq!((status, &body["result"]), (200, &json!(5)), "{body}");

    // A task that fails for good comes back as failed.
    let (_, body) = web.post("/tasks/add", &format!("[{}, 1]", i64::MAX));
    let id = body["id"].as_str().unwrap();
    let (status, body) = web.get(&format!("/tasks/{id}?timeout=60"));
    assert_eq!((status, &body["state"]), (200, &json!("failed")), "{body}");
    assert_eq!(body["error"], json!("overflow"));

    // Unknown ids, bad bodies, bad waits.
    let (status, _) = web.get("/tasks/00000000000000000000000000000000?timeout=0");
    assert_eq!(status, 404);
    for bad in ["[2,", "{\"a\": 1}", "[1, \"x\"]", ""] {
        let (status, body) = web.post("/tasks/add", bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("expected [a, b]"));
    }
    let (status, _) = web.get(&format!("/tasks/{id}?timeout=-1"));
    assert_eq!(status, 400);
    let (status, _) = web.get(&format!("/tasks/{id}?timeout=soon"));
    assert_eq!(status, 400);
    // The bad requests enqueued nothing.
    assert!(common::hueyd::wait_until(Duration::from_secs(30), || {
        b.app().storage().counts().unwrap().ready == 0
    }));
}

#[test]
fn web_example_on_sqlite() {
    enqueue_then_await(&Backend::sqlite());
}

#[test]
fn web_example_on_redis() {
    enqueue_then_await(&Backend::redis());
}
