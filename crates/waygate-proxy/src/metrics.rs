//! Metrics: plain atomics updated on the request path (no lock, no map
//! lookup), encoded in the Prometheus text format with `prometheus-client`
//! at scrape time by a [`Collector`] that reads them, plus gauges read from
//! the live server state. Label values come from configuration (listener,
//! route and upstream names), fixed sets (status class, side, cause) or
//! server addresses: never raw paths or client addresses.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use waygate_core::{Cause, Side};

use crate::runtime::Gateway;

/// Upper bounds (seconds) of the latency histograms.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIDES: [Side; 3] = [Side::Downstream, Side::Gateway, Side::Upstream];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One generation's view of the counters. The counters themselves are
/// shared with the previous generation wherever the label set is the same,
/// so a reload loses no count, not even of requests finishing on the old
/// generation.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// One slot per (listener, route or no route).
    slots: Vec<Arc<Slot>>,
    /// The upstream index (in this generation) of each slot.
    slot_upstream: Vec<Option<usize>>,
    routes_per_listener: usize,
    /// Request duration per listener.
    durations: Vec<Arc<Histogram>>,
    /// Time to the upstream's response head, per upstream.
    first_byte: Vec<Arc<Histogram>>,
    upstreams: Vec<Arc<UpstreamCounters>>,
    listener_names: Vec<Arc<str>>,
    upstream_names: Vec<Arc<str>>,
    pub(crate) client_connections: Arc<AtomicI64>,
    /// Idle client connections parked (holding a socket, no hyper state).
    pub(crate) parked_connections: Arc<AtomicI64>,
}

#[derive(Debug)]
struct Slot {
    listener: Arc<str>,
    route: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    by_side_class: [[AtomicU64; 5]; 3],
    by_cause: Vec<AtomicU64>,
    aborted: AtomicU64,
}

#[derive(Debug, Default)]
struct UpstreamCounters {
    attempts: AtomicU64,
    retries: AtomicU64,
    /// Pooled connections found closed before the request was sent (the keep-alive race).
    stale_connections: AtomicU64,
    /// Upgraded connections (WebSocket) opened, and open now.
    tunnels_opened: AtomicU64,
    tunnels_active: AtomicI64,
}

/// Counts one open tunnel of an upstream until dropped.
#[derive(Debug)]
pub(crate) struct TunnelCount(Arc<UpstreamCounters>);

