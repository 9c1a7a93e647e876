//! The page frame (head, navigation, styles), forms for actions, error pages, the login page
//! and the script that keeps the overview live. Every value is escaped by `maud`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde_json::{json, Value};

use super::Shared;
use crate::error::Error;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#243447;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header .app{font-weight:600;margin-right:16px}
header form{margin-left:auto}main{padding:12px 16px;max-width:1200px}
table{border-collapse:collapse;background:#fff;margin:6px 0 18px;width:100%}
td,th{border:1px solid #dde;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef}.num{text-align:right;font-variant-numeric:tabular-nums}
.counts{display:flex;gap:12px;flex-wrap:wrap}.count{background:#fff;border:1px solid #dde;
padding:8px 14px;min-width:90px}.count b{display:block;font-size:22px}
pre{background:#fff;border:1px solid #dde;padding:6px;margin:0;white-space:pre-wrap;word-break:break-all}
form.inline{display:inline}button{cursor:pointer}.muted{color:#777}.err{color:#b00}
.state{font-weight:600;padding:1px 6px;border-radius:3px;background:#eef}
.flash{background:#ffe;border:1px solid #dd8;padding:6px 10px;margin-bottom:10px}
";

/// The script of every page (served from `/static/dashboard.js`, as the CSP forbids inline
/// scripts).
const SCRIPT: &str = include_str!("dashboard.js");

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// An error answered as a page, or as `{"error": ...}` under `/api`.
#[derive(Debug)]
pub(crate) struct Fail {
    status: StatusCode,
    message: String,
    json: bool,
}

impl Fail {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
            json: false,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn json(mut self, json: bool) -> Fail {
        self.json = json;
        self
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let status = match &e {
            Error::Config(_) | Error::BadArguments { .. } => StatusCode::BAD_REQUEST,
            Error::UnknownTask(_) => StatusCode::NOT_FOUND,
            Error::Storage { .. } | Error::StorageUrl { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!("dashboard request failed: {e}");
        }
        Fail::new(status, e.to_string())
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        if self.json {
            return (self.status, Json(json!({ "error": self.message }))).into_response();
        }
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        let page = frame(
            &title,
            None,
            "error",
            html! {
                h1 { (self.status.as_u16()) " " (title) }
                p.err { (self.message) }
                p { a href="/" { "Back to the overview" } }
            },
        );
        (self.status, page).into_response()
    }
}

/// A whole page. `s` is `None` on error pages (no app name, no CSRF token).
pub(crate) fn frame(title: &str, s: Option<&Shared>, page: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = s {
                    meta name="csrf-token" content=(s.auth.csrf);
                }
                title { (title) " · huey" }
                style { (PreEscaped(STYLE)) }
                script src="/static/dashboard.js" defer {}
            }
            body data-page=(page) {
                header {
                    @if let Some(s) = s {
                        span.app { "huey · " (s.app.name()) }
                    }
                    a href="/" { "Overview" }
                    a href="/dead" { "Dead letters" }
                    a href="/scheduled" { "Scheduled" }
                    form method="get" action="/tasks" {
                        input type="search" name="id" placeholder="task id" aria-label="task id";
                        " "
                        button type="submit" { "Find" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A POST form of hidden fields and one button; `confirm` asks first (through the script).
pub(crate) fn action(
    s: &Shared,
    path: &str,
    fields: &[(&str, &str)],
    label: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(path) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(s.auth.csrf);
            @for (k, v) in fields {
                input type="hidden" name=(k) value=(v);
            }
            button type="submit" { (label) }
        }
    }
}

/// A JSON value, pretty-printed.
pub(crate) fn json_block(v: &Option<Value>) -> Markup {
    match v {
        Some(v) => html! { pre { (serde_json::to_string_pretty(v).unwrap_or_default()) } },
        None => html! { span.muted { "—" } },
    }
}

/// A link to a task's page.
pub(crate) fn task_link(id: &str) -> Markup {
    let href = format!("/tasks/{}", encode_segment(id));
    html! { a href=(href) { (id) } }
}

/// Percent-encode a path segment.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The login form (only used with `--token`).
pub(crate) fn login(s: &Shared, next: &str, error: Option<&str>) -> Markup {
    frame(
        "Log in",
        None,
        "login",
        html! {
            h1 { "Log in to " (s.app.name()) }
            @if let Some(e) = error { p.err { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(s.auth.csrf);
                input type="hidden" name="next" value=(next);
                label { "Token " input type="password" name="token" autofocus; }
                " "
                button type="submit" { "Log in" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a-b_c.d~"), "a-b_c.d~");
        assert_eq!(encode_segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
