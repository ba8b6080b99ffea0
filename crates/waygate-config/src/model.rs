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
/// Default for `pool_idle_timeout`.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `pool_max_idle`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default for `max_response_header_size` (hyper's own floor is 8 KiB).
pub const DEFAULT_MAX_RESPONSE_HEADER_SIZE: usize = 64 * 1024;
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

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    pub access_log: AccessLogTarget,
    pub gateway: GatewayConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    /// Replacement error pages by status.
    pub error_pages: HashMap<u16, ErrorPage>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub name: String,
    pub trusted_proxies: Vec<IpNet>,
    pub drain_timeout: Duration,
    pub expose_upstream_addresses: bool,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostMatch,
    /// Always starts with `/`.
    pub path_prefix: String,
    /// Index into `Config::listeners`; `None` means every listener.
    pub listener: Option<usize>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
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

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub servers: Vec<ServerAddr>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub max_response_header_size: usize,
    pub head_hold: Duration,
}

/// A server as configured: a host (IP or DNS name) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub path: PathBuf,
    pub template: String,
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

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}
