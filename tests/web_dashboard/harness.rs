//! The dashboard as its tests drive it: `hueyd web` started on a free loopback port, and a
//! small HTTP client that shows every status (redirects are not followed).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::common::hueyd::exe;

pub const LONG: Duration = Duration::from_secs(60);

/// A running `hueyd web`, killed when dropped.
pub struct Web {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Web {
    pub fn start(url: &str, args: &[&str]) -> Web {
        Web::start_exe(exe().as_ref(), url, args)
    }

    /// `web` of another app binary (every binary built on `huey::cli::main` has it).
    pub fn start_exe(exe: &Path, url: &str, args: &[&str]) -> Web {
        let mut cmd = Command::new(exe);
        cmd.args(["--storage", url, "web", "--bind", "127.0.0.1:0"])
            .args(args)
            .env_remove("HUEY_STORAGE")
            .env_remove("HUEY_WEB_TOKEN");
        Web::spawn(cmd)
    }

    /// Run a `web` command line, and read the address it prints.
    pub fn spawn(mut cmd: Command) -> Web {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hueyd web");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(LONG).expect("hueyd web printed no address");
        let base = line
            .trim()
            .strip_prefix("dashboard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .trim_end_matches('/')
            .replace("0.0.0.0", "127.0.0.1");
        Web { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Resp {
        http("GET", &self.url(path), &[], None)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The CSRF token, as the pages carry it.
    pub fn csrf(&self, headers: &[(&str, &str)]) -> String {
        let r = http("GET", &self.url("/"), headers, None);
        assert_eq!(r.status, 200, "{}", r.body);
        let at = r.body.find("name=\"csrf-token\" content=\"").unwrap() + 27;
        r.body[at..at + 64].to_string()
    }

    /// POST a JSON body with the CSRF token and this origin.
    pub fn api(&self, path: &str, body: Value) -> Resp {
        let csrf = self.csrf(&[]);
        let origin = self.base.clone();
        http(
            "POST",
            &self.url(path),
            &[("X-CSRF-Token", &csrf), ("Origin", &origin)],
            Some(("application/json", &body.to_string())),
        )
    }

    /// POST a form (fields urlencoded as given).
    pub fn form(&self, path: &str, headers: &[(&str, &str)], fields: &[(&str, &str)]) -> Resp {
        let body: String = form_urlencoded_pairs(fields);
        http(
            "POST",
            &self.url(path),
            headers,
            Some(("application/x-www-form-urlencoded", &body)),
        )
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn form_urlencoded_pairs(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
    pub cookie: Option<String>,
    pub content_type: String,
}

pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<(&str, &str)>) -> Resp {
    // Redirects and error statuses are answers to look at, not errors.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = match body {
        Some((ctype, b)) => agent.run(
            req.header("Content-Type", ctype)
                .body(b.to_string())
                .unwrap(),
        ),
        None => agent.run(req.body(()).unwrap()),
    };
    let mut r = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (location, cookie) = (header("location"), header("set-cookie"));
    let content_type = header("content-type").unwrap_or_default();
    Resp {
        status: r.status().as_u16(),
        location,
        cookie,
        content_type,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Announce a 1 GiB JSON body, send 64 KiB of it, and read the status the server answers.
pub fn oversized_post(web: &Web, csrf: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = web.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(LONG)).unwrap();
    let head = format!(
        "POST /api/revoke HTTP/1.1\r\nHost: {addr}\r\nX-CSRF-Token: {csrf}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1u64 << 30
    );
    conn.write_all(head.as_bytes()).unwrap();
    // The server may answer and close before all of it is written.
    let _ = conn.write_all(&vec![b' '; 64 << 10]);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split(' ').nth(1).unwrap_or("");
    status
        .parse()
        .unwrap_or_else(|_| panic!("no HTTP answer: {answer:?}"))
}
