//! Adaptive concurrency: a per-upstream limit on requests in flight that
//! finds the upstream's capacity from its latency and sheds the excess,
//! after Netflix's concurrency-limits `Gradient2` (also the idea behind
//! Envoy's adaptive concurrency filter).
//!
//! Every `interval`, the average latency of the window's successful
//! responses (`short`) is compared with a baseline (`long`, the latency the
//! upstream has when it is not overloaded: it follows lower latency
//! quickly, higher latency slowly and only from windows that were not
//! saturated):
//!
//! ```text
//! gradient = clamp(tolerance × long / short, 0.5, 1)
//! target   = limit × gradient + √limit        (√limit: room to probe upward)
//! limit    = limit × (1 − smoothing) + target × smoothing, within [min, max]
//! ```
//!
//! Every `min_rtt_interval` (and at start), the limit drops to `min_limit`
//! for three windows to measure the unloaded latency afresh, as Envoy does:
//! requests over `min_limit` are shed meanwhile.
//!
//! Latency at its usual level keeps the gradient at 1 and the limit grows by
//! about √limit × smoothing per interval; queueing in the upstream raises
//! `short`, the gradient drops and the limit shrinks. The limit does not grow
//! while fewer than half of it are in use (nothing to learn then).
//!
//! The request path only touches atomics: one `fetch_add` to admit, and
//! for each sample two `fetch_add`s; whoever records the first sample after
//! the interval has passed computes the update (one writer per window, won
//! by a compare-and-swap).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use waygate_config::AdaptiveConfig;

/// Latency above `long` that still counts as normal (Gradient2's default).
const TOLERANCE: f64 = 1.5;
/// Weight of a new limit estimate.
const SMOOTHING: f64 = 0.2;
/// Windows averaged into `long`.
const LONG_WINDOWS: f64 = 60.0;
/// Fewest samples for a window to count.
const MIN_SAMPLES: u64 = 5;

#[derive(Debug)]
pub struct AdaptiveLimit {
    min: u32,
    max: u32,
    interval_us: u64,
    /// The current limit (rounded from `estimate`).
    limit: AtomicU32,
    in_flight: Arc<AtomicU32>,
    /// Most requests in flight during the window.
    peak: AtomicU32,
    window_start_us: AtomicU64,
    sum_rtt_us: AtomicU64,
    samples: AtomicU64,
    /// f64 bits; written only by the window's updater.
    estimate: AtomicU64,
    long_rtt_us: AtomicU64,
    last_short_us: AtomicU64,
    /// Windows between two measurements of the unloaded latency.
    probe_every: u64,
    /// Windows completed so far (the current window's index). Windows
    /// `k·probe_every` to `k·probe_every + 2` are a probe.
    windows: AtomicU64,
    /// Index of the current probe's first window.
    probe_start: AtomicU64,
    /// Samples of requests admitted during the current probe.
    probe_sum_us: AtomicU64,
    probe_samples: AtomicU64,
}

/// A request counted against the adaptive limit until dropped.
#[derive(Debug)]
pub struct AdaptivePermit {
    in_flight: Arc<AtomicU32>,
    /// The window it was admitted in.
    epoch: u64,
}

// === impl AdaptiveLimit ===

impl AdaptiveLimit {
    pub fn new(cfg: &AdaptiveConfig) -> Self {
        let initial = cfg.initial_limit.clamp(cfg.min_limit, cfg.max_limit);
        Self {
            min: cfg.min_limit,
            max: cfg.max_limit,
            interval_us: cfg.interval.as_micros().max(1) as u64,
            // Window 0 is a probe: learn the unloaded latency first.
            limit: AtomicU32::new(cfg.min_limit),
            in_flight: Arc::new(AtomicU32::new(0)),
            peak: AtomicU32::new(0),
            window_start_us: AtomicU64::new(0),
            sum_rtt_us: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            estimate: AtomicU64::new(f64::from(initial).to_bits()),
            long_rtt_us: AtomicU64::new(0f64.to_bits()),
            last_short_us: AtomicU64::new(0f64.to_bits()),
            probe_every: (cfg.min_rtt_interval.as_micros() as u64
                / cfg.interval.as_micros().max(1) as u64)
                .max(4),
            windows: AtomicU64::new(0),
            probe_start: AtomicU64::new(0),
            probe_sum_us: AtomicU64::new(0),
            probe_samples: AtomicU64::new(0),
        }
    }

