//! Route matching with 1, 10 and 1,000 routes: `cargo bench -p waygate-proxy`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use waygate_config::{HostMatch, RouteConfig};
use waygate_proxy::bench_api::Router;

fn routes(n: usize) -> Vec<RouteConfig> {
    (0..n)
        .map(|i| RouteConfig {
            name: format!("r{i}"),
            host: if i % 2 == 0 {
                HostMatch::Any
            } else {
                HostMatch::Exact(format!("h{i}.example.com"))
            },
            path_prefix: format!("/svc{i}/api"),
            listener: None,
            upstream: 0,
            rate_limit: None,
            priority: Default::default(),
        })
        .collect()
}

fn router(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for n in [1usize, 10, 1000] {
        let r = Router::new(&routes(n), 0);
        let hit = format!("/svc{}/api/items/42", n - 1);
        let host = format!("h{}.example.com", n - 1);
        group.bench_with_input(BenchmarkId::new("hit_last", n), &n, |b, _| {
            b.iter(|| black_box(r.find(black_box(&host), black_box(&hit))).is_some())
        });
        group.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| {
                black_box(r.find(black_box("other.org"), black_box("/nothing/here"))).is_some()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, router);
criterion_main!(benches);
