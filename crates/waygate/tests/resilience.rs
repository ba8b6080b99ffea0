//! Routing around failure, over real sockets: ejection of a killed server,
//! active health checks, retries (safe ones only) within their budget, and
//! per-upstream limits.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get, route, send_raw, upstream, TestGateway};
use waygate_test_util::{refused_addr, Behavior, Upstream};

/// Which server answered, from a Hello body ("hello from <name>: ...").
fn who(body: &str) -> String {
    body.strip_prefix("hello from ")
        .and_then(|r| r.split(':').next())
        .unwrap_or("?")
        .to_owned()
}

async fn shares(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        *counts.entry(who(&r.text())).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_servers_fails_no_request() {
    let ups = [
        Upstream::start(Behavior::Hello("a".into())).await.unwrap(),
        Upstream::start(Behavior::Hello("b".into())).await.unwrap(),
        Upstream::start(Behavior::Hello("c".into())).await.unwrap(),
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let cfg = "balance = \"round_robin\"\n\
               [upstream.app.retry]\nmax_attempts = 3\n\
               [upstream.app.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"30s\"\n";
    let gw =
        Arc::new(TestGateway::start(&(upstream("app", &addrs, cfg) + &route("/", "app"))).await);

    // Four clients, 150 keep-alive-less requests each; c is killed after 100 in all.
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, done) = (gw.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..150 {
                let r = get(gw.addr, "/", &[]).await;
                if r.status != 200 {
                    failures.push(format!("{} {}", r.status, r.text()));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    while done.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ups[2].kill();
    let killed_at = done.load(Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "failed client requests: {failures:?}");

    // The killed server was ejected: only a handful of attempts ever failed
    // on it, and the last requests never tried it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = gw.log_lines();
    assert_eq!(lines.len(), 600);
    let c = addrs[2].to_string();
    let failed_on_c = lines
        .iter()
        .flat_map(|l| l["attempts"].as_array().unwrap().clone())
        .filter(|a| {
            a["server"] == c.as_str() && !a["outcome"].as_str().unwrap().starts_with("status")
        })
        .count();
    assert!(failed_on_c >= 1, "the kill was noticed");
    assert!(
        failed_on_c <= 3 + 4 + 4,
        "{failed_on_c} failed attempts on the killed server (3 to eject, plus in-flight)"
    );
    let tail_tries_c = lines[lines.len() - 200..]
        .iter()
        .filter(|l| {
            l["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["server"] == c.as_str())
        })
        .count();
    assert_eq!(
        tail_tries_c, 0,
        "no attempts on the ejected server (killed after {killed_at} requests)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_remove_a_server_and_passing_ones_readmit_it() {
    let health: Vec<Arc<AtomicU16>> = (0..3).map(|_| Arc::new(AtomicU16::new(200))).collect();
    let names = ["a", "b", "c"];
    let mut ups = Vec::new();
    for (name, h) in names.iter().zip(&health) {
        ups.push(
            Upstream::start(Behavior::HelloWithHealth((*name).into(), h.clone()))
                .await
                .unwrap(),
        );
    }
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let cfg = "balance = \"round_robin\"\n\
               [upstream.app.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\njitter = \"20ms\"\ntimeout = \"50ms\"\nrise = 2\nfall = 2\n";
    let gw = TestGateway::start(&(upstream("app", &addrs, cfg) + &route("/", "app"))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = shares(&gw, 300).await;
    for n in names {
        assert_eq!(before[n], 100, "equal shares before: {before:?}");
    }

    // c starts failing its checks: gone within interval × fall + jitter
    // (220 ms here; polled, with slack for a loaded machine).
    health[2].store(500, Ordering::Relaxed);
    let took = until(|| async { !shares(&gw, 6).await.contains_key("c") }).await;
    assert!(
        took <= Duration::from_millis(220 + 1000),
        "removed after {took:?}"
    );
    let during = shares(&gw, 300).await;
    assert_eq!(
        during.get("c"),
        None,
        "no traffic to an unhealthy server: {during:?}"
    );
    assert_eq!(during["a"] + during["b"], 300);
    assert!(during["a"].abs_diff(during["b"]) <= 2, "{during:?}");

    // c recovers: back after `rise` passing checks.
    health[2].store(200, Ordering::Relaxed);
    let took = until(|| async { shares(&gw, 3).await.contains_key("c") }).await;
    assert!(
        took <= Duration::from_millis(220 + 1000),
        "readmitted after {took:?}"
    );
    let after = shares(&gw, 300).await;
    for n in names {
        assert_eq!(after[n], 100, "equal shares after: {after:?}");
    }
}

/// Polls `cond` until it holds (at most 5 s); returns how long that took.
async fn until<F, Fut>(cond: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "condition not reached in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_everything_fails() {
    let addrs = [refused_addr(), refused_addr(), refused_addr()];
    let cfg = "[upstream.app.retry]\nmax_attempts = 3\nbudget_percent = 20\nbudget_min_per_second = 0\nbackoff_base = \"0ms\"\nbackoff_max = \"0ms\"\n\
               [upstream.app.outlier_detection]\nconsecutive_failures = 0\n";
    let gw = TestGateway::start(&(upstream("app", &addrs, cfg) + &route("/", "app"))).await;
    let n = 200;
    for _ in 0..n {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 502);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lines = gw.log_lines();
    assert_eq!(lines.len(), n);
    let attempts: usize = lines
        .iter()
        .map(|l| l["attempts"].as_array().unwrap().len())
        .sum();
    let ratio = attempts as f64 / n as f64;
    assert!(
        ratio <= 1.2 + 0.01,
        "attempts per request {ratio} exceed 1 + 20 %"
    );
    assert!(ratio >= 1.15, "the budget allowed retries: {ratio}");
    let exhausted = lines
        .iter()
        .filter(|l| l["retry"] == "not retried: retry budget exhausted")
        .count();
    assert!(
        exhausted > 100,
        "{exhausted} requests say the budget was exhausted"
    );
}

#[tokio::test]
async fn unsafe_requests_are_not_retried_and_safe_ones_are() {
    // a reads the whole request, then resets; b answers.
    let a = Upstream::start(Behavior::ResetAfterRequest).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    // Weights make a the first choice most of the time; hash on the path pins it.
    let cfg = "balance = \"hash\"\nhash_key = \"header:x-key\"\n\
               [upstream.app.retry]\nmax_attempts = 2\nbackoff_base = \"0ms\"\nbackoff_max = \"0ms\"\n\
               [upstream.app.outlier_detection]\nconsecutive_failures = 0\n";
    let gw =
        TestGateway::start(&(upstream("app", &[a.addr, b.addr], cfg) + &route("/", "app"))).await;
    // Find a key that hashes to a.
    let mut key = None;
    for k in 0..200 {
        let r = get(gw.addr, "/probe", &[("x-key", &k.to_string())]).await;
        let line = gw.log_line(&r.request_id()).await;
        if line["attempts"][0]["server"] == a.addr.to_string().as_str() {
            key = Some(k.to_string());
            break;
        }
    }
    let key = key.expect("some key maps to server a");

    let post = |method: &str, len: usize| {
        let mut req = format!("{method} /x HTTP/1.1\r\nhost: x\r\nx-key: {key}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'p', len));
        req
    };

    // POST: a read it, so it is never replayed.
    let r = send_raw(gw.addr, &post("POST", 10)).await;
    assert_eq!(r.status, 502);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        line["retry"],
        "not retried: POST is not idempotent and the request was sent"
    );

    // PUT with a body too large to buffer: streamed, so not replayable.
    let r = send_raw(gw.addr, &post("PUT", 200_000)).await;
    assert_eq!(r.status, 502);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(line["retry"], "not retried: request body already streamed");

    // PUT with a small (buffered) body: retried on b.
    let r = send_raw(gw.addr, &post("PUT", 10)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(who(&r.text()), "b");
    let line = gw.log_line(&r.request_id()).await;
    let attempts = line["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"], "upstream_reset");
    assert_eq!(attempts[1]["outcome"], "status 200");
    assert!(line["retry"]
        .as_str()
        .unwrap()
        .starts_with("retried after upstream_reset"));
    assert_eq!(
        b.seen().last().unwrap().body_len,
        10,
        "the body was replayed whole"
    );
}

#[tokio::test]
async fn configured_statuses_are_retried_for_idempotent_requests() {
    let a = Upstream::start(Behavior::Status(503)).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let cfg = "balance = \"round_robin\"\n[upstream.app.retry]\nbackoff_base = \"0ms\"\nbackoff_max = \"0ms\"\nbudget_min_per_second = 100\n\
               [upstream.app.outlier_detection]\nconsecutive_failures = 0\n";
    let gw =
        TestGateway::start(&(upstream("app", &[a.addr, b.addr], cfg) + &route("/", "app"))).await;
    for _ in 0..10 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "a's 503 is retried on b");
    }
    // A POST gets a's own 503 when a is picked: passed through, not retried.
    let mut saw_503 = false;
    for _ in 0..4 {
        let r = send_raw(
            gw.addr,
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        if r.status == 503 {
            saw_503 = true;
            assert!(r.header("proxy-status").is_none(), "the upstream's own 503");
            let line = gw.log_line(&r.request_id()).await;
            assert_eq!(line["side"], "upstream");
            assert!(line["retry"].as_str().unwrap().contains("not idempotent"));
        }
    }
    assert!(saw_503);
}

#[tokio::test]
async fn max_requests_answers_503_connection_limit_reached() {
    let slow = Upstream::start(Behavior::SlowHead(Duration::from_millis(500)))
        .await
        .unwrap();
    let cfg = "[upstream.app.limits]\nmax_requests = 1\n";
    let gw = TestGateway::start(&(upstream("app", &[slow.addr], cfg) + &route("/", "app"))).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { get(addr, "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = get(gw.addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(second.status, 503);
    assert_eq!(
        second.proxy_error().as_deref(),
        Some("connection_limit_reached")
    );
    assert_eq!(second.header("retry-after"), Some("1"));
    let line = gw.log_line(&second.request_id()).await;
    assert_eq!(line["cause"], "upstream_limit_reached");
    assert_eq!(first.await.unwrap().status, 200);
}

#[tokio::test]
async fn panic_mode_uses_unhealthy_servers_rather_than_refusing_everyone() {
    let health = Arc::new(AtomicU16::new(500));
    let a = Upstream::start(Behavior::HelloWithHealth("a".into(), health.clone()))
        .await
        .unwrap();
    let cfg = "[upstream.app.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\nfall = 1\n";
    let gw = TestGateway::start(&(upstream("app", &[a.addr], cfg) + &route("/", "app"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The only server is unhealthy: 0 % available < 50 %: panic mode sends to it anyway.
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["attempts"][0]["panic"], true);

    // With panic mode off, the same state is a 503 no_server_available.
    let cfg = "[upstream.app.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\nfall = 1\n\
               [upstream.app.outlier_detection]\npanic_threshold = 0\n";
    let gw = TestGateway::start(&(upstream("app", &[a.addr], cfg) + &route("/", "app"))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_unavailable"));
}

#[tokio::test]
async fn servers_can_be_drained_disabled_and_enabled_through_the_admin_api() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let cfg = format!(
        "{}{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"\n",
        upstream("app", &[a.addr, b.addr], "balance = \"round_robin\""),
        route("/", "app")
    );
    let gw = TestGateway::start(&cfg).await;
    let admin = gw.admin.unwrap();
    let auth = ("authorization", "Bearer s3cret");
    let post = |path: String, auth: Option<(&'static str, &'static str)>| async move {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n"
        );
        if let Some((n, v)) = auth {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        send_raw(admin, req.as_bytes()).await
    };

    // The token is required.
    assert_eq!(get(admin, "/upstreams", &[]).await.status, 401);
    let r = post(format!("/upstreams/app/servers/{}/drain", a.addr), None).await;
    assert_eq!(r.status, 401);

    // Drain a: all traffic goes to b, without a reload.
    let r = post(
        format!("/upstreams/app/servers/{}/drain", a.addr),
        Some(auth),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = shares(&gw, 20).await;
    assert_eq!(s.get("a"), None, "{s:?}");
    let v: serde_json::Value =
        serde_json::from_str(&get(admin, "/upstreams", &[auth]).await.text()).unwrap();
    let servers = v["upstreams"][0]["servers"].as_array().unwrap();
    assert_eq!(servers[0]["admin"], "draining");
    assert_eq!(servers[0]["available"], false);
    assert_eq!(servers[1]["admin"], "enabled");

    // Enable it again: shares are back.
    let r = post(
        format!("/upstreams/app/servers/{}/enable", a.addr),
        Some(auth),
    )
    .await;
    assert_eq!(r.status, 200);
    let s = shares(&gw, 20).await;
    assert_eq!((s["a"], s["b"]), (10, 10));

    // Disable b; unknown servers and actions are 404.
    assert_eq!(
        post(
            format!("/upstreams/app/servers/{}/disable", b.addr),
            Some(auth)
        )
        .await
        .status,
        200
    );
    assert_eq!(shares(&gw, 10).await["a"], 10);
    assert_eq!(
        post(
            "/upstreams/app/servers/10.9.9.9:1/disable".into(),
            Some(auth)
        )
        .await
        .status,
        404
    );
    assert_eq!(
        post("/upstreams/nope/servers/x/disable".into(), Some(auth))
            .await
            .status,
        404
    );
    assert_eq!(
        post(
            format!("/upstreams/app/servers/{}/explode", b.addr),
            Some(auth)
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn host_name_servers_become_one_server_per_address() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let cfg = format!(
        "[upstream.app]\nservers = [\"localhost:{}\"]\ndns_refresh = \"100ms\"\n\n[[route]]\nupstream = \"app\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        a.addr.port()
    );
    let gw = TestGateway::start(&cfg).await;
    let admin = gw.admin.unwrap();
    let want = a.addr.to_string();
    let servers = || async {
        let v: serde_json::Value =
            serde_json::from_str(&get(admin, "/upstreams", &[]).await.text()).unwrap();
        v["upstreams"][0]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["address"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    until(|| async { servers().await.contains(&want) }).await;
    assert!(
        !servers().await.iter().any(|s| s.starts_with("localhost")),
        "{:?}",
        servers().await
    );
    // Every request succeeds (an address where nothing listens, such as ::1,
    // is refused before anything is sent and retried on another).
    for _ in 0..10 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test]
async fn ewma_moves_traffic_away_from_a_server_made_ten_times_slower() {
    let fast = Upstream::start(Behavior::DelayedHello(
        "fast".into(),
        Duration::from_millis(2),
    ))
    .await
    .unwrap();
    let slow = Upstream::start(Behavior::DelayedHello(
        "slow".into(),
        Duration::from_millis(20),
    ))
    .await
    .unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[fast.addr, slow.addr], "balance = \"ewma\"") + &route("/", "app")),
    )
    .await;
    // Warm up: both servers get measured.
    shares(&gw, 20).await;
    let s = shares(&gw, 200).await;
    let slow_share = *s.get("slow").unwrap_or(&0) as f64 / 200.0;
    assert!(
        slow_share < 0.1,
        "the 10x slower server still gets {slow_share:.2} of the traffic: {s:?}"
    );
}
