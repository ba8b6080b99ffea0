//! waygate's request path: listeners, the router, the forwarder with its
//! per-server connection pools, and the responder that turns a [`Cause`]
//! into a truthful error response.
//!
//! ```text
//! accept → serve conn (h1) → RequestContext (id, timers, log record) → route
//!   → select upstream → [attempt: pick server (round robin) → pooled or fresh conn
//!   → send/recv under timeouts → classify] → stream response, or synthesize an
//!   error response → finish access log
//! ```
//!
//! [`Cause`]: waygate_core::Cause

mod attempt;
mod body;
mod classify;
mod client_io;
mod control;
mod drain;
mod forward;
mod headers;
mod metrics;
mod negotiate;
mod pool;
mod public_status;
mod ratelimit;
mod reload;
mod respond;
mod router;
mod runtime;
mod server;
mod status;
mod supervise;
mod tls;
mod tunnel;

pub use control::{admin_name, ControlError, ServerView, UpstreamView};
pub use reload::{Changes, LastReload, ReloadError, ReloadReport, ReloadStats};
pub use runtime::{BuildError, Gateway};
pub use server::Bound;
pub use status::{CauseGroup, Point, StatusView, UpstreamPoint};

/// Internals exposed for the criterion benchmarks only; not a stable API.
#[doc(hidden)]
pub mod bench_api {
    pub use crate::ratelimit::RatePolicy;
    pub use crate::router::Router;
}
/// Entry points for the fuzz targets (`fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzz_api {
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// Routes a request with this Host header and target through a router
    /// of exact, wildcard and catch-all routes with several prefixes.
    pub fn route(host: &[u8], target: &[u8]) -> Option<usize> {
        use waygate_config::{HostMatch, RouteConfig};
        let route = |host: HostMatch, prefix: &str| RouteConfig {
            name: prefix.into(),
            host,
            path_prefix: prefix.into(),
            listener: None,
            upstream: 0,
            rate_limit: None,
            priority: Default::default(),
        };
        let routes = [
            route(HostMatch::Exact("api.example.com".into()), "/v1"),
            route(HostMatch::Suffix(".example.com".into()), "/"),
            route(HostMatch::Any, "/static/"),
            route(HostMatch::Any, "/"),
        ];
        let router = crate::router::Router::new(&routes, 0);
        let uri: http::Uri = std::str::from_utf8(target).ok()?.parse().ok()?;
        let header = std::str::from_utf8(host).ok();
        let host = crate::router::route_host(uri.host(), header);
        router.find(&host, uri.path()).map(|r| r.index)
    }

    /// Every header-value parser of ours on `value`: an upstream's
    /// `Keep-Alive` timeout, a trusted `X-Request-Id`, the `Accept`
    /// negotiation of error pages.
    pub fn header_values(value: &[u8]) {
        let _ = crate::pool::keepalive_timeout(value);
        let _ = waygate_core::RequestId::parse(value);
        let _ = crate::negotiate::choose(Some(value));
    }

    /// Runs the request-header checks and rewrites of the forwarder on
    /// headers made from `(name, value)` pairs, from a trusted peer or not;
    /// the result must still be a valid header map.
    pub fn forwarding(pairs: &[(&[u8], &[u8])], trusted: bool) -> HeaderMap {
        let mut req = http::Request::new(());
        for (n, v) in pairs {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                req.headers_mut().append(n, v);
            }
        }
        let _ = crate::headers::check_request(&req);
        let headers = req.headers_mut();
        crate::headers::remove_hop_by_hop(headers);
        let host = headers.get(http::header::HOST).cloned();
        let peer = crate::headers::peer_value(std::net::IpAddr::from([192, 0, 2, 1]));
        crate::headers::set_forwarding(
            headers,
            &peer,
            trusted,
            host.as_ref(),
            &HeaderValue::from_static("1.1 waygate"),
            false,
        );
        std::mem::take(headers)
    }
}

pub use waygate_upstream::AdminState;
