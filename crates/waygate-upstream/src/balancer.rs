//! Balancing: [`ServerSet::pick`] chooses the server for an attempt with the
//! upstream's policy, among the servers that are available (enabled, not
//! unhealthy, not ejected) and not yet tried by this request. When too few
//! servers are available, panic mode spreads load over every enabled server
//! rather than refusing everyone (as Envoy does).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use waygate_config::{Balance, OutlierConfig, ServerConfig};

use crate::clock::now_ms;
use crate::maglev::{hash_of, Maglev};
use crate::server::{AdminState, Outcome, ServerState};
use crate::wrr;

/// Most Maglev slots probed for an available server under its load bound.
const MAX_HASH_PROBES: usize = 64;

/// How long a panic-mode decision is reused before the servers are counted
/// again (so a pick stays O(1) with many servers). Passive ejections
/// invalidate it at once; health-check changes show within this time.
const PANIC_CACHE_MS: u64 = 100;

/// The servers of one upstream and how to choose among them.
#[derive(Debug)]
pub struct ServerSet {
    servers: Vec<Arc<ServerState>>,
    policy: Policy,
    slow_start: Option<Duration>,
    outlier: OutlierConfig,
    /// `(computed_at_ms << 1) | in_panic`, 0 when unknown.
    panic_cache: AtomicU64,
    /// A server at this many requests in flight takes no more.
    max_in_flight: Option<u32>,
}

#[derive(Debug)]
enum Policy {
    RoundRobin {
        schedule: Vec<u32>,
        cursor: AtomicUsize,
    },
    LeastRequest,
    Ewma,
    Random,
    Hash {
        table: Maglev,
        factor: f64,
    },
}

/// Why the balancer chose a server, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    RoundRobin,
    /// Fewer requests in flight of two random servers.
    LeastRequest,
    /// Lower latency × load of two random servers.
    Ewma,
    Random,
    /// The key's own server.
    Hash,
    /// The key's server was unavailable or over its load bound; the next one in the table.
    HashSpill,
    /// The only server left that this request had not tried.
    OnlyChoice,
}

/// A chosen server.
#[derive(Debug, Clone)]
pub struct Pick {
    /// Its position in this set (what `tried` lists).
    pub index: usize,
    pub server: Arc<ServerState>,
    pub reason: PickReason,
    /// Chosen in panic mode (too few servers available).
    pub panic: bool,
}

// === impl PickReason ===

impl PickReason {
    pub fn name(self) -> &'static str {
        match self {
            PickReason::RoundRobin => "round_robin",
            PickReason::LeastRequest => "least_request",
            PickReason::Ewma => "ewma",
            PickReason::Random => "random",
            PickReason::Hash => "hash",
            PickReason::HashSpill => "hash_spill",
            PickReason::OnlyChoice => "only_choice",
        }
    }
}

// === impl ServerSet ===