    /// Admits a request, or `None` when the limit is reached.
    pub fn try_acquire(&self) -> Option<AdaptivePermit> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let permit = AdaptivePermit {
            in_flight: self.in_flight.clone(),
            epoch: self.windows.load(Ordering::Relaxed),
        };
        if n > self.limit.load(Ordering::Relaxed) {
            return None; // dropping the permit undoes the count
        }
        self.peak.fetch_max(n, Ordering::Relaxed);
        Some(permit)
    }

    /// Records the latency of a successful response (to its head) of the
    /// request holding `permit`, at `now_us` on any monotonic clock.
    pub fn record(&self, permit: &AdaptivePermit, rtt_us: u64, now_us: u64) {
        let current = self.windows.load(Ordering::Relaxed);
        if current % self.probe_every <= 2
            && permit.epoch >= self.probe_start.load(Ordering::Relaxed)
        {
            // Admitted under the probe's low limit: unloaded latency.
            self.probe_sum_us.fetch_add(rtt_us, Ordering::Relaxed);
            self.probe_samples.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_rtt_us.fetch_add(rtt_us, Ordering::Relaxed);
        let n = self.samples.fetch_add(1, Ordering::Relaxed) + 1;
        let start = self.window_start_us.load(Ordering::Relaxed);
        if start == 0 {
            let _ = self.window_start_us.compare_exchange(
                0,
                now_us.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if now_us.saturating_sub(start) < self.interval_us || n < MIN_SAMPLES {
            return;
        }
        if self
            .window_start_us
            .compare_exchange(start, now_us.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another request is updating this window
        }
        let count = self.samples.swap(0, Ordering::Relaxed);
        let sum = self.sum_rtt_us.swap(0, Ordering::Relaxed);
        let peak = self.peak.swap(0, Ordering::Relaxed);
        if count > 0 {
            self.update(sum as f64 / count as f64, peak);
        }
    }

    fn update(&self, short: f64, peak: u32) {
        let load = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        let limit = load(&self.estimate);
        // Probing: for three windows the limit is `min`; the latency of the
        // requests admitted meanwhile (at low concurrency, after the ones
        // admitted before have finished) becomes the unloaded baseline.
        // Saturated latency includes queueing, so it cannot tell it.
        let done = self.windows.fetch_add(1, Ordering::Relaxed);
        let next = done + 1;
        let probe_next = next.is_multiple_of(self.probe_every);
        if probe_next {
            self.probe_start.store(next, Ordering::Relaxed);
            self.probe_sum_us.store(0, Ordering::Relaxed);
            self.probe_samples.store(0, Ordering::Relaxed);
            self.limit.store(self.min, Ordering::Relaxed);
        }
        match done % self.probe_every {
            0 | 1 => return,
            2 => {
                let n = self.probe_samples.swap(0, Ordering::Relaxed);
                let sum = self.probe_sum_us.swap(0, Ordering::Relaxed);
                if n > 0 {
                    let base = sum as f64 / n as f64;
                    self.long_rtt_us.store(base.to_bits(), Ordering::Relaxed);
                }
                self.last_short_us.store(short.to_bits(), Ordering::Relaxed);
                self.limit.store(limit.round() as u32, Ordering::Relaxed);
                return;
            }
            _ => {}
        }
        let saturated = f64::from(peak) >= limit / 2.0;
        // The baseline follows faster latency quickly; slower latency only
        // slowly, and only from windows that were not saturated (a
        // saturated window's latency includes queueing, which is what the
        // limit is to prevent, not a new normal).
        let mut long = load(&self.long_rtt_us);
        long = if long == 0.0 {
            short
        } else if short < long {
            long + (short - long) / 2.0
        } else if !saturated {
            long + (short - long) / LONG_WINDOWS
        } else {
            long
        };
        self.long_rtt_us.store(long.to_bits(), Ordering::Relaxed);
        self.last_short_us.store(short.to_bits(), Ordering::Relaxed);
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        // Nothing to learn about capacity while it is barely used.
        if gradient >= 1.0 && !saturated {
            return;
        }
        let target = limit * gradient + limit.sqrt();
        let new = (limit * (1.0 - SMOOTHING) + target * SMOOTHING)
            .clamp(f64::from(self.min), f64::from(self.max));
        self.estimate.store(new.to_bits(), Ordering::Relaxed);
        if !probe_next {
            self.limit.store(new.round() as u32, Ordering::Relaxed);
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// (long, short) latency averages in milliseconds, for explanations.
    pub fn latencies_ms(&self) -> (f64, f64) {
        let load = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed)) / 1000.0;
        (load(&self.long_rtt_us), load(&self.last_short_us))
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(initial: u32) -> AdaptiveLimit {
        AdaptiveLimit::new(&AdaptiveConfig {
            min_limit: 2,
            max_limit: 200,
            initial_limit: initial,
            interval: Duration::from_millis(100),
            min_rtt_interval: Duration::from_secs(10),
        })
    }

    /// Runs `windows` windows of 100 ms, each with `in_flight` requests
    /// held and 10 samples of `rtt_us`.
    fn drive(
        l: &AdaptiveLimit,
        windows: u64,
        in_flight: u32,
        rtt_us: impl Fn(u32) -> u64,
        t: &mut u64,
    ) {
        for _ in 0..windows {
            let held: Vec<_> = (0..in_flight).filter_map(|_| l.try_acquire()).collect();
            let rtt = rtt_us(l.limit());
            for p in held.iter().cycle().take(10) {
                *t += 10_000;
                l.record(p, rtt, *t);
            }
            drop(held);
        }
    }

    #[test]
    fn steady_latency_lets_the_limit_grow() {
        let l = limiter(10);
        let mut t = 0;
        drive(&l, 50, 200, |_| 5_000, &mut t);
        assert!(l.limit() > 40, "limit {}", l.limit());
    }

    #[test]
    fn an_idle_upstream_does_not_grow_the_limit() {
        let l = limiter(10);
        let mut t = 0;
        drive(&l, 50, 2, |_| 5_000, &mut t);
        assert_eq!(l.limit(), 10);
    }

    #[test]
    fn queueing_latency_shrinks_the_limit_to_the_capacity() {
        // An upstream that serves 8 at a time in 5 ms: beyond 8 in flight,
        // requests queue and latency grows in proportion.
        let l = limiter(100);
        let mut t = 0;
        let capacity = 8u32;
        let rtt = |limit: u32| 5_000 * u64::from(limit.max(capacity)) / u64::from(capacity);
        drive(&l, 5, 200, |_| 5_000, &mut t); // learn the unloaded latency
        drive(&l, 200, 200, rtt, &mut t);
        let limit = l.limit();
        assert!(
            (4..=24).contains(&limit),
            "limit {limit} near capacity {capacity}"
        );
    }

    #[test]
    fn over_the_limit_is_refused_and_permits_free_slots() {
        let l = limiter(3);
        let n = l.limit();
        let held: Vec<_> = (0..n).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), n, "a refusal is not counted");
        drop(held);
        assert!(l.try_acquire().is_some());
    }
}
