//! Runtime state built from a validated [`Config`]: per-listener routers,
//! upstreams with their servers and pools, the responder and the access
//! log. Built once, shared read-only by every request (`Arc`), so the
//! request path takes no lock and does no config lookup.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::Notify;
use waygate_config::{
    Balance, Config, HashKey, HealthCheckConfig, IpNet, OutlierConfig, RetryConfig, ServerConfig,
    UpstreamConfig,
};
use waygate_core::RequestIdGenerator;
use waygate_resilience::{Limits, RetryBudget};
use waygate_telemetry::{AccessLog, ErrorRing, DEFAULT_ERROR_RING};
use waygate_upstream::{ServerSet, ServerState};

use crate::metrics::Metrics;
use crate::pool::Server;
use crate::respond::Responder;
use crate::router::Router;

/// A gateway ready to bind and serve, and to reload while serving.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
}

/// What every connection and request of a gateway shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current generation of runtime state. A request loads it once
    /// and finishes on it, whatever reloads happen meanwhile.
    pub(crate) current: ArcSwap<Runtime>,
    pub(crate) reload: crate::reload::ReloadState,
    /// A duplicate of each listening socket, by listener name, to hand over
    /// to a new process in a binary upgrade.
    pub(crate) sockets: std::sync::Mutex<Vec<(Arc<str>, std::os::fd::OwnedFd)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid gateway name `{0}` for the Via header")]
    InvalidName(String),
    #[error("TLS on listener `{0}`: {1}")]
    Tls(String, String),
}

/// One generation of runtime state, built from one config. Whatever did not
/// change is carried over from the previous generation (see [`Runtime::new`]).
#[derive(Debug)]
pub(crate) struct Runtime {
    /// The config this generation was built from.
    pub(crate) config: Arc<Config>,
    /// 1 for the config loaded at start, +1 per successful reload.
    pub(crate) generation: u64,
    pub(crate) listeners: Vec<ListenerRt>,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) trusted: Vec<IpNet>,
    /// `1.1 <name>` for `Via`.
    pub(crate) via: HeaderValue,
    pub(crate) responder: Responder,
    pub(crate) access_log: AccessLog,
    /// The last gateway errors, for `/errors/<id>` and `waygate why`.
    pub(crate) errors: Arc<ErrorRing>,
    pub(crate) metrics: Metrics,
    pub(crate) rate_limits: Vec<Arc<crate::ratelimit::RatePolicy>>,
    pub(crate) history: Arc<crate::status::History>,
    /// How often the status history is sampled.
    pub(crate) sample_every: Duration,
    pub(crate) ids: Arc<RequestIdGenerator>,
    pub(crate) drain_timeout: Duration,
    pub(crate) expose_addresses: bool,
    /// `[gateway] max_connections`, over all listeners.
    pub(crate) max_connections: u32,
}

#[derive(Debug)]
pub(crate) struct ListenerRt {
    pub(crate) name: Arc<str>,
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) router: Router,
    pub(crate) client_header_timeout: Duration,
    pub(crate) keepalive_timeout: Duration,
    /// Path of the public status page, if this listener has one.
    pub(crate) status_page: Option<Arc<str>>,
    /// Every request is redirected to HTTPS on this port.
    pub(crate) redirect_https: Option<u16>,
    /// Indices of the upstreams this listener's routes use, with the route names.
    pub(crate) services: Vec<(Arc<str>, usize)>,
    pub(crate) max_header_size: usize,
    pub(crate) max_headers: usize,
    pub(crate) max_request_body_size: Option<u64>,
    pub(crate) max_connections: u32,
    pub(crate) max_connections_per_ip: Option<u32>,
    pub(crate) max_requests_per_connection: u32,
    /// Kept across reloads while the listener keeps its name.
    pub(crate) counters: Arc<ListenerCounters>,
    /// Present: the listener speaks HTTPS.
    pub(crate) tls: Option<crate::tls::Acceptor>,
    pub(crate) http2: bool,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) http2_stream_window: u32,
    pub(crate) http2_connection_window: u32,
}

