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
    /// Named rate-limit policies, attached to routes by `rate_limit`.
    #[serde(default)]
    pub rate_limit: BTreeMap<Spanned<String>, Spanned<RawRateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What counts as one client: `client_ip` (default), `route`,
    /// `header:<name>`, or several joined with `+` (`client_ip+route`).
    pub key: Option<Spanned<String>>,
    /// Requests allowed per `per`.
    pub rate: Spanned<u32>,
    /// The period of `rate` (default 1s).
    pub per: Option<Duration>,
    /// Requests allowed at once above the steady rate (default: `rate`).
    pub burst: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener; loopback unless `token` is set.
    pub listen: Spanned<String>,
    /// Bearer token required on every admin request; mandatory when `listen`
    /// is not a loopback address.
    pub token: Option<String>,
    /// How many recent gateway errors are kept for `waygate why` (default 1024).
    pub error_ring: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `"stdout"` (default), `"off"`, or a file path (appended to; reopened on SIGUSR1).
    pub target: Spanned<String>,
    /// `"json"` (default) or `"combined"` (nginx-like text).
    pub format: Option<Spanned<String>>,
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
    /// Most open client connections over all listeners together.
    pub max_connections: Option<Spanned<u32>>,
    /// Reload when the config file changes (checked every second).
    pub watch: Option<bool>,
    /// Reload when a certificate, key or CA file changes (checked every
    /// second; default true).
    pub watch_tls: Option<bool>,
    /// Unix socket for binary upgrades (default: in the temp directory,
    /// named after the config file's path).
    pub upgrade_socket: Option<String>,
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
    /// Path of a public status page served on this listener (e.g. "/_status").
    pub status_page: Option<Spanned<String>>,
    /// Largest request line + headers, in bytes (over it: 431).
    pub max_header_size: Option<Spanned<usize>>,
    /// Most request headers (over it: 431).
    pub max_headers: Option<Spanned<usize>>,
    /// Largest request body, in bytes (over it: 413). Unlimited if absent.
    pub max_request_body_size: Option<Spanned<u64>>,
    /// Most open client connections on this listener (default 10000).
    pub max_connections: Option<Spanned<u32>>,
    /// Most open connections from one client IP (unlimited if absent).
    pub max_connections_per_ip: Option<Spanned<u32>>,
    /// Requests served on one keep-alive connection before it is closed (default 1000).
    pub max_requests_per_connection: Option<Spanned<u32>>,
    /// Accept HTTP/2: ALPN `h2` over TLS, prior knowledge (h2c) in clear (default true).
    pub http2: Option<bool>,
    /// Most concurrent HTTP/2 streams per connection (default 100).
    pub max_concurrent_streams: Option<Spanned<u32>>,
    /// HTTP/2 flow-control window of each stream, in bytes (default 1 MiB):
    /// the most request body a client may send ahead on one stream.
    pub http2_stream_window: Option<Spanned<u32>>,
    /// HTTP/2 flow-control window of a whole connection (default 2 MiB).
    pub http2_connection_window: Option<Spanned<u32>>,
    /// TLS certificates (`[[listener.tls]]`): present, the listener speaks
    /// HTTPS; the certificate is chosen by SNI, the first is the default.
    #[serde(default)]
    pub tls: Vec<Spanned<RawTls>>,
    /// Answer every request with a redirect to the same URL over HTTPS.
    pub redirect_https: Option<Spanned<bool>>,
    /// The HTTPS port redirects point to (default 443).
    pub https_port: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file: the certificate, then its chain.
    pub cert: Spanned<String>,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
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
    /// A `[rate_limit.<name>]` policy applied to matching requests.
    pub rate_limit: Option<Spanned<String>>,
    /// Queue priority: `high`, `normal` (default) or `low`.
    pub priority: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `host:port` of each server (IP or DNS name), optionally followed by
    /// ` weight=N` (1 to 1000, default 1).
    pub servers: Spanned<Vec<Spanned<String>>>,
    /// Balancing policy: `ewma` (default), `round_robin`, `least_request`, `hash`, `random`.
    pub balance: Option<Spanned<String>>,
    /// What `hash` balancing hashes: `client_ip` (default), `path`,
    /// `header:<name>` or `cookie:<name>`.
    pub hash_key: Option<Spanned<String>>,
    /// Bounded load for `hash`: no server takes more than this factor times
    /// the average in-flight load (default 1.25).
    pub hash_balance_factor: Option<Spanned<f64>>,
    /// Window over which a server that becomes healthy ramps up to its full share.
    pub slow_start: Option<Duration>,
    /// How often servers given by host name are resolved again (default 30s).
    pub dns_refresh: Option<Duration>,
    /// Active health checks.
    pub health_check: Option<Spanned<RawHealthCheck>>,
    /// Passive health: eject servers that keep failing.
    pub outlier_detection: Option<RawOutlier>,
    /// Retries on another server.
    pub retry: Option<RawRetry>,
    /// Circuit-breaking limits for the whole upstream.
    pub limits: Option<RawLimits>,
    /// A concurrency limit learned from latency (present: enabled).
    pub adaptive_concurrency: Option<Spanned<RawAdaptive>>,
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
    /// Most header fields accepted in a response head.
    pub max_response_headers: Option<Spanned<usize>>,
    /// How long to wait for the first body bytes before committing the
    /// response head, so a body broken from its first byte becomes a 502.
    pub head_hold: Option<Duration>,
    /// Protocol spoken to the servers: `http1` (default), `h2` (HTTP/2 over
    /// TLS) or `h2c` (HTTP/2 in clear text, prior knowledge).
    pub protocol: Option<Spanned<String>>,
    /// Connect to the servers over TLS (default false; `h2` implies it).
    pub tls: Option<Spanned<bool>>,
    /// Name sent as SNI and checked in the server's certificate (default:
    /// the server's host).
    pub tls_server_name: Option<Spanned<String>>,
    /// PEM file of the CAs the servers' certificates must chain to
    /// (default: the system's roots).
    pub tls_ca: Option<Spanned<String>>,
    /// PEM file of a client certificate (mutual TLS); needs `tls_client_key`.
    pub tls_client_cert: Option<Spanned<String>>,
    /// PEM file of the client certificate's private key.
    pub tls_client_key: Option<Spanned<String>>,
    /// Longest time an upgraded connection (WebSocket) may carry no byte
    /// either way before it is closed (default 1h).
    pub tunnel_idle_timeout: Option<Spanned<Duration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `http` (default) or `tcp` (connect only).
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    /// Path of the HTTP GET (default `/`).
    pub path: Option<Spanned<String>>,
    /// Host header of the check (default: the server's address).
    pub host: Option<String>,
    /// Time between checks of one server (default 5s).
    pub interval: Option<Spanned<Duration>>,
    /// Random extra delay added to each interval, up to this (default 10% of interval).
    pub jitter: Option<Duration>,
    /// Longest time for one check (default 2s).
    pub timeout: Option<Spanned<Duration>>,
    /// Statuses that count as healthy: numbers or "200-399" ranges (default ["200-399"]).
    pub expected_statuses: Option<Vec<Spanned<toml::Value>>>,
    /// Consecutive successes to become healthy (default 2).
    pub rise: Option<Spanned<u32>>,
    /// Consecutive failures to become unhealthy (default 3).
    pub fall: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    /// Consecutive failures (connect errors, timeouts, 5xx) that eject a server (default 5; 0 disables).
    pub consecutive_failures: Option<u32>,
    /// First ejection time; doubles with each repeated ejection (default 10s).
    pub base_ejection_time: Option<Duration>,
    /// Longest ejection (default 5m).
    pub max_ejection_time: Option<Duration>,
    /// Most servers (percent) that passive detection may eject at once (default 50).
    pub max_ejection_percent: Option<Spanned<u32>>,
    /// Below this percentage of available servers, panic mode spreads load
    /// over every enabled server (default 50; 0 disables).
    pub panic_threshold: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Most attempts per request, the first included (default 2; 1 disables retries).
    pub max_attempts: Option<Spanned<u32>>,
    /// Time limit of each attempt's response head (default: the response timeout).
    pub per_try_timeout: Option<Duration>,
    /// Upstream statuses that are retried for idempotent requests (default [502, 503, 504]).
    pub on_statuses: Option<Vec<Spanned<u16>>>,
    /// First back-off before a retry; doubles per retry, with full jitter (default 25ms).
    pub backoff_base: Option<Duration>,
    /// Longest back-off (default 250ms).
    pub backoff_max: Option<Duration>,
    /// Retries may add at most this percentage to the request rate (default 20).
    pub budget_percent: Option<Spanned<u32>>,
    /// Retries always allowed per second regardless of the percentage (default 10).
    pub budget_min_per_second: Option<u32>,
    /// Largest request body kept in memory so it can be replayed (default 65536).
    pub max_replay_body: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    /// The limit never goes below this (default 3).
    pub min_limit: Option<Spanned<u32>>,
    /// ... nor above this (default 1000).
    pub max_limit: Option<Spanned<u32>>,
    /// The limit to start from (default 20).
    pub initial_limit: Option<Spanned<u32>>,
    /// How often the limit is recomputed from latency (default 100ms).
    pub interval: Option<Spanned<Duration>>,
    /// How often the unloaded latency is measured again (default 30s).
    pub min_rtt_interval: Option<Spanned<Duration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Most open connections to the upstream's servers together.
    pub max_connections: Option<Spanned<u32>>,
    /// Most requests in flight to the upstream.
    pub max_requests: Option<Spanned<u32>>,
    /// Most requests waiting for a connection when `max_connections` is reached.
    pub max_pending: Option<u32>,
    /// Most requests in flight on one server; more wait in the queue.
    pub max_in_flight_per_server: Option<Spanned<u32>>,
    /// Most requests waiting in the queue (default 1024).
    pub max_queue: Option<u32>,
    /// Longest wait in the queue (default 1s).
    pub queue_timeout: Option<Duration>,
}
