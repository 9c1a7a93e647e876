//! The dashboard's security: which binds need a token, who may see the pages, and which POSTs
//! are accepted.
//!
//! - A bind other than loopback is refused without `--token`.
//! - With a token, every request but the login form must carry it, as `Authorization: Bearer
//!   TOKEN` or as the session cookie the login form sets (`HttpOnly`, `SameSite=Strict`).
//! - Without a token (loopback only) the `Host` header must name a loopback host, so a page on
//!   another site cannot reach the dashboard through DNS rebinding.
//! - Every POST must carry the per-process CSRF token (form field `csrf` or header
//!   `X-CSRF-Token`; a request with a valid bearer header needs none, since a browser never adds
//!   one by itself), and an `Origin` header, when sent, must be this host's.
//! - Every response forbids framing and inline scripts (Content-Security-Policy).

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::body::{to_bytes, Body};
use axum::extract::{Form, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use parking_lot::Mutex;

use super::server::BODY_TIMEOUT;
use super::view::{self, Fail};
use super::{Shared, BODY_LIMIT};
use crate::error::{Error, Result};

/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;
/// Sessions kept at most (a login past this forgets the older ones).
const MAX_SESSIONS: usize = 1000;
const COOKIE: &str = "huey_session";

pub(crate) struct Auth {
    token: Option<String>,
    /// Put in every page and required on every POST.
    pub csrf: String,
    sessions: Mutex<HashSet<String>>,
    /// No token: requests must name a loopback host.
    check_host: bool,
}

/// Refuse a non-loopback bind without a token, and tokens too short to be one.
pub(crate) fn check_bind(addr: SocketAddr, token: Option<String>) -> Result<Option<String>> {
    match token {
        Some(t) if t.len() < MIN_TOKEN_LEN => Err(Error::Config(format!(
            "--token must be at least {MIN_TOKEN_LEN} characters long"
        ))),
        None if !addr.ip().is_loopback() => Err(Error::Config(format!(
            "refusing to serve the dashboard on {addr} without --token: anyone who can reach \
             that address could revoke tasks and flush queues; pass --token (or set \
             HUEY_WEB_TOKEN), or bind to loopback (127.0.0.1)"
        ))),
        t => Ok(t),
    }
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

/// Compare secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Auth {
    pub(crate) fn new(token: Option<String>, loopback: bool) -> Auth {
        Auth {
            check_host: token.is_none() && loopback,
            token,
            csrf: random_hex(),
            sessions: Mutex::new(HashSet::new()),
        }
    }

    fn bearer_ok(&self, h: &HeaderMap) -> bool {
        let (Some(token), Some(v)) = (&self.token, h.get(header::AUTHORIZATION)) else {
            return false;
        };
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| same(t.trim(), token))
    }

    fn session_ok(&self, h: &HeaderMap) -> bool {
        let sessions = self.sessions.lock();
        cookies(h).any(|(k, v)| k == COOKIE && sessions.iter().any(|s| same(s, v)))
    }

    fn new_session(&self) -> String {
        let id = random_hex();
        let mut sessions = self.sessions.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(id.clone());
        id
    }
}

fn cookies(h: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

fn host(h: &HeaderMap) -> Option<&str> {
    h.get(header::HOST).and_then(|v| v.to_str().ok())
}

/// Whether a `Host` header names a loopback host (any port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An `Origin` header, when present, must be this host.
fn origin_ok(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (origin.to_str(), host(h)) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn is_form(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

fn wants_json(path: &str) -> bool {
    path.starts_with("/api/")
}

/// The middleware every request goes through.
pub(crate) async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let mut resp = check(s, req, next).await;
    secure_headers(resp.headers_mut());
    resp
}

async fn check(s: Shared, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let json = wants_json(&path);
    let h = req.headers();
    if s.auth.check_host && !host(h).is_some_and(loopback_host) {
        return Fail::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only for localhost",
        )
        .json(json)
        .into_response();
    }
    let bearer = s.auth.bearer_ok(h);
    let public = path == "/login" || path.starts_with("/static/");
    if s.auth.token.is_some() && !public && !bearer && !s.auth.session_ok(h) {
        if json || req.method() != Method::GET {
            return Fail::new(StatusCode::UNAUTHORIZED, "a token is required")
                .json(json)
                .into_response();
        }
        let next_path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next_path)
            .finish();
        return Redirect::to(&format!("/login?{q}")).into_response();
    }
    let req = if req.method() == Method::POST {
        match check_post(&s, req, bearer).await {
            Ok(r) => r,
            Err(f) => return f.json(json).into_response(),
        }
    } else {
        req
    };
    next.run(req).await
}

/// Origin and CSRF checks; the body is read (within the limit) to find the form's field.
async fn check_post(s: &Shared, req: Request, bearer: bool) -> std::result::Result<Request, Fail> {
    if !origin_ok(req.headers()) {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "cross-origin request refused",
        ));
    }
    let header_token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| same(t, &s.auth.csrf));
    let (parts, body) = req.into_parts();
    // A client that stops sending its body mid-way is not waited for.
    let bytes = tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, BODY_LIMIT))
        .await
        .map_err(|_| {
            Fail::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| {
            Fail::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
        })?;
    let form_token = is_form(&parts.headers)
        && form_urlencoded::parse(&bytes).any(|(k, v)| k == "csrf" && same(&v, &s.auth.csrf));
    if !(bearer || header_token || form_token) {
        return Err(Fail::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token (reload the page and try again)",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "cache-control", "no-store");
}

/// A local path to go back to: `/...` but not `//host` (an open redirect).
pub(crate) fn local_path(p: Option<&str>) -> &str {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

pub(crate) async fn login_page(State(s): State<Shared>, Query(q): Query<LoginQuery>) -> Response {
    view::login(&s, local_path(q.next.as_deref()), None).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(crate) async fn login(State(s): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let next = local_path(f.next.as_deref()).to_string();
    let ok = s.auth.token.as_deref().is_some_and(|t| same(t, &f.token));
    if !ok {
        let page = view::login(&s, &next, Some("wrong token"));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        s.auth.new_session()
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in ["evil.example:8080", "10.0.0.1:80", "[2001:db8::1]:80", ""] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn redirects_stay_local() {
        assert_eq!(local_path(Some("/tasks/x")), "/tasks/x");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