/// A listener's connection counts, which outlive config generations.
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    /// Open client connections on this listener.
    pub(crate) open: std::sync::atomic::AtomicU32,
    /// Open connections per client IP (only when `max_connections_per_ip`
    /// is set); touched once per connection, never per request.
    pub(crate) per_ip: std::sync::Mutex<HashMap<std::net::IpAddr, u32>>,
    /// Connections refused: [listener limit, per-IP limit, gateway limit].
    pub(crate) refused: [std::sync::atomic::AtomicU64; 3],
}

#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: Arc<str>,
    /// The current servers; swapped atomically when DNS answers change.
    /// A request loads it once and keeps that snapshot for all its attempts.
    pub(crate) members: ArcSwap<Members>,
    /// The servers as configured (host names unresolved).
    pub(crate) entries: Vec<ServerConfig>,
    pub(crate) dns_refresh: Duration,
    pub(crate) balance_cfg: Balance,
    pub(crate) slow_start: Option<Duration>,
    pub(crate) outlier: OutlierConfig,
    /// How connections are made and pooled (protocol, TLS).
    pub(crate) pool: Arc<crate::pool::PoolSettings>,
    /// Longest silence of an upgraded connection (WebSocket).
    pub(crate) tunnel_idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) body_idle_timeout: Duration,
    pub(crate) head_hold: Duration,
    pub(crate) hash_key: Option<HashKey>,
    pub(crate) retry: RetryConfig,
    pub(crate) budget: RetryBudget,
    pub(crate) limits: Limits,
    /// The concurrency limit learned from latency, if configured.
    pub(crate) adaptive: Option<waygate_resilience::AdaptiveLimit>,
    pub(crate) released: Arc<Notify>,
    pub(crate) health_check: Option<HealthCheckConfig>,
    pub(crate) balance: &'static str,
    /// Open connections to this upstream's servers.
    pub(crate) conn_count: Arc<AtomicI64>,
    /// Of those, the parked ones (a socket without an HTTP connection).
    pub(crate) parked_count: Arc<AtomicI64>,
    /// Requests waiting for a server below its in-flight limit.
    pub(crate) queue: Option<Queue>,
    pub(crate) max_in_flight_per_server: Option<u32>,
    /// Last state shown on public status pages, and since when (Unix s).
    pub(crate) public_state: std::sync::atomic::AtomicU8,
    pub(crate) public_since: std::sync::atomic::AtomicU64,
}

// === impl Gateway ===

