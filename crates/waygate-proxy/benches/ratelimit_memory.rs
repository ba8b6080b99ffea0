//! Memory of the rate limiter with many distinct keys, and what eviction
//! gives back. Not a criterion benchmark: it reports resident memory.
//!
//! `cargo bench -p waygate-proxy --bench ratelimit_memory` (KEYS=N to change
//! the default of 1,000,000).

#![allow(clippy::unwrap_used, clippy::disallowed_types)]

use std::time::{Duration, Instant};

use waygate_config::{RateKey, RateLimitConfig};
use waygate_proxy::bench_api::RatePolicy;

/// Resident set size of this process, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let keys: u64 = std::env::var("KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(1_000_000);
    let policy = RatePolicy::new(&RateLimitConfig {
        name: "per-client".into(),
        key: vec![RateKey::ClientIp],
        rate: 10,
        per: Duration::from_secs(1),
        burst: 20,
    });
    let before = rss();
    let start = Instant::now();
    for k in 0..keys {
        // Spread the keys as hashes of client addresses would be.
        let _ = policy.check(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    let took = start.elapsed();
    let full = rss();
    println!(
        "{keys} distinct keys: {} keys held, RSS +{:.1} MiB ({:.0} bytes/key), {:.0} ns per check",
        policy.keys(),
        mib(full.saturating_sub(before)),
        full.saturating_sub(before) as f64 / keys as f64,
        took.as_nanos() as f64 / keys as f64
    );
    // Each key used 1 of its burst of 20: back at full capacity after 100 ms.
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    policy.evict();
    let took = start.elapsed();
    let after = rss();
    println!(
        "after eviction ({:.0} ms): {} keys held, RSS +{:.1} MiB over the start",
        took.as_secs_f64() * 1000.0,
        policy.keys(),
        mib(after.saturating_sub(before))
    );
}
