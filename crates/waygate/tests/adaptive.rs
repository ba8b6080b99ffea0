//! Adaptive concurrency: the limit is learned from latency and the excess
//! is shed. (Its own test binary: it runs 40 busy clients for 3 s, which
//! would crowd the timing-sensitive tests of `limits.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use waygate_test_util::{Behavior, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_finds_capacity_from_latency_and_sheds_the_excess() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    // Serves 4 at a time in 20 ms; more requests queue inside it.
    let slots = Arc::new(tokio::sync::Semaphore::new(4));
    let up = Upstream::start(Behavior::Capacity(slots, Duration::from_millis(20)))
        .await
        .unwrap();
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream.app]\nservers = [\"{}\"]\n\
         [upstream.app.adaptive_concurrency]\ninitial_limit = 40\nmin_limit = 2\ninterval = \"100ms\"\n\n\
         [[route]]\nupstream = \"app\"\n",
        up.addr
    );
    let gw = common::TestGateway::start(&cfg).await;
    let addr = gw.addr;
    let (ok, shed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let shed_id = Arc::new(std::sync::Mutex::new(None));
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut clients = Vec::new();
    // 40 clients, each with one request outstanding at a time.
    for _ in 0..40 {
        let (ok, shed, shed_id) = (ok.clone(), shed.clone(), shed_id.clone());
        clients.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < until {
                let r = common::get(addr, "/", &[]).await;
                match r.status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    503 => {
                        assert_eq!(r.proxy_error().as_deref(), Some("connection_limit_reached"));
                        *shed_id.lock().unwrap() = Some(r.request_id());
                        // A shed client backs off a little, as clients do.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        shed.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected status {other}"),
                };
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let m = common::get(gw.admin.unwrap(), "/metrics", &[]).await.text();
    let limit: u32 = m
        .lines()
        .find_map(|l| l.strip_prefix("waygate_upstream_concurrency_limit{upstream=\"app\"} "))
        .unwrap()
        .parse()
        .unwrap();
    let (ok, shed) = (ok.load(Ordering::Relaxed), shed.load(Ordering::Relaxed));
    // Capacity 4: the limit settles near it (11 on this machine), far
    // from the 40 clients and the initial 40.
    assert!(limit <= 24, "the limit came down from 40 to {limit}");
    assert!(limit >= 2, "{limit}");
    assert!(ok > 100, "{ok} served");
    assert!(shed > 0, "the excess was shed ({shed})");
    let id = shed_id.lock().unwrap().clone().unwrap();
    let line = gw.log_line(&id).await;
    assert_eq!(line["cause"], "upstream_limit_reached");
    let detail = line["detail"].as_str().unwrap();
    assert!(detail.contains("adaptive concurrency limit"), "{detail}");
}
