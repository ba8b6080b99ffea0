//! The config file as written: serde structs that reject unknown keys and
//! keep the position (`Spanned`) of every value that validation may need to
//! point at. Field docs here are the user docs (see the README).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The admin listener (metrics, status, reload). Optional.
    pub admin: Option<RawAdmin>,
    /// Where the access log goes.
    pub access_log: Option<RawAccessLog>,
    /// Process-wide settings.
    pub gateway: Option<RawGateway>,
    /// Addresses the gateway accepts client connections on.
    #[serde(default)]
    pub listener: Vec<Spanned<RawListener>>,
    /// Rules mapping a request (listener, host, path) to an upstream.
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// Named groups of servers.
    #[serde(default)]
    pub upstream: BTreeMap<Spanned<String>, Spanned<RawUpstream>>,
    /// Operator templates that replace the built-in error page, by status.
    #[serde(default)]
    pub error_pages: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; loopback unless `token` is set.
    pub listen: Spanned<String>,
    /// Bearer token required on every admin request; mandatory when `listen`
    /// is not a loopback address.
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `"stdout"` (default), `"off"`, or a file path (appended to).
    pub target: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Peers (IPs or CIDRs) whose X-Forwarded-* and X-Request-Id headers are
    /// kept; everyone else's are overwritten.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub drain_timeout: Option<Duration>,
    /// Show upstream server addresses in error bodies (default false).
    pub expose_upstream_addresses: Option<bool>,
    /// The name this gateway gives itself in `Via` and `Proxy-Status`.
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Unique name, referenced by routes' `listener`.
    pub name: Spanned<String>,
    /// `ip:port` to bind.
    pub listen: Spanned<String>,
    /// Longest time to receive a complete request head once its first byte arrived.
    pub client_header_timeout: Option<Duration>,
    /// Longest time an idle keep-alive connection is kept open between requests.
    pub keepalive_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Optional name for logs; defaults to `route<N>` (1-based position).
    pub name: Option<Spanned<String>>,
    /// Exact host (`api.example.com`) or wildcard (`*.example.com`); any host if absent.
    pub host: Option<Spanned<String>>,
    /// Path prefix the request path must start with (default `/`).
    pub path_prefix: Option<Spanned<String>>,
    /// Only match requests on this listener (default: all listeners).
    pub listener: Option<Spanned<String>>,
    /// The upstream that serves matching requests.
    pub upstream: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `host:port` of each server (IP or DNS name).
    pub servers: Spanned<Vec<Spanned<String>>>,
    /// Longest time to establish a TCP connection (including DNS).
    pub connect_timeout: Option<Spanned<Duration>>,
    /// Longest time from the end of the request to the response head.
    pub response_timeout: Option<Spanned<Duration>>,
    /// Longest pause while receiving the response body.
    pub body_idle_timeout: Option<Spanned<Duration>>,
    /// How long an idle upstream connection stays in the pool.
    pub pool_idle_timeout: Option<Duration>,
    /// Idle connections kept per server.
    pub pool_max_idle: Option<usize>,
    /// Largest response head accepted, in bytes.
    pub max_response_header_size: Option<Spanned<usize>>,
    /// How long to wait for the first body bytes before committing the
    /// response head, so a body broken from its first byte becomes a 502.
    pub head_hold: Option<Duration>,
}