impl Gateway {
    pub fn build(config: &Config, access_log: AccessLog) -> Result<Self, BuildError> {
        let rt = Runtime::new(config, Base::Fresh(access_log))?;
        Ok(Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(rt),
                reload: crate::reload::ReloadState::default(),
                sockets: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// The current generation.
    pub(crate) fn rt(&self) -> Arc<Runtime> {
        self.shared.current.load_full()
    }

    pub fn drain_timeout(&self) -> Duration {
        self.shared.current.load().drain_timeout
    }

    /// Samples the status history this often instead of every 10 s (for
    /// tests and demos). Call before serving.
    pub fn with_sample_interval(self, every: Duration) -> Self {
        let rt = self.rt();
        if let Ok(next) = Runtime::new(&rt.config, Base::Previous(&rt)) {
            let next = Runtime {
                sample_every: every,
                generation: rt.generation,
                ..next
            };
            self.shared.current.store(Arc::new(next));
        }
        self
    }
}

/// What a new generation starts from.
pub(crate) enum Base<'a> {
    /// Nothing: the config loaded at start.
    Fresh(AccessLog),
    /// A running generation whose unchanged parts are carried over.
    Previous(&'a Runtime),
}

// === impl Runtime ===

impl Runtime {
    /// Builds a generation from `config`. From a previous generation it
    /// keeps: listeners' connection counts (by name), upstreams whose
    /// config did not change (as they are: servers, health, pools,
    /// counters), the servers of changed upstreams that kept their address
    /// and weight (health, ejections, latency, admin state, and their pools
    /// when the pool settings did not change), rate-limit state of
    /// unchanged policies, metrics by label set, the error ring, the
    /// status history and the request-id sequence.
    pub(crate) fn new(config: &Config, base: Base<'_>) -> Result<Self, BuildError> {
        let g = &config.gateway;
        let via = HeaderValue::from_str(&format!("1.1 {}", g.name))
            .map_err(|_| BuildError::InvalidName(g.name.clone()))?;
        let prev = match &base {
            Base::Fresh(_) => None,
            Base::Previous(p) => Some(*p),
        };
        let mut acceptors = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            acceptors.push(match l.tls.is_empty() {
                true => None,
                false => Some(
                    crate::tls::acceptor(&l.tls, l.http2)
                        .map_err(|e| BuildError::Tls(l.name.clone(), e))?,
                ),
            });
        }
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let old = prev.and_then(|p| p.listeners.iter().find(|o| *o.name == *l.name));
                ListenerRt {
                    name: old.map_or_else(|| l.name.as_str().into(), |o| o.name.clone()),
                    listen: l.listen,
                    router: Router::new(&config.routes, i),
                    client_header_timeout: l.client_header_timeout,
                    keepalive_timeout: l.keepalive_timeout,
                    status_page: l.status_page.as_deref().map(Arc::from),
                    redirect_https: l.redirect_https,
                    max_header_size: l.max_header_size,
                    max_headers: l.max_headers,
                    max_request_body_size: l.max_request_body_size,
                    max_connections: l.max_connections,
                    max_connections_per_ip: l.max_connections_per_ip,
                    max_requests_per_connection: l.max_requests_per_connection,
                    counters: old.map_or_else(Arc::default, |o| o.counters.clone()),
                    tls: acceptors[i].clone(),
                    http2: l.http2,
                    max_concurrent_streams: l.max_concurrent_streams,
                    http2_stream_window: l.http2_stream_window,
                    http2_connection_window: l.http2_connection_window,
                    services: config
                        .routes
                        .iter()
                        .filter(|r| r.listener.is_none_or(|li| li == i))
                        .map(|r| (Arc::from(r.name.as_str()), r.upstream))
                        .collect(),
                }
            })
            .collect();
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let old = prev.and_then(|p| {
                    let i = p.config.upstreams.iter().position(|o| o.name == u.name)?;
                    Some((&p.config.upstreams[i], &p.upstreams[i]))
                });
                match old {
                    Some((cfg, up)) if cfg == u => up.clone(),
                    _ => Arc::new(Upstream::new(u, old)),
                }
            })
            .collect();
        let pages: HashMap<u16, String> = config
            .error_pages
            .iter()
            .map(|(k, v)| (*k, v.template.clone()))
            .collect();
        let listener_names: Vec<Arc<str>> = config
            .listeners
            .iter()
            .map(|l| l.name.as_str().into())
            .collect();
        let route_names: Vec<(Arc<str>, Arc<str>, usize)> = config
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.as_str().into(),
                    config.upstreams[r.upstream].name.as_str().into(),
                    r.upstream,
                )
            })
            .collect();
        let upstream_names: Vec<Arc<str>> = config
            .upstreams
            .iter()
            .map(|u| u.name.as_str().into())
            .collect();
        let metrics = Metrics::new(
            &listener_names,
            &route_names,
            &upstream_names,
            prev.map(|p| &p.metrics),
        );
        let rate_limits = config
            .rate_limits
            .iter()
            .map(|r| {
                let old = prev.and_then(|p| {
                    let i = p.config.rate_limits.iter().position(|o| o == r)?;
                    p.rate_limits.get(i).cloned()
                });
                old.unwrap_or_else(|| Arc::new(crate::ratelimit::RatePolicy::new(r)))
            })
            .collect();
        let ring = config
            .admin
            .as_ref()
            .map_or(DEFAULT_ERROR_RING, |a| a.error_ring);
        let (access_log, errors, history, ids, sample_every, generation) = match base {
            Base::Fresh(log) => (
                log,
                Arc::new(ErrorRing::new(ring)),
                Arc::default(),
                Arc::new(RequestIdGenerator::new()),
                crate::status::SAMPLE_EVERY,
                1,
            ),
            Base::Previous(p) => (
                p.access_log.clone(),
                p.errors.clone(),
                p.history.clone(),
                p.ids.clone(),
                p.sample_every,
                p.generation + 1,
            ),
        };
        Ok(Runtime {
            config: Arc::new(config.clone()),
            generation,
            listeners,
            upstreams,
            trusted: g.trusted_proxies.clone(),
            via,
            responder: Responder::new(g.name.clone(), pages),
            access_log,
            errors,
            metrics,
            rate_limits,
            history,
            sample_every,
            ids,
            drain_timeout: g.drain_timeout,
            expose_addresses: g.expose_upstream_addresses,
            max_connections: g.max_connections,
        })
    }

    /// This generation's index of the listener a connection was accepted
    /// on: `hint` (its index when accepted) if the name still matches,
    /// otherwise looked up by name; `None` if the listener was removed.
    pub(crate) fn listener_index(&self, hint: usize, name: &Arc<str>) -> Option<usize> {
        match self.listeners.get(hint) {
            Some(l) if Arc::ptr_eq(&l.name, name) || l.name == *name => Some(hint),
            _ => self.listeners.iter().position(|l| l.name == *name),
        }
    }
}

