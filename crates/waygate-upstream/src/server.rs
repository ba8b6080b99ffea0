//! Per-server live state, all atomics: in-flight count, peak-EWMA latency,
//! active health, passive ejection and admin state. Shared by the request
//! path (picks, outcomes), the health checker and the admin API.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{ms_at, now_ms};

/// Decay time of the peak-EWMA latency (Finagle and Linkerd use 10 s).
const EWMA_DECAY_MS: f64 = 10_000.0;
/// Latency assumed before the first response (microseconds).
const DEFAULT_RTT_US: f64 = 1_000.0;

/// Active health as last decided by the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No checker, or not decided yet: treated as healthy.
    Unknown,
    Healthy,
    Unhealthy,
}

/// Operator control of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    Enabled,
    /// No new requests; in-flight ones finish.
    Draining,
    Disabled,
}

/// What became of one attempt on a server, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Connect failure, timeout, reset, protocol error or a 5xx.
    Failure,
    /// Neither (the client went away, or a 4xx): not counted.
    Neutral,
}

#[derive(Debug)]
pub struct ServerState {
    /// Position in the set it was created for (informational: a set rebuilt
    /// after a DNS change may hold it elsewhere; use `Pick::index`).
    pub index: usize,
    /// `host:port`.
    pub label: Arc<str>,
    pub weight: u32,
    in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds, as f64 bits.
    ewma_us: AtomicU64,
    ewma_stamp_ms: AtomicU64,
    health: AtomicU8,
    admin: AtomicU8,
    /// `now_ms()` until which the server is ejected; 0 if not ejected.
    pub(crate) ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
    consecutive_failures: AtomicU32,
    /// When the server last became available, for slow start (0: from the start).
    up_since_ms: AtomicU64,
    /// Why the server is in its current state, for logs and the status page.
    reason: Mutex<String>,
    /// Woken when a request on this server finishes (set when the upstream
    /// queues requests for servers at their in-flight limit).
    freed: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

/// Counts a request in flight on a server until dropped; reports its
/// latency to the EWMA when finished with an outcome.
#[derive(Debug)]
pub struct InFlight {
    server: Arc<ServerState>,
    start: tokio::time::Instant,
}

// === impl ServerState ===

impl ServerState {
    pub fn new(index: usize, label: Arc<str>, weight: u32) -> Self {
        Self {
            index,
            label,
            weight: weight.max(1),
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(DEFAULT_RTT_US.to_bits()),
            ewma_stamp_ms: AtomicU64::new(0),
            health: AtomicU8::new(0),
            admin: AtomicU8::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            up_since_ms: AtomicU64::new(0),
            reason: Mutex::new("in rotation since start".into()),
            freed: std::sync::OnceLock::new(),
        }
    }

    /// Wakes `notify`'s waiters whenever a request on this server finishes.
    pub fn notify_on_release(&self, notify: Arc<tokio::sync::Notify>) {
        let _ = self.freed.set(notify);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Ordering::Relaxed))
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    pub fn set_admin(&self, state: AdminState) {
        let v = match state {
            AdminState::Enabled => 0,
            AdminState::Draining => 1,
            AdminState::Disabled => 2,
        };
        let old = self.admin.swap(v, Ordering::Relaxed);
        if old != v {
            if state == AdminState::Enabled {
                self.mark_up();
            }
            self.set_reason(format!("admin: {state:?}").to_lowercase());
            tracing::info!(server = %self.label, state = ?state, "server admin state changed");
        }
    }