impl Drop for TunnelCount {
    fn drop(&mut self) {
        self.0.tunnels_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One unit of a gauge (open upstream connections, parked client
/// connections), held until dropped.
#[derive(Debug)]
pub(crate) struct Gauged(Arc<AtomicI64>);

impl Gauged {
    pub(crate) fn new(gauge: Arc<AtomicI64>) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Gauged {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// What a finished request reports.
pub(crate) struct Sample {
    pub(crate) listener: usize,
    pub(crate) route: Option<usize>,
    pub(crate) upstream: Option<usize>,
    pub(crate) status: u16,
    pub(crate) side: Side,
    pub(crate) cause: Option<Cause>,
    pub(crate) aborted: bool,
    pub(crate) seconds: f64,
    pub(crate) first_byte_seconds: Option<f64>,
    pub(crate) attempts: usize,
    pub(crate) stale: usize,
}

// === impl Metrics ===

impl Metrics {
    /// `routes[i]` is (name, upstream name, upstream index) of route `i`.
    /// Counters of `prev` with the same labels are shared, not copied.
    pub(crate) fn new(
        listeners: &[Arc<str>],
        routes: &[(Arc<str>, Arc<str>, usize)],
        upstreams: &[Arc<str>],
        prev: Option<&Metrics>,
    ) -> Self {
        let mut slots = Vec::new();
        let mut slot_upstream = Vec::new();
        let slot = |l: &Arc<str>, route: Option<&Arc<str>>, upstream: Option<&Arc<str>>| {
            let kept = prev.and_then(|p| {
                p.slots
                    .iter()
                    .find(|s| {
                        s.listener == *l
                            && s.route.as_ref() == route
                            && s.upstream.as_ref() == upstream
                    })
                    .cloned()
            });
            kept.unwrap_or_else(|| {
                Arc::new(Slot::new(l.clone(), route.cloned(), upstream.cloned()))
            })
        };
        for l in listeners {
            for (name, upstream, ui) in routes {
                slots.push(slot(l, Some(name), Some(upstream)));
                slot_upstream.push(Some(*ui));
            }
            slots.push(slot(l, None, None));
            slot_upstream.push(None);
        }
        /// The cell of each name: the previous generation's for a name it had.
        fn keep<T: Default>(
            names: &[Arc<str>],
            old_names: &[Arc<str>],
            old: &[Arc<T>],
        ) -> Vec<Arc<T>> {
            names
                .iter()
                .map(|n| {
                    let i = old_names.iter().position(|x| x == n);
                    i.and_then(|i| old.get(i).cloned()).unwrap_or_default()
                })
                .collect()
        }
        let (old_l, old_u): (&[Arc<str>], &[Arc<str>]) =
            prev.map_or((&[], &[]), |p| (&p.listener_names, &p.upstream_names));
        Self {
            slots,
            slot_upstream,
            routes_per_listener: routes.len() + 1,
            durations: keep(listeners, old_l, prev.map_or(&[], |p| &p.durations)),
            first_byte: keep(upstreams, old_u, prev.map_or(&[], |p| &p.first_byte)),
            upstreams: keep(upstreams, old_u, prev.map_or(&[], |p| &p.upstreams)),
            listener_names: listeners.to_vec(),
            upstream_names: upstreams.to_vec(),
            client_connections: prev.map_or_else(Arc::default, |p| p.client_connections.clone()),
            parked_connections: prev.map_or_else(Arc::default, |p| p.parked_connections.clone()),
        }
    }

    /// Counts a tunnel opened to upstream `u`, open until the result drops.
    pub(crate) fn tunnel(&self, u: usize) -> Option<TunnelCount> {
        let c = self.upstreams.get(u)?;
        c.tunnels_opened.fetch_add(1, Ordering::Relaxed);
        c.tunnels_active.fetch_add(1, Ordering::Relaxed);
        Some(TunnelCount(c.clone()))
    }

    pub(crate) fn record(&self, s: &Sample) {
        let slot_index =
            s.listener * self.routes_per_listener + s.route.unwrap_or(self.routes_per_listener - 1);
        let Some(slot) = self.slots.get(slot_index) else {
            return;
        };
        let side = SIDES.iter().position(|x| *x == s.side).unwrap_or(1);
        let class = usize::from((s.status / 100).clamp(1, 5)) - 1;
        slot.by_side_class[side][class].fetch_add(1, Ordering::Relaxed);
        if let Some(c) = s.cause {
            if let Some(counter) = slot.by_cause.get(c.index()) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        if s.aborted {
            slot.aborted.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = self.durations.get(s.listener) {
            h.observe(s.seconds);
        }
        if let Some(u) = s.upstream {
            if let (Some(fb), Some(h)) = (s.first_byte_seconds, self.first_byte.get(u)) {
                h.observe(fb);
            }
            if let Some(c) = self.upstreams.get(u) {
                c.attempts.fetch_add(s.attempts as u64, Ordering::Relaxed);
                c.retries.fetch_add(
                    s.attempts.saturating_sub(1 + s.stale) as u64,
                    Ordering::Relaxed,
                );
                c.stale_connections
                    .fetch_add(s.stale as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Cumulative totals of one upstream, for the status page's history.
#[derive(Debug, Clone, Default)]
pub(crate) struct UpstreamTotals {
    pub(crate) requests: u64,
    /// 5xx answers, whichever side produced them.
    pub(crate) errors: u64,
    /// First-byte histogram bucket counts (not cumulative), last one +Inf.
    pub(crate) first_byte: Vec<u64>,
}

impl Metrics {
    pub(crate) fn upstream_totals(&self, u: usize) -> UpstreamTotals {
        let mut t = UpstreamTotals::default();
        let mine = self.slot_upstream.iter().map(|x| *x == Some(u));
        for (s, _) in self.slots.iter().zip(mine).filter(|(_, m)| *m) {
            for side in &s.by_side_class {
                t.requests += side.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
                t.errors += side[4].load(Ordering::Relaxed);
            }
        }
        if let Some(h) = self.first_byte.get(u) {
            t.first_byte = h
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        }
        t
    }
}

/// The upper bound (ms) of the bucket holding quantile `q` of `counts`.
pub(crate) fn quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return Some(BUCKETS.get(i).map_or(f64::INFINITY, |b| b * 1000.0));
        }
    }
    None
}

// === impl Slot ===

impl Slot {
    fn new(listener: Arc<str>, route: Option<Arc<str>>, upstream: Option<Arc<str>>) -> Self {
        Self {
            listener,
            route,
            upstream,
            by_side_class: Default::default(),
            by_cause: Cause::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            aborted: AtomicU64::new(0),
        }
    }
}

// === impl Histogram ===

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// (sum, count, per-bucket counts) for the encoder, which accumulates.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .collect();
        buckets.push((f64::INFINITY, counts[BUCKETS.len()]));
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, counts.iter().sum(), buckets)
    }
}

/// Reads the gateway's counters and live state at each scrape.
#[derive(Debug)]
struct GatewayCollector(Gateway);

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rt = &self.0.rt();
        let m = &rt.metrics;

        let mut e = enc.encode_descriptor(
            "waygate_requests",
            "Finished requests by listener, route, upstream, status class and the side that produced the response",
            None,
            MetricType::Counter,
        )?;
        for s in &m.slots {
            for (si, side) in SIDES.iter().enumerate() {
                for (ci, class) in CLASSES.iter().enumerate() {
                    let v = s.by_side_class[si][ci].load(Ordering::Relaxed);
                    if v == 0 {
                        continue;
                    }
                    let labels = [
                        ("listener", &*s.listener),
                        ("route", s.route.as_deref().unwrap_or("")),
                        ("upstream", s.upstream.as_deref().unwrap_or("")),
                        ("status_class", class),
                        ("side", side.name()),
                    ];
                    ConstCounter::new(v).encode(e.encode_family(&labels)?)?;
                }
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_gateway_errors",
            "Responses the gateway generated or cut off, by cause (the stable names of docs/causes.md)",
            None,
            MetricType::Counter,
        )?;
        for s in &m.slots {
            for (i, cause) in Cause::ALL.iter().enumerate() {
                let v = s.by_cause[i].load(Ordering::Relaxed);
                if v == 0 {
                    continue;
                }
                let status = cause.status().to_string();
                let labels = [
                    ("listener", &*s.listener),
                    ("route", s.route.as_deref().unwrap_or("")),
                    ("upstream", s.upstream.as_deref().unwrap_or("")),
                    ("cause", cause.name()),
                    ("proxy_status", cause.proxy_status()),
                    ("status", status.as_str()),
                ];
                ConstCounter::new(v).encode(e.encode_family(&labels)?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_responses_aborted",
            "Responses cut off after their head was sent",
            None,
            MetricType::Counter,
        )?;
        for s in &m.slots {
            let v = s.aborted.load(Ordering::Relaxed);
            if v > 0 {
                let labels = [
                    ("listener", &*s.listener),
                    ("route", s.route.as_deref().unwrap_or("")),
                ];
                ConstCounter::new(v).encode(e.encode_family(&labels)?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_request_duration_seconds",
            "Total time of each request, as the client saw it",
            None,
            MetricType::Histogram,
        )?;
        for (l, h) in rt.listeners.iter().zip(&m.durations) {
            let (sum, count, buckets) = h.snapshot();
            let labels = [("listener", &*l.name)];
            e.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut e = enc.encode_descriptor(
            "waygate_upstream_first_byte_seconds",
            "Time from the start of the request to the upstream's response head",
            None,
            MetricType::Histogram,
        )?;
        for (u, h) in rt.upstreams.iter().zip(&m.first_byte) {
            let (sum, count, buckets) = h.snapshot();
            let labels = [("upstream", &*u.name)];
            e.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        for (name, help, pick) in [
            ("waygate_upstream_attempts", "Attempts sent to an upstream's servers", 0),
            ("waygate_upstream_retries", "Retries on another attempt after a failure or a retryable status", 1),
            (
                "waygate_upstream_stale_connections",
                "Pooled connections found closed by the server before the request was sent (the keep-alive race)",
                2,
            ),
            ("waygate_tunnels_opened", "Upgraded connections (WebSocket) opened to an upstream", 3),
        ] {
            let mut e = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (u, c) in rt.upstreams.iter().zip(&m.upstreams) {
                let v = match pick {
                    0 => c.attempts.load(Ordering::Relaxed),
                    1 => c.retries.load(Ordering::Relaxed),
                    2 => c.stale_connections.load(Ordering::Relaxed),
                    _ => c.tunnels_opened.load(Ordering::Relaxed),
                };
                ConstCounter::new(v).encode(e.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_tunnels_active",
            "Upgraded connections (WebSocket) open now",
            None,
            MetricType::Gauge,
        )?;
        for (u, c) in rt.upstreams.iter().zip(&m.upstreams) {
            let v = c.tunnels_active.load(Ordering::Relaxed);
            ConstGauge::new(v).encode(e.encode_family(&[("upstream", &*u.name)])?)?;
        }

        let e = enc.encode_descriptor(
            "waygate_client_connections",
            "Open client connections",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(m.client_connections.load(Ordering::Relaxed)).encode(e)?;

        let e = enc.encode_descriptor(
            "waygate_client_connections_parked",
            "Idle keep-alive client connections parked: holding their socket, no HTTP state",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(m.parked_connections.load(Ordering::Relaxed)).encode(e)?;

        let e = enc.encode_descriptor(
            "waygate_client_connections_lingering",
            "Client connections closing in stages: answered, the rest of the request body read and dropped",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(crate::client_io::lingering() as i64).encode(e)?;

        let mut e = enc.encode_descriptor(
            "waygate_connections_refused",
            "Client connections refused by a connection limit, by listener and reason",
            None,
            MetricType::Counter,
        )?;
        for l in &rt.listeners {
            for (i, reason) in [
                "max_connections",
                "max_connections_per_ip",
                "gateway_max_connections",
            ]
            .iter()
            .enumerate()
            {
                let v = l.counters.refused[i].load(Ordering::Relaxed);
                ConstCounter::new(v)
                    .encode(e.encode_family(&[("listener", &*l.name), ("reason", reason)])?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_upstream_connections",
            "Open connections to an upstream's servers",
            None,
            MetricType::Gauge,
        )?;
        for u in &rt.upstreams {
            ConstGauge::new(u.conn_count.load(Ordering::Relaxed))
                .encode(e.encode_family(&[("upstream", &*u.name)])?)?;
        }

        let mut e = enc.encode_descriptor(
            "waygate_upstream_connections_parked",
            "Of the open upstream connections, the idle ones parked: holding their socket, no HTTP state",
            None,
            MetricType::Gauge,
        )?;
        for u in &rt.upstreams {
            ConstGauge::new(u.parked_count.load(Ordering::Relaxed))
                .encode(e.encode_family(&[("upstream", &*u.name)])?)?;
        }

        let mut e = enc.encode_descriptor(
            "waygate_upstream_queued",
            "Requests waiting in the upstream's queue for a server below max_in_flight_per_server",
            None,
            MetricType::Gauge,
        )?;
        for u in &rt.upstreams {
            if let Some(q) = &u.queue {
                ConstGauge::new(i64::from(q.len()))
                    .encode(e.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }

        let mut e = enc.encode_descriptor(
            "waygate_upstream_concurrency_limit",
            "The adaptive concurrency limit learned from latency (upstreams with [adaptive_concurrency])",
            None,
            MetricType::Gauge,
        )?;
        for u in &rt.upstreams {
            if let Some(a) = &u.adaptive {
                ConstGauge::new(i64::from(a.limit()))
                    .encode(e.encode_family(&[("upstream", &*u.name)])?)?;
            }
        }

        let views = self.0.upstreams();
        for (name, help) in [
            (
                "waygate_server_available",
                "1 if the server takes new requests (enabled, healthy, not ejected)",
            ),
            (
                "waygate_server_healthy",
                "Active health: 1 healthy, 0 unhealthy, -1 unknown",
            ),
            (
                "waygate_server_in_flight",
                "Requests in flight on the server",
            ),
            (
                "waygate_server_ejections",
                "Passive-health ejections of the server so far",
            ),
        ] {
            let mut e = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for u in &views {
                for s in &u.servers {
                    let v: i64 = match name {
                        "waygate_server_available" => i64::from(s.available),
                        "waygate_server_healthy" => match s.health {
                            "healthy" => 1,
                            "unhealthy" => 0,
                            _ => -1,
                        },
                        "waygate_server_in_flight" => i64::from(s.in_flight),
                        _ => i64::from(s.ejections),
                    };
                    let labels = [
                        ("upstream", u.name.as_str()),
                        ("server", s.address.as_str()),
                    ];
                    ConstGauge::new(v).encode(e.encode_family(&labels)?)?;
                }
            }
        }

        let reloads = self.0.reloads();
        let mut e = enc.encode_descriptor(
            "waygate_config_reloads",
            "Config reloads by result: success (applied) or failure (rejected; the running config kept serving)",
            None,
            MetricType::Counter,
        )?;
        for (result, v) in [("success", reloads.succeeded), ("failure", reloads.failed)] {
            ConstCounter::new(v).encode(e.encode_family(&[("result", result)])?)?;
        }
        let e = enc.encode_descriptor(
            "waygate_config_generation",
            "Generation of the running config: 1 at start, +1 per applied reload",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(reloads.generation as i64).encode(e)?;

        let mut e =
            enc.encode_descriptor("waygate_build", "Build information", None, MetricType::Info)?;
        e.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

// === impl Gateway ===

impl Gateway {
    /// All metrics in the Prometheus text exposition format.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(GatewayCollector(self.clone())));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}
