//! The validated configuration. Every name reference is resolved to an
//! index, every default is filled in, and every value is in range.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use ipnet::IpNet;

/// Default for `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default for `response_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `body_idle_timeout`.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `pool_idle_timeout`: below the 5 s keep-alive timeout of
/// Node.js, Apache httpd and uvicorn, so the gateway closes an idle
/// connection before the server does (the keep-alive race).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Default for `pool_max_idle`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default for `max_response_header_size` (hyper's own floor is 8 KiB).
pub const DEFAULT_MAX_RESPONSE_HEADER_SIZE: usize = 64 * 1024;
/// Default for `max_response_headers`: hyper's own default (HAProxy's
/// `tune.http.maxhdr` is 101). A larger limit makes hyper allocate its
/// parse arrays per response instead of keeping them on the stack.
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 100;
/// Default for `head_hold`.
pub const DEFAULT_HEAD_HOLD: Duration = Duration::from_millis(50);
/// Default for `client_header_timeout`.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default gateway name, used in `Via` and `Proxy-Status`.
pub const DEFAULT_NAME: &str = "waygate";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogTarget,
    pub access_log_format: AccessLogFormat,
    pub gateway: GatewayConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    /// Replacement error pages by status.
    pub error_pages: HashMap<u16, ErrorPage>,
    pub rate_limits: Vec<RateLimitConfig>,
}

impl Config {
    /// Every certificate, key and CA file the config reads: what
    /// `watch_tls` watches.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let pair = |c: &TlsCertificate| [c.cert_path.clone(), c.key_path.clone()];
        let mut out: Vec<PathBuf> = self
            .listeners
            .iter()
            .flat_map(|l| l.tls.iter().flat_map(pair))
            .collect();
        for t in self.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
            out.extend(t.ca_path.clone());
            out.extend(t.client_cert.iter().flat_map(pair));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A named rate-limit policy (GCRA).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub name: String,
    pub key: Vec<RateKey>,
    pub rate: u32,
    pub per: Duration,
    pub burst: u32,
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    ClientIp,
    Route,
    /// Lowercase header name.
    Header(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// Gateway errors kept for `waygate why`.
    pub error_ring: usize,
}

/// Default `[admin] error_ring`.
pub const DEFAULT_ERROR_RING: usize = 1024;

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    #[default]
    Json,
    /// nginx's "combined" format followed by the request id, status side and cause.
    Combined,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub name: String,
    pub trusted_proxies: Vec<IpNet>,
    pub drain_timeout: Duration,
    pub expose_upstream_addresses: bool,
    /// Most open client connections over all listeners together.
    pub max_connections: u32,
    /// Reload when the config file changes.
    pub watch: bool,
    /// Reload when a TLS file (certificate, key, CA) changes.
    pub watch_tls: bool,
    /// Unix socket for binary upgrades; `None`: derived from the config path.
    pub upgrade_socket: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Path of the public status page on this listener, if any.
    pub status_page: Option<String>,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub max_request_body_size: Option<u64>,
    pub max_connections: u32,
    pub max_connections_per_ip: Option<u32>,
    pub max_requests_per_connection: u32,
    /// Certificates, by SNI (the first is the default); empty: plain HTTP.
    pub tls: Vec<TlsCertificate>,
    /// Accept HTTP/2 (ALPN `h2`, or h2c with prior knowledge).
    pub http2: bool,
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows (bytes): per stream, per connection.
    pub http2_stream_window: u32,
    pub http2_connection_window: u32,
    /// `Some(port)`: every request is redirected to HTTPS on that port.
    pub redirect_https: Option<u16>,
}

/// Default `max_connections` per listener.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Default for `[gateway] max_connections`, over all listeners.
pub const DEFAULT_GLOBAL_MAX_CONNECTIONS: u32 = 100_000;
/// Default `max_requests_per_connection` (nginx's `keepalive_requests`).
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u32 = 1000;

/// Default `max_header_size` (nginx: 4 × 8 KiB large header buffers).
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// Default `max_headers` (hyper's and HAProxy's order of magnitude).
pub const DEFAULT_MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostMatch,
    /// Always starts with `/`.
    pub path_prefix: String,
    /// Index into `Config::listeners`; `None` means every listener.
    pub listener: Option<usize>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Index into `Config::rate_limits`.
    pub rate_limit: Option<usize>,
    /// Who goes first in an upstream's queue.
    pub priority: Priority,
}