/// The bounded queue of an upstream whose servers have an in-flight limit
/// (HAProxy's maxconn-and-queue model).
#[derive(Debug)]
pub(crate) struct Queue {
    /// Woken when a request on one of the servers finishes.
    pub(crate) notify: Arc<Notify>,
    /// Waiting requests, by route priority (high, normal, low).
    pub(crate) waiting: [std::sync::atomic::AtomicU32; 3],
    pub(crate) max: u32,
    pub(crate) timeout: Duration,
}

// === impl Queue ===

impl Queue {
    /// Requests waiting, over all priorities.
    pub(crate) fn len(&self) -> u32 {
        self.waiting
            .iter()
            .map(|w| w.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Whether a request of `class` must let others go first: a request
    /// of a higher class is waiting.
    pub(crate) fn ahead(&self, class: usize) -> bool {
        self.waiting[..class]
            .iter()
            .any(|w| w.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }
}

/// One generation of an upstream's servers.
#[derive(Debug)]
pub(crate) struct Members {
    /// Balancing and live per-server state.
    pub(crate) set: ServerSet,
    /// Connection pools, index-aligned with `set.servers()`.
    pub(crate) pools: Vec<Arc<Server>>,
}

// === impl Upstream ===

impl Upstream {
    /// A new upstream; `old` is the previous generation's upstream of the
    /// same name (and its config), whose servers are kept where they match.
    fn new(u: &UpstreamConfig, old: Option<(&UpstreamConfig, &Arc<Upstream>)>) -> Self {
        // Pools hold connections made with these settings.
        let same_pools = old.is_some_and(|(o, _)| {
            o.pool_max_idle == u.pool_max_idle
                && o.pool_idle_timeout == u.pool_idle_timeout
                && o.max_response_header_size == u.max_response_header_size
                && o.max_response_headers == u.max_response_headers
                && o.limits == u.limits
                && o.protocol == u.protocol
                && o.tls == u.tls
        });
        let pool = match old.filter(|_| same_pools) {
            Some((_, up)) => up.pool.clone(),
            None => Arc::new(crate::pool::PoolSettings {
                max_idle: u.pool_max_idle,
                idle_timeout: u.pool_idle_timeout,
                max_header_size: u.max_response_header_size,
                max_headers: u.max_response_headers,
                protocol: u.protocol,
                tls: u.tls.as_ref().map(|t| {
                    waygate_upstream::TlsConnect::new(t, u.protocol).inspect_err(|e| {
                        tracing::error!(upstream = %u.name, error = %e, "TLS to the upstream cannot be set up");
                    })
                }),
            }),
        };
        let old_members = old.map(|(_, up)| up.members.load_full());
        let released = old
            .filter(|_| same_pools)
            .map_or_else(|| Arc::new(Notify::new()), |(_, up)| up.released.clone());
        let conn_count = old.filter(|_| same_pools).map_or_else(
            || Arc::new(AtomicI64::new(0)),
            |(_, up)| up.conn_count.clone(),
        );
        let parked_count = old.filter(|_| same_pools).map_or_else(
            || Arc::new(AtomicI64::new(0)),
            |(_, up)| up.parked_count.clone(),
        );
        let new_pool = |addr: &waygate_config::ServerAddr| {
            Arc::new(Server::new(
                addr.clone(),
                pool.clone(),
                released.clone(),
                conn_count.clone(),
                parked_count.clone(),
            ))
        };
        let mut states = Vec::with_capacity(u.servers.len());
        let mut pools = Vec::with_capacity(u.servers.len());
        for (i, s) in u.servers.iter().enumerate() {
            let label = s.addr.to_string();
            let kept = old_members.as_ref().and_then(|m| {
                let pos = m
                    .set
                    .servers()
                    .iter()
                    .position(|o| *o.label == *label && o.weight == s.weight)?;
                Some((m.set.servers()[pos].clone(), m.pools.get(pos)?.clone()))
            });
            let (state, pool) = match kept {
                Some((state, pool)) if same_pools => (state, pool),
                Some((state, _)) => (state, new_pool(&s.addr)),
                None => (
                    Arc::new(ServerState::new(i, label.as_str().into(), s.weight)),
                    new_pool(&s.addr),
                ),
            };
            states.push(state);
            pools.push(pool);
        }
        // A kept server wakes the notifier it was given first, so the queue
        // keeps the previous generation's notifier.
        let notify = old
            .and_then(|(_, up)| up.queue.as_ref().map(|q| q.notify.clone()))
            .unwrap_or_else(|| Arc::new(Notify::new()));
        let queue = u.limits.max_in_flight_per_server.map(|_| Queue {
            notify,
            waiting: Default::default(),
            max: u.limits.max_queue,
            timeout: u.limits.queue_timeout,
        });
        let set = ServerSet::with_states(states, &u.balance, u.slow_start, u.outlier.clone())
            .with_max_in_flight(u.limits.max_in_flight_per_server);
        if let Some(q) = &queue {
            for s in set.servers() {
                s.notify_on_release(q.notify.clone());
            }
        }
        let members = Members { set, pools };
        let hash_key = match &u.balance {
            Balance::Hash { key, .. } => Some(key.clone()),
            _ => None,
        };
        Self {
            name: u.name.as_str().into(),
            members: ArcSwap::from_pointee(members),
            entries: u.servers.clone(),
            dns_refresh: u.dns_refresh,
            balance_cfg: u.balance.clone(),
            slow_start: u.slow_start,
            outlier: u.outlier.clone(),
            pool,
            tunnel_idle_timeout: u.tunnel_idle_timeout,
            connect_timeout: u.connect_timeout,
            response_timeout: u.response_timeout,
            body_idle_timeout: u.body_idle_timeout,
            head_hold: u.head_hold,
            hash_key,
            retry: u.retry.clone(),
            budget: RetryBudget::new(u.retry.budget_percent, u.retry.budget_min_per_second),
            limits: Limits::new(&u.limits),
            adaptive: u
                .adaptive
                .as_ref()
                .map(waygate_resilience::AdaptiveLimit::new),
            released,
            health_check: u.health_check.clone(),
            balance: u.balance.name(),
            conn_count,
            parked_count,
            queue,
            max_in_flight_per_server: u.limits.max_in_flight_per_server,
            public_state: std::sync::atomic::AtomicU8::new(0),
            public_since: std::sync::atomic::AtomicU64::new(0),
        }
    }
}
