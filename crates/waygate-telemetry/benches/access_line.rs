//! Formatting one access-log line (JSON and combined), the per-request cost
//! of `[access_log]`: `cargo bench -p waygate-telemetry`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion};
use waygate_telemetry::{AccessRecord, AttemptOutcome, AttemptRecord};

fn record() -> AccessRecord {
    let mut r = AccessRecord::new(
        SystemTime::now(),
        Arc::from("6d4ab0f300000000c814"),
        Arc::from("public"),
        "192.0.2.10:51234".parse().unwrap(),
        http::Method::GET,
        Some(http::HeaderValue::from_static("api.example.com")),
        http::Uri::from_static("/v1/items/42?expand=true"),
    );
    r.status = 200;
    r.side = "upstream";
    r.bytes_out = 1234;
    r.duration_ms = 1.234;
    r.route = Some(Arc::from("api"));
    r.upstream = Some(Arc::from("app"));
    r.upstream_server = Some(Arc::from("10.0.0.7:8080"));
    r.upstream_status = Some(200);
    r.first_byte_ms = Some(1.1);
    r.attempts.push(AttemptRecord {
        server: Arc::from("10.0.0.7:8080"),
        pick: "ewma",
        panic: false,
        reused: true,
        outcome: AttemptOutcome::Status(200),
        connect_ms: None,
        first_byte_ms: Some(1.1),
    });
    r
}

fn lines(c: &mut Criterion) {
    let r = record();
    c.bench_function("access_line/json", |b| {
        b.iter(|| black_box(&r).to_json().unwrap())
    });
    c.bench_function("access_line/combined", |b| {
        b.iter(|| black_box(&r).to_combined())
    });
}

criterion_group!(benches, lines);
criterion_main!(benches);
