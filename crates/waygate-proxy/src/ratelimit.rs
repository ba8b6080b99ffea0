//! Rate limiting: named GCRA policies (governor's keyed limiter) attached to
//! routes. A request over its policy gets 429 with `Retry-After`, the IETF
//! `RateLimit-Policy` / `RateLimit` headers and `Proxy-Status: waygate;
//! error=http_request_denied; details="rate limit <name>"`. Idle keys are
//! evicted periodically, so memory stays bounded with many distinct keys.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use waygate_config::{RateKey, RateLimitConfig};
use waygate_core::{Cause, GatewayError};

/// How often idle keys are dropped.
pub(crate) const EVICT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct RatePolicy {
    pub(crate) name: Arc<str>,
    pub(crate) key: Vec<RateKey>,
    limiter: DefaultKeyedRateLimiter<u64>,
    clock: DefaultClock,
    /// `RateLimit-Policy` value.
    policy_header: String,
}

// === impl RatePolicy ===

impl RatePolicy {
    pub(crate) fn new(cfg: &RateLimitConfig) -> Self {
        let period = (cfg.per / cfg.rate.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            name: cfg.name.as_str().into(),
            key: cfg.key.clone(),
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            policy_header: format!(
                "\"{}\";q={};w={}",
                cfg.name,
                cfg.rate,
                cfg.per.as_secs().max(1)
            ),
        }
    }

    /// Admits one request for `key`, or says how long to wait.
    pub(crate) fn check(&self, key: u64) -> Result<(), GatewayError> {
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
    pub(crate) fn evict(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub(crate) fn keys(&self) -> usize {
        self.limiter.len()
    }
}