impl ServerSet {
    pub fn new(
        servers: &[ServerConfig],
        balance: &Balance,
        slow_start: Option<Duration>,
        outlier: OutlierConfig,
    ) -> Self {
        let states: Vec<Arc<ServerState>> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(ServerState::new(i, s.addr.to_string().into(), s.weight)))
            .collect();
        Self::with_states(states, balance, slow_start, outlier)
    }

    /// A set over existing server states (kept across DNS changes, so
    /// their health, ejections and latency survive).
    pub fn with_states(
        states: Vec<Arc<ServerState>>,
        balance: &Balance,
        slow_start: Option<Duration>,
        outlier: OutlierConfig,
    ) -> Self {
        let weights: Vec<u32> = states.iter().map(|s| s.weight).collect();
        let policy = match balance {
            Balance::RoundRobin => Policy::RoundRobin {
                schedule: wrr::schedule(&weights),
                cursor: AtomicUsize::new(fastrand::usize(..weights.len().max(1))),
            },
            Balance::LeastRequest => Policy::LeastRequest,
            Balance::Ewma => Policy::Ewma,
            Balance::Random => Policy::Random,
            Balance::Hash { balance_factor, .. } => {
                let names: Vec<&str> = states.iter().map(|s| &*s.label).collect();
                Policy::Hash {
                    table: Maglev::new(&names, &weights),
                    factor: *balance_factor,
                }
            }
        };
        Self {
            servers: states,
            policy,
            slow_start,
            outlier,
            panic_cache: AtomicU64::new(0),
            max_in_flight: None,
        }
    }

    /// Limits each server to `max` requests in flight (HAProxy's `maxconn`).
    pub fn with_max_in_flight(mut self, max: Option<u32>) -> Self {
        self.max_in_flight = max;
        self
    }

    /// The per-server in-flight limit, if any.
    pub fn max_in_flight(&self) -> Option<u32> {
        self.max_in_flight
    }

    /// Every server that could take requests is at its in-flight limit: a
    /// request should wait in the queue rather than fail.
    pub fn at_capacity(&self) -> bool {
        let Some(max) = self.max_in_flight else {
            return false;
        };
        let now = now_ms();
        let mut any = false;
        for s in &self.servers {
            if s.is_available(now) {
                if s.in_flight() < max {
                    return false;
                }
                any = true;
            }
        }
        any
    }

    pub fn servers(&self) -> &[Arc<ServerState>] {
        &self.servers
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether too few servers are available, so every enabled one is used.
    pub fn in_panic(&self, now: u64) -> bool {
        let total = self.servers.len();
        if total == 0 || self.outlier.panic_threshold == 0 {
            return false;
        }
        let available = self.servers.iter().filter(|s| s.is_available(now)).count();
        available * 100 < self.outlier.panic_threshold as usize * total
    }

    fn in_panic_cached(&self, now: u64) -> bool {
        let v = self.panic_cache.load(Ordering::Relaxed);
        if v != 0 && now.saturating_sub(v >> 1) < PANIC_CACHE_MS {
            return v & 1 == 1;
        }
        let panic = self.in_panic(now);
        self.panic_cache
            .store((now << 1) | u64::from(panic), Ordering::Relaxed);
        panic
    }

    /// Forgets the cached panic decision (after an ejection, or in tests).
    pub fn invalidate(&self) {
        self.panic_cache.store(0, Ordering::Relaxed);
    }

    /// Chooses a server for an attempt. `key` is the request's hash key (for
    /// `hash`); `tried` lists servers this request already tried, which are
    /// avoided while another server is possible.
    pub fn pick(&self, key: Option<u64>, tried: &[usize]) -> Option<Pick> {
        self.pick_at(key, tried, now_ms())
    }

    /// [`ServerSet::pick`] at `now` (in [`now_ms`]'s milliseconds), for a
    /// caller that has read the clock already.
    pub fn pick_at(&self, key: Option<u64>, tried: &[usize], now: u64) -> Option<Pick> {
        if self.servers.is_empty() {
            return None;
        }
        let panic = self.in_panic_cached(now);
        let room = |s: &ServerState| self.max_in_flight.is_none_or(|max| s.in_flight() < max);
        let usable = |s: &ServerState| {
            room(s)
                && if panic {
                    s.admin() == AdminState::Enabled
                } else {
                    s.is_available(now)
                }
        };
        let fresh = |i: usize| usable(&self.servers[i]) && !tried.contains(&i);
        let (index, reason) = match self.choose(&fresh, key, now) {
            Some(x) => x,
            None => {
                // Every usable server was tried: retry one of them rather than fail.
                let any = |i: usize| usable(&self.servers[i]);
                let (i, _) = self.choose(&any, key, now)?;
                (i, PickReason::OnlyChoice)
            }
        };
        Some(Pick {
            index,
            server: self.servers[index].clone(),
            reason,
            panic,
        })
    }

    fn choose(
        &self,
        ok: &dyn Fn(usize) -> bool,
        key: Option<u64>,
        now: u64,
    ) -> Option<(usize, PickReason)> {
        let ramp = |i: usize| self.servers[i].ramp(now, self.slow_start);
        match &self.policy {
            Policy::RoundRobin { schedule, cursor } => {
                let n = schedule.len();
                for _ in 0..n * 2 {
                    let i = schedule[cursor.fetch_add(1, Ordering::Relaxed) % n] as usize;
                    if ok(i) && (ramp(i) >= 1.0 || fastrand::f64() < ramp(i)) {
                        return Some((i, PickReason::RoundRobin));
                    }
                }
                self.random_one(ok, None)
                    .map(|i| (i, PickReason::RoundRobin))
            }
            Policy::LeastRequest => {
                let cost = |i: usize| {
                    let s = &self.servers[i];
                    f64::from(s.in_flight() + 1) / (f64::from(s.weight) * ramp(i))
                };
                self.p2c(ok, cost).map(|i| (i, PickReason::LeastRequest))
            }
            Policy::Ewma => {
                let cost = |i: usize| {
                    let s = &self.servers[i];
                    s.ewma_us() * f64::from(s.in_flight() + 1) / (f64::from(s.weight) * ramp(i))
                };
                self.p2c(ok, cost).map(|i| (i, PickReason::Ewma))
            }
            Policy::Random => self
                .weighted_random(ok, &ramp)
                .map(|i| (i, PickReason::Random)),
            Policy::Hash { table, factor } => {
                let Some(key) = key else {
                    return self
                        .weighted_random(ok, &ramp)
                        .map(|i| (i, PickReason::Random));
                };
                let (mut candidates, mut load) = (0u64, 0u64);
                for (i, s) in self.servers.iter().enumerate() {
                    if ok(i) {
                        candidates += 1;
                        load += u64::from(s.in_flight());
                    }
                }
                if candidates == 0 {
                    return None;
                }
                // Consistent hashing with bounded loads (Mirrokni et al.):
                // no server above factor × the average load, counting this request.
                let cap = (factor * (load + 1) as f64 / candidates as f64).ceil() as u32;
                for probe in 0..MAX_HASH_PROBES.min(table.len()) {
                    let i = table.lookup(key, probe)?;
                    if ok(i) && self.servers[i].in_flight() < cap {
                        let reason = if probe == 0 {
                            PickReason::Hash
                        } else {
                            PickReason::HashSpill
                        };
                        return Some((i, reason));
                    }
                }
                let cost = |i: usize| f64::from(self.servers[i].in_flight());
                self.p2c(ok, cost).map(|i| (i, PickReason::HashSpill))
            }
        }
    }

    /// Power of two random choices: the cheaper of two random candidates.
    fn p2c(&self, ok: &dyn Fn(usize) -> bool, cost: impl Fn(usize) -> f64) -> Option<usize> {
        let a = self.random_one(ok, None)?;
        match self.random_one(ok, Some(a)) {
            None => Some(a),
            Some(b) => Some(if cost(b) < cost(a) { b } else { a }),
        }
    }

    /// A uniformly random candidate other than `not`.
    fn random_one(&self, ok: &dyn Fn(usize) -> bool, not: Option<usize>) -> Option<usize> {
        let n = self.servers.len();
        for _ in 0..8 {
            let i = fastrand::usize(..n);
            if Some(i) != not && ok(i) {
                return Some(i);
            }
        }
        let start = fastrand::usize(..n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != not && ok(i))
    }

    fn weighted_random(
        &self,
        ok: &dyn Fn(usize) -> bool,
        ramp: &dyn Fn(usize) -> f64,
    ) -> Option<usize> {
        let weight = |i: usize| f64::from(self.servers[i].weight) * ramp(i);
        let total: f64 = (0..self.servers.len()).filter(|&i| ok(i)).map(weight).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = fastrand::f64() * total;
        let mut last = None;
        for i in (0..self.servers.len()).filter(|&i| ok(i)) {
            last = Some(i);
            r -= weight(i);
            if r < 0.0 {
                return Some(i);
            }
        }
        last
    }

    /// Passive health after an attempt on `server`, honouring the maximum
    /// ejection share.
    pub fn record(&self, server: &ServerState, outcome: Outcome) {
        let o = &self.outlier;
        let total = self.servers.len();
        let may_eject = || {
            let now = now_ms();
            let ejected = self.servers.iter().filter(|s| s.is_ejected(now)).count();
            (ejected + 1) * 100 <= o.max_ejection_percent as usize * total
        };
        if let Some(time) = server.record(
            outcome,
            o.consecutive_failures,
            o.base_ejection_time,
            o.max_ejection_time,
            may_eject,
        ) {
            self.invalidate();
            tracing::warn!(
                server = %server.label,
                ejection = ?time,
                ejections = server.ejections(),
                "server ejected: {} consecutive failures",
                o.consecutive_failures
            );
        }
    }

    /// The hash key of a request, from the value the upstream's `hash_key` names.
    pub fn hash_key(value: &[u8]) -> u64 {
        hash_of(value)
    }
}

#[cfg(test)]
mod tests;
