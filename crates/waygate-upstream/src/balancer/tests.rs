use std::collections::HashMap;
use std::time::Duration;

use waygate_config::{Balance, HashKey, OutlierConfig, ServerAddr, ServerConfig};

use super::*;
use crate::server::Outcome;

fn servers(weights: &[u32]) -> Vec<ServerConfig> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| ServerConfig {
            addr: ServerAddr {
                host: format!("10.0.0.{i}"),
                port: 80,
            },
            weight: w,
        })
        .collect()
}

fn outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: 3,
        base_ejection_time: Duration::from_secs(10),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 50,
        panic_threshold: 50,
    }
}

fn set(weights: &[u32], balance: Balance) -> ServerSet {
    ServerSet::new(&servers(weights), &balance, None, outlier())
}

fn shares(set: &ServerSet, n: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<f64> {
    let mut counts = vec![0usize; set.servers().len()];
    for k in 0..n {
        counts[set.pick(key(k), &[]).unwrap().index] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

#[test]
fn weighted_round_robin_matches_weights_within_one_percent() {
    let s = set(&[1, 2, 3, 4], Balance::RoundRobin);
    let got = shares(&s, 10_000, |_| None);
    for (i, share) in got.iter().enumerate() {
        let want = (i + 1) as f64 / 10.0;
        assert!((share - want).abs() < 0.01, "server {i}: {share} vs {want}");
    }
}

#[test]
fn least_request_avoids_busy_servers() {
    let s = set(&[1, 1], Balance::LeastRequest);
    let _busy: Vec<_> = (0..5).map(|_| s.servers()[0].start()).collect();
    let got = shares(&s, 1000, |_| None);
    assert!(got[1] > 0.99, "{got:?}");
}

#[test]
fn ewma_shifts_traffic_away_from_a_slow_server() {
    let s = set(&[1, 1, 1], Balance::Ewma);
    let now = crate::now_ms();
    for (i, srv) in s.servers().iter().enumerate() {
        srv.observe_latency(if i == 2 { 10_000.0 } else { 1_000.0 }, now);
    }
    let got = shares(&s, 3000, |_| None);
    assert!(
        got[2] < 0.05,
        "the 10x slower server still gets {:.3}",
        got[2]
    );
    assert!(got[0] > 0.4 && got[1] > 0.4, "{got:?}");
}

#[test]
fn random_follows_weights() {
    let s = set(&[1, 3], Balance::Random);
    let got = shares(&s, 20_000, |_| None);
    assert!((got[1] - 0.75).abs() < 0.03, "{got:?}");
}

#[test]
fn hash_is_sticky_and_respects_its_load_bound() {
    let s = set(
        &[1; 10],
        Balance::Hash {
            key: HashKey::ClientIp,
            balance_factor: 1.25,
        },
    );
    let key = ServerSet::hash_key(b"203.0.113.7");
    let first = s.pick(Some(key), &[]).unwrap();
    assert_eq!(first.reason, PickReason::Hash);
    for _ in 0..100 {
        assert_eq!(s.pick(Some(key), &[]).unwrap().index, first.index);
    }
    // One hot key: hold every request in flight; no server may exceed
    // ceil(1.25 × average) at any time.
    let mut held = Vec::new();
    for n in 0..200u32 {
        let p = s.pick(Some(key), &[]).unwrap();
        held.push(p.server.start());
        let cap = (1.25 * f64::from(n + 1) / 10.0).ceil() as u32;
        for srv in s.servers() {
            assert!(
                srv.in_flight() <= cap.max(1),
                "server {} has {} > cap {cap}",
                srv.index,
                srv.in_flight()
            );
        }
    }
}

#[test]
fn retries_avoid_servers_already_tried() {
    let s = set(&[1, 1, 1], Balance::RoundRobin);
    for _ in 0..100 {
        let p = s.pick(None, &[0, 1]).unwrap();
        assert_eq!(p.index, 2);
    }
    let only = s.pick(None, &[0, 1, 2]).unwrap();
    assert_eq!(only.reason, PickReason::OnlyChoice);
}

#[test]
fn unhealthy_servers_are_skipped_until_panic_mode() {
    let s = set(&[1, 1, 1, 1], Balance::RoundRobin);
    s.servers()[0].set_health(false, "test".into());
    let got = shares(&s, 3000, |_| None);
    assert_eq!(got[0], 0.0);
    assert!(!s.in_panic(crate::now_ms()));
    // 3 of 4 down: 25 % available < 50 % → panic mode uses all four.
    s.servers()[1].set_health(false, "test".into());
    s.servers()[2].set_health(false, "test".into());
    s.invalidate();
    assert!(s.in_panic(crate::now_ms()));
    let got = shares(&s, 4000, |_| None);
    assert!(got.iter().all(|&g| (g - 0.25).abs() < 0.01), "{got:?}");
    let p = s.pick(None, &[]).unwrap();
    assert!(p.panic);
    // Disabled servers are never used, even in panic mode.
    s.servers()[3].set_admin(AdminState::Disabled);
    s.invalidate();
    let got = shares(&s, 1000, |_| None);
    assert_eq!(got[3], 0.0);
}

#[test]
fn panic_threshold_zero_means_no_panic() {
    let mut o = outlier();
    o.panic_threshold = 0;
    let s = ServerSet::new(&servers(&[1, 1]), &Balance::RoundRobin, None, o);
    s.servers()[0].set_health(false, "down".into());
    s.servers()[1].set_health(false, "down".into());
    s.invalidate();
    assert!(s.pick(None, &[]).is_none());
}

#[test]
fn consecutive_failures_eject_with_growing_backoff_and_bounded_share() {
    let s = set(&[1, 1, 1, 1], Balance::RoundRobin);
    let a = &s.servers()[0];
    for _ in 0..2 {
        s.record(a, Outcome::Failure);
    }
    let now = crate::now_ms();
    assert!(
        !a.is_ejected(now),
        "two failures are below the threshold of three"
    );
    s.record(a, Outcome::Failure);
    assert!(a.is_ejected(now));
    let first = a.ejected_for_ms(now);
    assert!((9_900..=10_000).contains(&first), "{first}");
    // A second ejection lasts twice as long (simulate the first ending).
    a.record(
        Outcome::Success,
        3,
        Duration::from_secs(10),
        Duration::from_secs(300),
        || true,
    );
    let second = a
        .record(
            Outcome::Failure,
            1,
            Duration::from_secs(10),
            Duration::from_secs(300),
            || true,
        )
        .is_none();
    assert!(second, "already ejected: not ejected again");

    // Max ejection share 50 % of 4: a second server can be ejected, a third cannot.
    for srv in &s.servers()[1..] {
        for _ in 0..3 {
            s.record(srv, Outcome::Failure);
        }
    }
    let ejected = s
        .servers()
        .iter()
        .filter(|x| x.is_ejected(crate::now_ms()))
        .count();
    assert_eq!(ejected, 2);
    let counts: HashMap<usize, usize> =
        (0..100)
            .map(|_| s.pick(None, &[]).unwrap().index)
            .fold(HashMap::new(), |mut m, i| {
                *m.entry(i).or_default() += 1;
                m
            });
    assert!(
        !counts.contains_key(&0),
        "ejected servers get no traffic: {counts:?}"
    );
}

#[test]
fn ejection_backoff_doubles() {
    let s = ServerState::new(0, "x".into(), 1);
    let base = Duration::from_secs(10);
    let max = Duration::from_secs(300);
    let t1 = s.record(Outcome::Failure, 1, base, max, || true).unwrap();
    assert_eq!(t1, base);
    // Pretend the ejection ended.
    s.ejected_until_ms
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let t2 = s.record(Outcome::Failure, 1, base, max, || true).unwrap();
    assert_eq!(t2, base * 2);
    s.ejected_until_ms
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let t3 = s.record(Outcome::Failure, 1, base, max, || true).unwrap();
    assert_eq!(t3, base * 4);
}

#[test]
fn slow_start_ramps_a_recovered_server() {
    let s = ServerSet::new(
        &servers(&[1, 1]),
        &Balance::RoundRobin,
        Some(Duration::from_secs(60)),
        outlier(),
    );
    s.servers()[0].set_health(false, "down".into());
    s.servers()[0].set_health(true, "up".into());
    // Just recovered: about 10 % of its normal share.
    let got = shares(&s, 10_000, |_| None);
    assert!(got[0] < 0.15, "{got:?}");
    assert!(got[0] > 0.02, "{got:?}");
}
