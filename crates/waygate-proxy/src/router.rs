//! Route matching: a listener's routes, pre-sorted so the first match is the
//! most specific one: host first (exact, then the longest wildcard, then
//! any host, as nginx picks a server block before a location), then the
//! longest path prefix, then configuration order.

use std::borrow::Cow;
use std::sync::Arc;

use waygate_config::{HostMatch, RouteConfig};

#[derive(Debug)]
pub struct Router {
    routes: Vec<RouteEntry>,
}

#[derive(Debug)]
pub struct RouteEntry {
    /// Position in the config's routes.
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    host: HostMatch,
    prefix: String,
    pub(crate) upstream: usize,
    /// Index into the runtime's rate-limit policies.
    pub(crate) rate_limit: Option<usize>,
    pub(crate) priority: waygate_config::Priority,
}

// === impl Router ===

impl Router {
    /// The routes of `listener` (an index into the config's listeners).
    pub fn new(routes: &[RouteConfig], listener: usize) -> Self {
        let mut routes: Vec<(usize, RouteEntry)> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.listener.is_none_or(|l| l == listener))
            .map(|(index, r)| RouteEntry {
                index,
                name: r.name.as_str().into(),
                host: r.host.clone(),
                prefix: r.path_prefix.clone(),
                upstream: r.upstream,
                rate_limit: r.rate_limit,
                priority: r.priority,
            })
            .enumerate()
            .collect();
        routes.sort_by(|(ia, a), (ib, b)| {
            b.host
                .specificity()
                .cmp(&a.host.specificity())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(ia.cmp(ib))
        });
        Self {
            routes: routes.into_iter().map(|(_, r)| r).collect(),
        }
    }

    /// The most specific route for `host` (lowercase, without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&RouteEntry> {
        self.routes
            .iter()
            .find(|r| path.starts_with(r.prefix.as_str()) && r.host.matches(host))
    }
}

/// The host of a request for routing: lowercase, without port or brackets'
/// port, from the URI authority (absolute-form) or the Host header.
pub(crate) fn route_host<'a>(
    uri_host: Option<&'a str>,
    host_header: Option<&'a str>,
) -> Cow<'a, str> {
    let raw = match uri_host {
        Some(h) => h,
        None => match host_header {
            Some(h) => strip_port(h),
            None => "",
        },
    };
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    }
}

fn strip_port(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: HostMatch, prefix: &str, listener: Option<usize>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            host,
            path_prefix: prefix.into(),
            listener,
            upstream: 0,
            rate_limit: None,
            priority: Default::default(),
        }
    }

    #[test]
    fn longest_prefix_and_most_specific_host_win() {
        let routes = vec![
            route("root", HostMatch::Any, "/", None),
            route("down", HostMatch::Any, "/down", None),
            route("wild", HostMatch::Suffix(".example.com".into()), "/", None),
            route(
                "exact",
                HostMatch::Exact("api.example.com".into()),
                "/",
                None,
            ),
            route("other-listener", HostMatch::Any, "/admin", Some(1)),
        ];
        let r = Router::new(&routes, 0);
        let name = |h: &str, p: &str| r.find(h, p).map(|e| e.name.to_string());
        assert_eq!(name("x.org", "/"), Some("root".into()));
        assert_eq!(name("x.org", "/down/there"), Some("down".into()));
        assert_eq!(name("x.org", "/downloads"), Some("down".into()));
        assert_eq!(name("www.example.com", "/down"), Some("wild".into()));
        assert_eq!(name("a.b.example.com", "/"), Some("wild".into()));
        assert_eq!(name("example.com", "/"), Some("root".into()));
        assert_eq!(name("api.example.com", "/down"), Some("exact".into()));
        assert_eq!(name("x.org", "/admin"), Some("root".into()));
        assert_eq!(
            Router::new(&routes, 1)
                .find("x.org", "/admin")
                .map(|e| &*e.name),
            Some("other-listener")
        );
        let none = Router::new(&routes[1..2], 0);
        assert!(none.find("x.org", "/").is_none());
    }

    #[test]
    fn host_is_normalized() {
        assert_eq!(route_host(None, Some("Example.COM:8080")), "example.com");
        assert_eq!(route_host(None, Some("[::1]:8080")), "::1");
        assert_eq!(route_host(None, Some("example.com.")), "example.com");
        assert_eq!(route_host(Some("a.org"), Some("b.org")), "a.org");
        assert_eq!(route_host(None, None), "");
    }
}
