//! Exponential back-off with full jitter (AWS architecture blog, "Exponential
//! Backoff and Jitter"): retry n waits a random time in
//! `[0, min(max, base × 2^(n-1))]`, so synchronized clients spread out.

use std::time::Duration;

/// The wait before retry number `retry` (1 for the first retry).
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    exp.min(max).mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap() {
        let base = Duration::from_millis(25);
        let max = Duration::from_millis(250);
        for retry in 1..20 {
            let cap = base.saturating_mul(1 << (retry - 1).min(16)).min(max);
            for _ in 0..50 {
                assert!(backoff(retry, base, max) <= cap);
            }
        }
        assert_eq!(backoff(1, Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }
}
