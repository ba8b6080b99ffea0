//! The responder: renders a [`Cause`] into the status, `Proxy-Status`
//! (RFC 9209), `Retry-After`, `X-Request-Id` and a content-negotiated body
//! (HTML for people, `application/problem+json` (RFC 9457) for programs,
//! plain text otherwise). Bodies never carry internal addresses; the
//! `Proxy-Status` details do only when the operator allows it.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use waygate_core::Cause;

use crate::headers::{PROXY_STATUS, X_REQUEST_ID};
use crate::negotiate::{self, Format};

/// Renders gateway-generated responses.
#[derive(Debug)]
pub(crate) struct Responder {
    /// The token naming this gateway in `Proxy-Status`.
    name: String,
    /// Operator templates for HTML pages, by status.
    pages: HashMap<u16, String>,
}

/// What one error response says.
pub(crate) struct ErrorReport<'a> {
    pub(crate) cause: Cause,
    /// For operators: goes into `Proxy-Status` details and logs.
    pub(crate) detail: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) accept: Option<&'a HeaderValue>,
    /// The server of the last attempt, sent as `next-hop` only when the
    /// operator allows revealing addresses.
    pub(crate) next_hop: Option<&'a str>,
    /// The listener's public status page, linked from the HTML page.
    pub(crate) status_page: Option<&'a str>,
    /// `Retry-After` for this error, overriding the cause's default.
    pub(crate) retry_after: Option<u64>,
    /// Extra headers (name, value).
    pub(crate) headers: &'a [(&'static str, String)],
    /// The request is gRPC: answer in gRPC's terms.
    pub(crate) grpc: bool,
}

/// Whether a request is gRPC (`application/grpc`, `application/grpc+proto`,
/// ...; not gRPC-Web, which carries its status in the body).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|ct| {
            ct.starts_with(b"application/grpc")
                && !ct.starts_with(b"application/grpc-web")
                && matches!(ct.get(16), None | Some(b'+' | b';'))
        })
}

/// The gRPC status code for a cause: DEADLINE_EXCEEDED (4) for timeouts,
/// UNIMPLEMENTED (12) when nothing is routed there, RESOURCE_EXHAUSTED (8)
/// for a body over the limit, INTERNAL (13) for a malformed request or a
/// gateway bug, UNAVAILABLE (14) for everything else (retryable).
pub(crate) fn grpc_status(cause: Cause) -> u8 {
    match cause.status() {
        504 | 408 => 4,
        404 => 12,
        413 => 8,
        400 | 500 => 13,
        _ => 14,
    }
}

/// The seconds to wait before retrying: the error's own, else the cause's.
fn retry_after(r: &ErrorReport<'_>) -> Option<u64> {
    r.retry_after.or(r.cause.retry_after().map(u64::from))
}

/// The error's extra headers (rate-limit headers, ...).
fn extra_headers(h: &mut http::HeaderMap, r: &ErrorReport<'_>) {
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
}

/// Percent-encodes a `grpc-message` value (the gRPC HTTP/2 protocol:
/// bytes outside printable ASCII, and `%`).
fn grpc_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === impl Responder ===

impl Responder {
    pub(crate) fn new(name: String, pages: HashMap<u16, String>) -> Self {
        Self { name, pages }
    }

