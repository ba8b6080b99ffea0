//! Chaos: upstreams that reset, close, truncate, stall and drop keep-alive
//! connections at random, under concurrent load. Every response must be
//! truthful (a complete 200, a gateway 502/504 with `Proxy-Status`, or a
//! 200 cut off because the upstream cut it), nothing hangs, safe requests
//! are retried, and a POST is never sent twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use waygate_test_util::{Behavior, Upstream};

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    gateway_errors: HashMap<(u16, String), usize>,
    aborted: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truthful_answers_under_random_upstream_faults() {
    let mut ups = Vec::new();
    for _ in 0..3 {
        ups.push(
            Upstream::start(Behavior::Chaos(Arc::new(AtomicU64::new(0))))
                .await
                .unwrap(),
        );
    }
    let servers: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [{}]\nresponse_timeout = \"150ms\"\n\
         [upstream.app.retry]\nmax_attempts = 3\nbudget_percent = 100\n\
         [upstream.app.outlier_detection]\nconsecutive_failures = 0\n\n\
         [[route]]\nupstream = \"app\"\n",
        servers.join(", ")
    ))
    .await;
    let addr = gw.addr;
    let mut clients = Vec::new();
    for c in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..30 {
                let (method, path) = if i % 6 == 5 {
                    ("POST", format!("/post/{c}/{i}"))
                } else {
                    ("GET", format!("/get/{c}/{i}"))
                };
                let req = format!(
                    "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                out.push((method, path, common::send_raw(addr, req.as_bytes()).await));
            }
            out
        }));
    }
    let mut get = Tally::default();
    let mut post = Tally::default();
    for c in clients {
        for (method, path, r) in c.await.unwrap() {
            let t = if method == "GET" { &mut get } else { &mut post };
            match (r.status, r.complete) {
                (200, true) => {
                    assert_eq!(r.text(), format!("hello from chaos: {method} {path}\n"));
                    t.ok += 1;
                }
                // Cut off by the upstream after the head: the client sees
                // a truncated body, never a fake success.
                (200, false) => t.aborted += 1,
                (s @ (502 | 504), true) => {
                    let cause = r.proxy_error().expect("a gateway error names its cause");
                    *t.gateway_errors.entry((s, cause)).or_default() += 1;
                }
                other => panic!("{method} {path}: unexpected {other:?}: {}", r.text()),
            }
        }
    }
    // Each POST reached an upstream at most once.
    let mut posts: HashMap<String, usize> = HashMap::new();
    for u in &ups {
        for s in u.seen() {
            if s.method == "POST" {
                *posts.entry(s.target).or_default() += 1;
            }
        }
    }
    assert!(
        posts.values().all(|n| *n == 1),
        "a POST was replayed: {posts:?}"
    );
    // GETs are retried: far more succeed than a single attempt would (57 %).
    let gets = get.ok + get.aborted + get.gateway_errors.values().sum::<usize>();
    assert_eq!(gets, 200);
    assert!(get.ok * 100 / gets >= 75, "GET {get:?}");
    assert!(
        post.ok < 40 && !post.gateway_errors.is_empty(),
        "POST {post:?}"
    );
}
