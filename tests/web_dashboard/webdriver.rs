//! A small WebDriver client: headless Chromium through `chromedriver`'s HTTP API (W3C
//! WebDriver, JSON over HTTP). Chromium and its driver come from Debian's `chromium` and
//! `chromium-driver` packages: installed here when missing and running as root (as
//! scripts/test does), otherwise the browser test is skipped with the reason printed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where a command is on the PATH.
fn which(cmd: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then_some(path)
}

fn found(cmd: &str) -> bool {
    which(cmd).is_some()
}

/// Make sure `chromium` and `chromedriver` are there; `Err(reason)` when they cannot be.
pub fn ensure_installed() -> Result<(), String> {
    if found("chromium") && found("chromedriver") {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root || !found("apt-get") {
        return Err(
            "chromium and chromedriver are not installed (Debian: apt-get install \
                    chromium chromium-driver), and this test is not root to install them"
                .into(),
        );
    }
    eprintln!("installing chromium and chromium-driver with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok =
        apt(&["update", "-qq"]) && apt(&["install", "-y", "-qq", "chromium", "chromium-driver"]);
    if ok && found("chromium") && found("chromedriver") {
        Ok(())
    } else {
        Err("apt-get could not install chromium and chromium-driver".into())
    }
}

/// A running chromedriver with one headless browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            b.agent
                .get(&format!("{}/status", b.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
        });
        assert!(ready, "chromedriver did not become ready");
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium").expect("chromium on the PATH"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500"],
            },
        }}});
        let v = b.post("/session", caps);
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder().method(method).uri(&url);
        let resp = match body {
            Some(b) => {
                let req = req.header("Content-Type", "application/json");
                self.agent.run(req.body(b.to_string()).unwrap())
            }
            None => self.agent.run(req.body(()).unwrap()),
        };
        let mut r = resp.map_err(|e| format!("webdriver {method} {path}: {e}"))?;
        let code = r.status().as_u16();
        // A screenshot comes as base64 in the JSON: allow more than the default 10 MB.
        let text = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if code >= 400 {
            return Err(format!("webdriver {method} {path}: {code} {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(v["value"].clone())
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Accept the confirmation dialog the page opens (waiting for it to open).
    pub fn accept_dialog(&self) {
        let mut last = String::new();
        let ok = wait_for(Duration::from_secs(10), || {
            match self.try_call("POST", &self.s("/alert/accept"), Some(json!({}))) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(ok, "no dialog to accept: {last}");
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call("POST", path, Some(body))
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.post(&self.s("/url"), json!({ "url": url }));
    }

    /// Run a script in the page and return its value.
    pub fn eval(&self, script: &str) -> Value {
        self.post(
            &self.s("/execute/sync"),
            json!({ "script": script, "args": [] }),
        )
    }

    /// Click the first element matching a CSS selector.
    pub fn click(&self, css: &str) {
        let e = self.post(
            &self.s("/element"),
            json!({ "using": "css selector", "value": css }),
        );
        let id = e[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {e}"))
            .to_string();
        self.post(&self.s(&format!("/element/{id}/click")), json!({}));
    }

    /// Save a PNG of the window.
    pub fn screenshot(&self, path: &std::path::Path) {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Evaluate `script` until it returns true; false when the time is up.
    pub fn wait_true(&self, timeout: Duration, script: &str) -> bool {
        wait_for(timeout, || self.eval(script) == json!(true))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Poll `f` every 100 ms until it holds or the time is up.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
