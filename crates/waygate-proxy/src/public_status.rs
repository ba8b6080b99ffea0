//! The public status page (optional, per listener, e.g. `/_status`): for end
//! users, each service (a route, by its configured name) is operational,
//! degraded or down, and since when. No upstream names, no addresses.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use crate::runtime::{ListenerRt, Runtime};

/// What an end user can know about a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceState {
    Operational = 0,
    Degraded = 1,
    Down = 2,
}

// === impl ServiceState ===

impl ServiceState {
    fn label(self) -> &'static str {
        match self {
            ServiceState::Operational => "Operational",
            ServiceState::Degraded => "Degraded",
            ServiceState::Down => "Down",
        }
    }
}

/// The state of upstream `u` now, from server availability and the gateway
/// errors of the last 5 minutes; remembers when it last changed.
pub(crate) fn service_state(rt: &Runtime, u: usize) -> (ServiceState, u64) {
    let up = &rt.upstreams[u];
    let members = up.members.load();
    let now = waygate_upstream::now_ms();
    let total = members.set.servers().len();
    let available = members
        .set
        .servers()
        .iter()
        .filter(|s| s.is_available(now))
        .count();
    let since_5m = SystemTime::now() - Duration::from_secs(300);
    let failing = rt.errors.recent(256).iter().any(|r| {
        r.time >= since_5m && r.side == "gateway" && r.upstream.as_deref() == Some(&*up.name)
    });
    let state = if total == 0 || available == 0 {
        ServiceState::Down
    } else if available < total || failing {
        ServiceState::Degraded
    } else {
        ServiceState::Operational
    };
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prev = up.public_state.swap(state as u8, Ordering::Relaxed);
    if prev != state as u8 || up.public_since.load(Ordering::Relaxed) == 0 {
        up.public_since.store(unix, Ordering::Relaxed);
    }
    (state, up.public_since.load(Ordering::Relaxed))
}

pub(crate) fn render(rt: &Runtime, listener: &ListenerRt) -> Response<Bytes> {
    let mut rows = String::new();
    let mut seen: Vec<&str> = Vec::new();
    for (name, u) in &listener.services {
        if seen.contains(&&**name) {
            continue;
        }
        seen.push(name);
        let (state, since) = service_state(rt, *u);
        let since = waygate_telemetry::rfc3339_millis(UNIX_EPOCH + Duration::from_secs(since));
        let class = match state {
            ServiceState::Operational => "ok",
            ServiceState::Degraded => "warn",
            ServiceState::Down => "bad",
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=\"{class}\">{}</td><td>since {}</td></tr>",
            escape(name),
            state.label(),
            &since[..16].replace('T', " ")
        ));
    }
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Service status</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;background:#f6f7f9;color:#1d2330;margin:0}}main{{max-width:40rem;margin:8vh auto;background:#fff;padding:1.5rem 2rem;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08)}}
table{{width:100%;border-collapse:collapse}}td{{padding:.5rem;border-bottom:1px solid #eee}}.ok{{color:#1c7c35;font-weight:600}}.warn{{color:#a15c00;font-weight:600}}.bad{{color:#b3261e;font-weight:600}}small{{color:#5a6375}}</style>
</head><body><main><h1>Service status</h1><table>{rows}</table><p><small>Updated {} UTC. This page refreshes itself.</small></p></main></body></html>
"#,
        &waygate_telemetry::rfc3339_millis(SystemTime::now())[..19].replace('T', " ")
    );
    let mut resp = Response::new(Bytes::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
