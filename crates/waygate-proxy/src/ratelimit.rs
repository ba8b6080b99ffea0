//! Rate limiting: named GCRA policies (governor's keyed limiter) attached to
//! routes. A request over its policy gets 429 with `Retry-After`, the IETF
//! `RateLimit-Policy` / `RateLimit` headers and `Proxy-Status: waygate;
//! error=http_request_denied; details="rate limit <name>"`. Idle keys are
//! evicted periodically, so memory stays bounded with many distinct keys.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use waygate_config::{RateKey, RateLimitConfig};
use waygate_core::{Cause, GatewayError};

/// How often idle keys are dropped.
pub(crate) const EVICT_EVERY: Duration = Duration::from_secs(30);

/// One named policy. The clock is a parameter so tests can script time.
#[derive(Debug)]
pub struct RatePolicy<C: Clock = DefaultClock> {
    pub(crate) name: Arc<str>,
    pub(crate) key: Vec<RateKey>,
    limiter: RateLimiter<u64, DefaultKeyedStateStore<u64>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    /// `RateLimit-Policy` value.
    policy_header: String,
}

// === impl RatePolicy ===

impl RatePolicy {
    pub fn new(cfg: &RateLimitConfig) -> Self {
        Self::with_clock(cfg, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RatePolicy<C> {
    pub fn with_clock(cfg: &RateLimitConfig, clock: C) -> Self {
        let period = (cfg.per / cfg.rate.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            name: cfg.name.as_str().into(),
            key: cfg.key.clone(),
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            policy_header: format!(
                "\"{}\";q={};w={}",
                cfg.name,
                cfg.rate,
                cfg.per.as_secs().max(1)
            ),
        }
    }

    /// Admits one request for `key`, or says how long to wait.
    pub fn check(&self, key: u64) -> Result<(), GatewayError> {
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let secs = secs.max(1);
                let mut err =
                    GatewayError::new(Cause::RateLimited, format!("rate limit {}", self.name));
                err.retry_after = Some(secs);
                err.headers
                    .push(("ratelimit-policy", self.policy_header.clone()));
                err.headers
                    .push(("ratelimit", format!("\"{}\";r=0;t={secs}", self.name)));
                Err(err)
            }
        }
    }

    /// Drops the state of keys that are back to full capacity.
    pub fn evict(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

/// Evicts idle keys of every policy of the current generation every
/// [`EVICT_EVERY`], until aborted.
pub(crate) async fn run_evictor(shared: Arc<crate::runtime::Shared>) {
    let mut tick = tokio::time::interval(EVICT_EVERY);
    loop {
        tick.tick().await;
        for p in &shared.current.load().rate_limits {
            p.evict();
            tracing::debug!(policy = %p.name, keys = p.keys(), "rate-limit keys after eviction");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// The textbook GCRA (virtual scheduling): a request at `t` is admitted
    /// when `t >= tat - tau`, and then `tat = max(tat, t) + T`, where `T` is
    /// the emission interval and `tau = (burst - 1) * T`.
    struct Reference {
        t: Duration,
        tau: Duration,
        tat: Duration,
    }

    impl Reference {
        fn admit(&mut self, now: Duration) -> bool {
            if now + self.tau < self.tat {
                return false;
            }
            self.tat = self.tat.max(now) + self.t;
            true
        }
    }

    fn policy(rate: u32, per: Duration, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            name: "p".into(),
            key: vec![RateKey::ClientIp],
            rate,
            per,
            burst,
        }
    }

    /// Replays `script` (milliseconds since start, one request each) and
    /// returns which requests were admitted.
    fn replay(cfg: &RateLimitConfig, script: &[u64]) -> (Vec<bool>, Vec<bool>) {
        let clock = FakeRelativeClock::default();
        let p = RatePolicy::with_clock(cfg, clock.clone());
        let t = cfg.per / cfg.rate;
        let mut reference = Reference {
            t,
            tau: t * (cfg.burst - 1),
            tat: Duration::ZERO,
        };
        let mut at = Duration::ZERO;
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &ms in script {
            let now = Duration::from_millis(ms);
            clock.advance(now - at);
            at = now;
            got.push(p.check(7).is_ok());
            want.push(reference.admit(now));
        }
        (got, want)
    }

    #[test]
    fn admits_exactly_what_gcra_predicts() {
        // 10 per second (one every 100 ms), burst 3.
        let cfg = policy(10, Duration::from_secs(1), 3);
        let script = [
            0, 0, 0, 0,  // the burst of 3, then a refusal
            50, // too early: the next slot is at 100 ms
            100, 100, // one slot came back
            250, 300, 300, 300, // 150 ms more: 1.5 slots, then 0.5 + 0.5
            1000, 1000, 1000, 1000, // idle long enough: a full burst again
            1099, 1100, // the emission interval to the millisecond
        ];
        let (got, want) = replay(&cfg, &script);
        assert_eq!(got, want);
        let admitted: Vec<u64> = script
            .iter()
            .zip(&got)
            .filter(|(_, ok)| **ok)
            .map(|(ms, _)| *ms)
            .collect();
        assert_eq!(admitted, [0, 0, 0, 100, 250, 300, 1000, 1000, 1000, 1100]);
    }

    #[test]
    fn steady_overload_is_held_to_the_rate() {
        // 5 per second, burst 1, offered 50 per second for 10 s.
        let cfg = policy(5, Duration::from_secs(1), 1);
        let script: Vec<u64> = (0..500).map(|i| i * 20).collect();
        let (got, want) = replay(&cfg, &script);
        assert_eq!(got, want);
        assert_eq!(got.iter().filter(|ok| **ok).count(), 50);
    }

    #[test]
    fn keys_are_limited_independently_and_idle_ones_evicted() {
        let clock = FakeRelativeClock::default();
        let p = RatePolicy::with_clock(&policy(1, Duration::from_secs(1), 1), clock.clone());
        assert!(p.check(1).is_ok());
        assert!(p.check(1).is_err());
        assert!(p.check(2).is_ok(), "another key has its own budget");
        assert_eq!(p.keys(), 2);
        clock.advance(Duration::from_secs(2));
        p.evict();
        assert_eq!(p.keys(), 0, "keys back at full capacity are dropped");
    }

    #[test]
    fn refusal_says_when_to_come_back() {
        let clock = FakeRelativeClock::default();
        let p = RatePolicy::with_clock(&policy(1, Duration::from_secs(10), 1), clock.clone());
        assert!(p.check(1).is_ok());
        clock.advance(Duration::from_millis(2500));
        let err = p.check(1).unwrap_err();
        assert_eq!(err.cause, Cause::RateLimited);
        assert_eq!(err.retry_after, Some(8), "7.5 s left, rounded up");
    }
}
