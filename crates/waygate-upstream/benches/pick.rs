//! `ServerSet::pick` for every policy with 1, 10 and 1,000 servers:
//! `cargo bench -p waygate-upstream`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use waygate_config::{Balance, HashKey, OutlierConfig, ServerAddr, ServerConfig};
use waygate_upstream::ServerSet;

fn servers(n: usize) -> Vec<ServerConfig> {
    (0..n)
        .map(|i| ServerConfig {
            addr: ServerAddr {
                host: format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                port: 80,
            },
            weight: 1 + (i % 3) as u32,
        })
        .collect()
}

fn outlier() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: 5,
        base_ejection_time: Duration::from_secs(10),
        max_ejection_time: Duration::from_secs(300),
        max_ejection_percent: 50,
        panic_threshold: 50,
    }
}

fn pick(c: &mut Criterion) {
    let policies = [
        ("round_robin", Balance::RoundRobin),
        ("least_request", Balance::LeastRequest),
        ("ewma", Balance::Ewma),
        ("random", Balance::Random),
        (
            "hash",
            Balance::Hash {
                key: HashKey::ClientIp,
                balance_factor: 1.25,
            },
        ),
    ];
    for (name, balance) in policies {
        let mut group = c.benchmark_group(format!("pick/{name}"));
        for n in [1usize, 10, 1000] {
            let set = ServerSet::new(&servers(n), &balance, None, outlier());
            let key = ServerSet::hash_key(b"203.0.113.7");
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    black_box(set.pick(Some(black_box(key)), &[]))
                        .unwrap()
                        .index
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