    pub(crate) fn render(&self, r: &ErrorReport<'_>) -> Response<Bytes> {
        if r.grpc {
            return self.render_grpc(r);
        }
        let status = StatusCode::from_u16(r.cause.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let time = waygate_telemetry::rfc3339_millis(SystemTime::now());
        let format = negotiate::choose(r.accept.map(HeaderValue::as_bytes));
        let (content_type, body) = match format {
            Format::Html => ("text/html; charset=utf-8", self.html(status, r, &time)),
            Format::Json => ("application/problem+json", json(status, r, &time)),
            Format::Text => ("text/plain; charset=utf-8", text(status, r, &time)),
        };
        let mut resp = Response::new(Bytes::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.identify(h, r);
        if let Some(secs) = retry_after(r) {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        extra_headers(h, r);
        resp
    }

    /// A gRPC "Trailers-Only" answer: HTTP 200 with no body, `grpc-status`
    /// and `grpc-message` in the head, plus `Proxy-Status` and the id.
    fn render_grpc(&self, r: &ErrorReport<'_>) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::new());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        self.grpc_status_fields(h, r);
        if let Some(secs) = retry_after(r) {
            // gRPC clients read their retry pushback in milliseconds.
            h.insert(
                "grpc-retry-pushback-ms",
                HeaderValue::from(secs.saturating_mul(1000)),
            );
        }
        extra_headers(h, r);
        resp
    }

    /// The trailers ending a gRPC response the upstream broke off.
    pub(crate) fn grpc_trailers(
        &self,
        cause: Cause,
        detail: &str,
        request_id: &str,
    ) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        self.grpc_status_fields(
            &mut h,
            &ErrorReport {
                cause,
                detail,
                request_id,
                accept: None,
                next_hop: None,
                status_page: None,
                retry_after: None,
                headers: &[],
                grpc: true,
            },
        );
        h
    }

    /// `grpc-status`, `grpc-message` (with the cause and request id),
    /// `Proxy-Status` and `X-Request-Id`.
    fn grpc_status_fields(&self, h: &mut http::HeaderMap, r: &ErrorReport<'_>) {
        h.insert(
            "grpc-status",
            HeaderValue::from(u16::from(grpc_status(r.cause))),
        );
        let message = format!(
            "{}: {} (waygate {}, request id {})",
            r.cause.title(),
            r.detail,
            r.cause.name(),
            r.request_id
        );
        if let Ok(v) = HeaderValue::from_str(&grpc_message(&message)) {
            h.insert("grpc-message", v);
        }
        self.identify(h, r);
    }

    /// `Proxy-Status` and `X-Request-Id`: on every response the gateway
    /// makes.
    fn identify(&self, h: &mut http::HeaderMap, r: &ErrorReport<'_>) {
        if let Ok(v) = HeaderValue::from_str(&self.proxy_status(r)) {
            h.insert(PROXY_STATUS.clone(), v);
        }
        if let Ok(v) = HeaderValue::from_str(r.request_id) {
            h.insert(X_REQUEST_ID.clone(), v);
        }
    }

    /// `waygate; error=<type>; details="..."` (RFC 9209 §2, an sf-list member
    /// whose details parameter is an sf-string).
    pub(crate) fn proxy_status(&self, r: &ErrorReport<'_>) -> String {
        let next_hop = r
            .next_hop
            .map(|h| format!("; next-hop=\"{}\"", sf_string(h)))
            .unwrap_or_default();
        format!(
            "{}; error={}{next_hop}; details=\"{}\"",
            self.name,
            r.cause.proxy_status(),
            sf_string(r.detail)
        )
    }

    fn html(&self, status: StatusCode, r: &ErrorReport<'_>, time: &str) -> String {
        let retry = if r.cause.retry_may_help() {
            "Trying again in a little while may work."
        } else {
            "Trying again will not help."
        };
        let reason = status.canonical_reason().unwrap_or("Error");
        let vars: [(&str, &str); 10] = [
            ("status", status.as_str()),
            ("reason", reason),
            ("title", r.cause.title()),
            ("explanation", r.cause.explanation()),
            ("retry", retry),
            ("request_id", r.request_id),
            ("time", time),
            ("cause", r.cause.name()),
            ("proxy_status", r.cause.proxy_status()),
            ("status_page", r.status_page.unwrap_or("")),
        ];
        let with_link;
        let template = match (self.pages.get(&status.as_u16()), r.status_page) {
            (Some(t), _) => t.as_str(),
            (None, Some(_)) => {
                with_link = DEFAULT_HTML.replace(
                    "<dl>",
                    "<p>Current status of this site's services: <a href=\"{{status_page}}\">{{status_page}}</a></p>\n<dl>",
                );
                with_link.as_str()
            }
            (None, None) => DEFAULT_HTML,
        };
        fill(template, &vars)
    }
}

/// Replaces `{{name}}` placeholders with HTML-escaped values.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match vars.iter().find(|(k, _)| *k == key) {
                    Some((_, v)) => out.push_str(&escape_html(v)),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an sf-string (RFC 8941 §3.3.3): printable ASCII only, with `"`
/// and `\` escaped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

fn json(status: StatusCode, r: &ErrorReport<'_>, time: &str) -> String {
    let v = serde_json::json!({
        "type": format!("https://waygate.dev/causes#{}", r.cause.name()),
        "title": r.cause.title(),
        "status": status.as_u16(),
        "detail": r.cause.explanation(),
        "request_id": r.request_id,
        "proxy_status": r.cause.proxy_status(),
        "cause": r.cause.name(),
        "retry_may_help": r.cause.retry_may_help(),
        "time": time,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn text(status: StatusCode, r: &ErrorReport<'_>, time: &str) -> String {
    format!(
        "{} {}: {}\n{}\nrequest id: {}\ntime: {}\ncause: {} ({})\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        r.cause.title(),
        r.cause.explanation(),
        r.request_id,
        time,
        r.cause.name(),
        r.cause.proxy_status(),
    )
}

const DEFAULT_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{status}} {{title}}</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:40rem;margin:10vh auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.5rem;margin:.2rem 0 1rem}
.code{color:#8a93a6;font-weight:600;letter-spacing:.05em}
.you{background:#eef6ee;border-left:4px solid #3c9a4a;padding:.6rem .9rem;border-radius:4px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;color:#5a6375;font-size:.9rem;margin-top:1.5rem}
dd{margin:0;font-family:ui-monospace,monospace}
</style>
</head>
<body>
<main>
<div class="code">{{status}} {{reason}}</div>
<h1>{{title}}</h1>
<p>{{explanation}}</p>
<p class="you">This is not a problem with your device or your connection. {{retry}}</p>
<p>If you contact the site's support, give them the request id below: it tells them exactly what happened.</p>
<dl>
<dt>Request id</dt><dd>{{request_id}}</dd>
<dt>Time</dt><dd>{{time}}</dd>
<dt>Cause</dt><dd>{{cause}}</dd>
</dl>
</main>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accept: Option<&'static str>) -> (Responder, Response<Bytes>) {
        let r = Responder::new("waygate".into(), HashMap::new());
        let accept = accept.map(HeaderValue::from_static);
        let resp = r.render(&ErrorReport {
            cause: Cause::NoServerAvailable,
            detail: "upstream \"app\" has no server",
            request_id: "abc123",
            accept: accept.as_ref(),
            next_hop: None,
            status_page: None,
            retry_after: None,
            headers: &[],
            grpc: false,
        });
        (r, resp)
    }

    #[test]
    fn headers_carry_cause_and_id() {
        let (_, resp) = report(None);
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.headers()["proxy-status"],
            "waygate; error=destination_unavailable; details=\"upstream \\\"app\\\" has no server\""
        );
        assert_eq!(resp.headers()["retry-after"], "5");
        assert_eq!(resp.headers()["x-request-id"], "abc123");
        assert!(std::str::from_utf8(resp.body())
            .unwrap()
            .contains("request id: abc123"));
    }

    #[test]
    fn json_is_problem_details() {
        let (_, resp) = report(Some("application/json"));
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["status"], 503);
        assert_eq!(v["request_id"], "abc123");
        assert_eq!(v["proxy_status"], "destination_unavailable");
        assert!(v["title"].is_string() && v["detail"].is_string());
    }

    #[test]
    fn html_is_for_people_and_templates_are_escaped() {
        let (_, resp) = report(Some("text/html"));
        let body = std::str::from_utf8(resp.body()).unwrap();
        assert!(body.contains("not a problem with your device"));
        assert!(body.contains("abc123"));
        assert!(!body.contains("{{"));
        let filled = fill("<b>{{ title }}</b>{{unknown}}{{x", &[("title", "a<b")]);
        assert_eq!(filled, "<b>a&lt;b</b>{{unknown}}{{x");
    }
}