/// A route's class in upstream queues: a waiting request is served only
/// when no request of a higher class waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    High = 0,
    #[default]
    Normal = 1,
    Low = 2,
}

/// How a route matches the request's host (compared without port, lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com`
    /// and `a.b.example.com`, not `example.com`.
    Suffix(String),
}

/// Default `dns_refresh`.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Default `hash_balance_factor`.
pub const DEFAULT_HASH_BALANCE_FACTOR: f64 = 1.25;
/// Default health check interval, timeout, rise and fall.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// Default outlier detection.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;
/// Default retries.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
pub const DEFAULT_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;
/// Default `max_pending` when `max_connections` is set.
pub const DEFAULT_MAX_PENDING: u32 = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
    pub balance: Balance,
    pub slow_start: Option<Duration>,
    /// How often host-name servers are resolved again.
    pub dns_refresh: Duration,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: OutlierConfig,
    pub retry: RetryConfig,
    pub limits: LimitsConfig,
    pub adaptive: Option<AdaptiveConfig>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub max_response_header_size: usize,
    pub max_response_headers: usize,
    pub head_hold: Duration,
    pub protocol: UpstreamProtocol,
    /// Present: connections to the servers use TLS.
    pub tls: Option<UpstreamTls>,
    pub tunnel_idle_timeout: Duration,
}

/// Default `tunnel_idle_timeout`.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The HTTP version spoken to an upstream's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 in clear text with prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// TLS to an upstream's servers, with its files read and checked at load.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// SNI and the name checked in certificates; `None`: each server's host.
    pub server_name: Option<String>,
    /// Trusted CAs (DER); `None`: the system's roots.
    pub ca: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub client_cert: Option<TlsCertificate>,
}

/// One server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub addr: ServerAddr,
    /// 1..=1000.
    pub weight: u32,
}

/// The balancing policy of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Ewma,
    Random,
    Hash { key: HashKey, balance_factor: f64 },
}

/// What the `hash` policy hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    /// Lowercase header name.
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub jitter: Duration,
    pub timeout: Duration,
    /// Inclusive ranges of healthy statuses.
    pub expected_statuses: Vec<(u16, u16)>,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http { path: String, host: Option<String> },
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// 0 disables passive ejection.
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// 0 disables panic mode.
    pub panic_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub on_statuses: Vec<u16>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget_percent: u32,
    pub budget_min_per_second: u32,
    pub max_replay_body: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsConfig {
    pub max_connections: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_pending: u32,
    pub max_in_flight_per_server: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout: Duration,
}

/// A certificate and its key, read and checked at load.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsCertificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The end-entity certificate first, then its chain (DER).
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The private key file's PEM text.
    pub key_pem: Vec<u8>,
    /// DNS names it is valid for (subjectAltName, else the common name),
    /// lowercase; `*.example.com` for wildcards.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
}

/// `[upstream.<name>.adaptive_concurrency]`: a limit on requests in flight
/// learned from latency.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    pub min_limit: u32,
    pub max_limit: u32,
    pub initial_limit: u32,
    pub interval: Duration,
    pub min_rtt_interval: Duration,
}

/// A server as configured: a host (IP or DNS name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPage {
    pub path: PathBuf,
    pub template: String,
}

// === impl HealthCheckConfig ===

impl HealthCheckConfig {
    pub fn is_expected(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }
}

// === impl Balance ===

impl Balance {
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequest => "least_request",
            Balance::Ewma => "ewma",
            Balance::Random => "random",
            Balance::Hash { .. } => "hash",
        }
    }
}

// === impl HostMatch ===

impl HostMatch {
    /// Whether `host` (lowercase, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }

    /// Higher is more specific: exact > longer wildcard > any.
    pub fn specificity(&self) -> usize {
        match self {
            HostMatch::Any => 0,
            HostMatch::Suffix(s) => 1 + s.len(),
            HostMatch::Exact(_) => usize::MAX,
        }
    }
}

// === impl ServerAddr ===

impl ServerAddr {
    /// The host is an IP address (no DNS lookup needed).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