    /// Ejected by passive health right now?
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }

    /// Milliseconds of ejection left (0 if not ejected).
    pub fn ejected_for_ms(&self, now: u64) -> u64 {
        self.ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now)
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Can take new requests, health and ejection permitting?
    pub fn is_available(&self, now: u64) -> bool {
        self.admin() == AdminState::Enabled
            && self.health() != Health::Unhealthy
            && !self.is_ejected(now)
    }

    pub fn reason(&self) -> String {
        self.reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_reason(&self, why: String) {
        if let Ok(mut r) = self.reason.lock() {
            *r = why;
        }
    }

    fn mark_up(&self) {
        self.up_since_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Slow-start share in (0, 1]: ramps linearly from 10 % to 100 % over
    /// `window` after the server became available.
    pub fn ramp(&self, now: u64, window: Option<Duration>) -> f64 {
        let Some(window) = window else { return 1.0 };
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let elapsed = now.saturating_sub(since) as f64;
        let w = window.as_millis().max(1) as f64;
        (0.1 + 0.9 * elapsed / w).min(1.0)
    }

    /// Records an active health decision; returns whether it changed.
    pub fn set_health(&self, healthy: bool, why: String) -> bool {
        let v = if healthy { 1 } else { 2 };
        let old = self.health.swap(v, Ordering::Relaxed);
        if old == v {
            return false;
        }
        if healthy && old == 2 {
            self.mark_up();
        }
        self.set_reason(why);
        true
    }

    /// Starts counting a request in flight.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.start_at(tokio::time::Instant::now())
    }

    fn start_at(self: &Arc<Self>, now: tokio::time::Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            server: self.clone(),
            start: now,
        }
    }

    /// Like [`ServerState::start`], but only below `max` in flight: the
    /// check and the count are one atomic step, so two requests that both
    /// saw a free slot cannot both take it.
    pub fn try_start(self: &Arc<Self>, max: Option<u32>) -> Option<InFlight> {
        self.try_start_at(max, tokio::time::Instant::now())
    }

    /// [`ServerState::try_start`] for a caller that has read the clock
    /// (`now`) already.
    pub fn try_start_at(
        self: &Arc<Self>,
        max: Option<u32>,
        now: tokio::time::Instant,
    ) -> Option<InFlight> {
        let Some(max) = max else {
            return Some(self.start_at(now));
        };
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            server: self.clone(),
            start: now,
        })
    }

    pub(crate) fn observe_latency(&self, rtt_us: f64, now: u64) {
        let prev = self.ewma_us();
        let stamp = self.ewma_stamp_ms.swap(now, Ordering::Relaxed);
        let elapsed = now.saturating_sub(stamp) as f64;
        // Peak-sensitive: a slower sample replaces the average at once; a
        // faster one is blended in, more so the longer since the last one.
        let next = if rtt_us > prev {
            rtt_us
        } else {
            let w = (-elapsed / EWMA_DECAY_MS).exp();
            prev * w + rtt_us * (1.0 - w)
        };
        self.ewma_us.store(next.to_bits(), Ordering::Relaxed);
    }

    /// Passive health bookkeeping after an attempt. Returns the ejection
    /// time if this failure ejected the server. `may_eject` is false when
    /// the maximum ejection share is reached.
    pub fn record(
        &self,
        outcome: Outcome,
        threshold: u32,
        base: Duration,
        max: Duration,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        match outcome {
            Outcome::Neutral => None,
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                // Forgive earlier ejections after a long enough good spell.
                let until = self.ejected_until_ms.load(Ordering::Relaxed);
                if until != 0 && now_ms() > until + max.as_millis() as u64 {
                    self.ejections.store(0, Ordering::Relaxed);
                    self.ejected_until_ms.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::Failure => {
                if threshold == 0 {
                    return None;
                }
                let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let now = now_ms();
                if n < threshold || self.is_ejected(now) || !may_eject() {
                    return None;
                }
                self.consecutive_failures.store(0, Ordering::Relaxed);
                let k = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
                let time = base.saturating_mul(1 << k).min(max);
                self.ejected_until_ms
                    .store(now + time.as_millis() as u64, Ordering::Relaxed);
                self.up_since_ms
                    .store(now + time.as_millis() as u64, Ordering::Relaxed);
                self.set_reason(format!(
                    "ejected for {time:?} after {n} consecutive failures"
                ));
                Some(time)
            }
        }
    }
}

// === impl InFlight ===

impl InFlight {
    pub fn server(&self) -> &Arc<ServerState> {
        &self.server
    }

    /// Reports the time to the response head (or to the failure) as a
    /// latency sample for EWMA balancing.
    pub fn observe(&self) {
        let now = tokio::time::Instant::now();
        let rtt_us = now.saturating_duration_since(self.start).as_micros() as f64;
        self.server.observe_latency(rtt_us, ms_at(now));
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = self.server.freed.get() {
            n.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn try_start_never_goes_over_the_limit() {
        let s = Arc::new(ServerState::new(0, Arc::from("a:1"), 1));
        let first = s.try_start(Some(2)).expect("room");
        let second = s.try_start(Some(2)).expect("room");
        assert!(s.try_start(Some(2)).is_none());
        assert_eq!(s.in_flight(), 2);
        drop(first);
        let third = s.try_start(Some(2)).expect("a slot was freed");
        assert_eq!(s.in_flight(), 2);
        drop((second, third));
        assert_eq!(s.in_flight(), 0);
        // No limit: always.
        let all: Vec<_> = (0..5).filter_map(|_| s.try_start(None)).collect();
        assert_eq!(all.len(), 5);
    }
}
