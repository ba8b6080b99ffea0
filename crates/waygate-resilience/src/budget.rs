//! The retry budget (as in Linkerd and Finagle): over a sliding 10 s window,
//! retries may add at most `percent` % to the number of requests, plus
//! `min_per_second` retries per second so a quiet service can still retry.
//! Retries never amplify an outage: when every server fails, attempts per
//! request stay within 1 + percent/100.
//!
//! Written here rather than using tower's `TpsBudget` because that one takes
//! a mutex on every deposit, i.e. on every request; this one is atomics only
//! (one relaxed increment per request, a 10-bucket scan per retry).

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: u64 = 10;

#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    buckets: [Bucket; BUCKETS as usize],
}

#[derive(Debug, Default)]
struct Bucket {
    /// The second this bucket counts.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

// === impl RetryBudget ===

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> Self {
        Self {
            percent: u64::from(percent),
            min_per_second: u64::from(min_per_second),
            buckets: Default::default(),
        }
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % BUCKETS) as usize];
        let seen = b.second.load(Ordering::Relaxed);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts a request (call once per request, not per attempt).
    pub fn deposit(&self, now_ms: u64) {
        self.bucket(now_ms / 1000)
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry from the budget if one is left.
    pub fn withdraw(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let (mut requests, mut retries) = (0, 0);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Relaxed);
            if s + BUCKETS > second && s <= second {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = self.min_per_second * BUCKETS + requests * self.percent / 100;
        if retries >= allowed {
            return false;
        }
        self.bucket(second).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_percentage() {
        let b = RetryBudget::new(20, 0);
        let mut retries = 0;
        for i in 0..1000u64 {
            let now = 5_000 + i; // one second of traffic
            b.deposit(now);
            // Every request fails and wants to retry twice.
            for _ in 0..2 {
                if b.withdraw(now) {
                    retries += 1;
                }
            }
        }
        assert!(
            (195..=200).contains(&retries),
            "{retries} retries for 1000 requests"
        );
    }

    #[test]
    fn minimum_rate_and_window_expiry() {
        let b = RetryBudget::new(0, 1);
        let now = 100_000;
        let granted = (0..50).filter(|_| b.withdraw(now)).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
        // Eleven seconds later the window has moved on.
        assert!(b.withdraw(now + 11_000));
    }
}
