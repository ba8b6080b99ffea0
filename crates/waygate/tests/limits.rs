//! Request limits at the edge: 431 for oversize heads, 413 for oversize
//! bodies (up front from Content-Length, and while streaming), 408 for a
//! head that does not complete in time.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waygate_test_util::{Behavior, Upstream};

/// A gateway whose listener has limits, in front of a body sink.
async fn gateway(listener_extra: &str) -> (common::TestGateway, Upstream) {
    gateway_before(Behavior::Sink, listener_extra, "").await
}

/// A gateway whose listener has limits, with `extra` config tables, in
/// front of an upstream behaving as told.
async fn gateway_before(
    behavior: Behavior,
    listener_extra: &str,
    extra: &str,
) -> (common::TestGateway, Upstream) {
    let up = Upstream::start(behavior).await.unwrap();
    let rest = format!(
        "{extra}[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        up.addr
    );
    (
        common::TestGateway::start_with(listener_extra, &rest).await,
        up,
    )
}

#[tokio::test]
async fn oversize_request_head_is_431() {
    let (gw, sink) = gateway("max_header_size = 4096\n").await;
    let addr = gw.addr;
    let big = "x".repeat(8000);
    let r = common::send_raw(
        addr,
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 431);
    let ok = common::send_raw(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        sink.seen().len(),
        1,
        "the oversize request never reached the upstream"
    );
}

/// A request head with `n` header fields (host and connection included).
fn head_with_fields(n: usize) -> Vec<u8> {
    let mut head = String::from("GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for i in 2..n {
        head.push_str(&format!("x-f-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn too_many_request_headers_are_431_at_the_default_and_the_configured_limit() {
    // The default, 100 (hyper's own, not passed to it), and configured
    // limits above and below it.
    for (listener, limit) in [
        ("", 100),
        ("max_headers = 150\n", 150),
        ("max_headers = 20\n", 20),
    ] {
        let (gw, sink) = gateway(listener).await;
        let at = common::send_raw(gw.addr, &head_with_fields(limit)).await;
        assert_eq!(at.status, 200, "{limit} fields");
        let over = common::send_raw(gw.addr, &head_with_fields(limit + 1)).await;
        assert_eq!(over.status, 431, "{} fields", limit + 1);
        assert_eq!(
            sink.seen().len(),
            1,
            "the refused request never reached the upstream"
        );
    }
}

#[tokio::test]
async fn oversize_body_is_413_up_front_and_while_streaming() {
    let (gw, sink) = gateway("max_request_body_size = 100000\n").await;
    let addr = gw.addr;
    // Content-Length over the limit: refused before reading it.
    let r = common::send_raw(
        addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100001\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
    // Exactly at the limit: fine.
    let mut req =
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n"
            .to_vec();
    req.extend(std::iter::repeat_n(b'a', 100_000));
    let r = common::send_raw(addr, &req).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100000\n"));
    // Chunked, no length: cut at the limit.
    let mut req =
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..30 {
        req.extend_from_slice(b"2710\r\n");
        req.extend(std::iter::repeat_n(b'b', 10_000));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = common::send_raw(addr, &req).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        sink.seen().iter().all(|s| s.body_len <= 100_000),
        "no more than the limit went upstream"
    );
}

/// What a client uploading `len` body bytes after `head` (in 64 KiB writes,
/// `pause` apart, then a FIN) saw: every byte the gateway sent until it
/// closed, and the first write that failed.
struct Upload {
    response: common::RawResponse,
    write_error: Option<std::io::Error>,
    read_error: Option<std::io::Error>,
}

async fn upload(addr: std::net::SocketAddr, head: &str, len: usize, pause: Duration) -> Upload {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = head.to_owned();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'u'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
            tokio::time::sleep(pause).await;
        }
        wr.shutdown().await
    });
    let mut got = Vec::new();
    let mut read_error = None;
    let read = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the gateway closes within 20 s");
    let write_error = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the upload ends within 20 s")
        .unwrap()
        .err();
    Upload {
        response: common::parse_response(&got),
        write_error,
        read_error,
    }
}

/// An upstream that answers before it reads the body (nginx's `return
/// 200`) while the client is still sending for seconds: the client gets the
/// answer and its upload is neither reset nor cut, even after the gateway
/// stops forwarding the body (a returned connection gets 1 s to finish it).
#[tokio::test]
async fn an_upload_answered_early_by_the_upstream_is_not_reset() {
    let (gw, _early) = gateway_before(Behavior::AnswerEarly, "", "").await;
    // 3 MiB over about 1.9 s.
    let len = 48 * 64 * 1024;
    let head = format!("POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n");
    let u = upload(gw.addr, &head, len, Duration::from_millis(40)).await;
    assert_eq!(
        (u.response.status, u.response.text().as_str()),
        (200, "ok\n")
    );
    assert!(u.write_error.is_none(), "upload cut: {:?}", u.write_error);
    assert!(u.read_error.is_none(), "reset: {:?}", u.read_error);
}

/// The gateway's own early answer (413 from Content-Length) to a client
/// that sends its body anyway: the client reads the 413 and is not reset
/// while it finishes sending (the connection lingers, reading and
/// discarding, as nginx's lingering close does).
#[tokio::test]
async fn a_413_to_a_client_still_sending_is_read_and_not_reset() {
    let (gw, sink) = gateway_before(
        Behavior::Sink,
        "max_request_body_size = 100000\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n",
    )
    .await;
    let len = 16 * 64 * 1024;
    let head = format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n");
    // The gauge, watched while the client uploads for about 0.4 s.
    let admin = gw.admin.unwrap();
    let watch = tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..40 {
            let text = common::get(admin, "/metrics", &[]).await.text();
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix("waygate_client_connections_lingering "))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .expect("waygate_client_connections_lingering on /metrics");
            most = most.max(v);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        most
    });
    let u = upload(gw.addr, &head, len, Duration::from_millis(20)).await;
    assert_eq!(u.response.status, 413, "{}", u.response.text());
    assert!(u.write_error.is_none(), "upload cut: {:?}", u.write_error);
    assert!(u.read_error.is_none(), "reset: {:?}", u.read_error);
    assert!(sink.seen().is_empty(), "nothing went upstream");
    assert!(watch.await.unwrap() >= 1, "counted as lingering");
}

/// A regression found by fuzzing: a client that stalls inside what could
/// be the HTTP/2 preface is answered and closed like any slow head.
#[tokio::test]
async fn a_stalled_h2_preface_prefix_gets_408() {
    let (gw, _sink) = gateway("client_header_timeout = \"200ms\"\n").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HT").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got))
        .await
        .expect("closed within 2 header timeouts")
        .ok();
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn incomplete_head_gets_408() {
    let (gw, _sink) = gateway("client_header_timeout = \"300ms\"\n").await;
    let addr = gw.addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .unwrap()
        .ok();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408 "));
}

#[tokio::test]
async fn rate_limit_admits_the_burst_then_answers_429_with_headers() {
    let up = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let cfg = format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n[rate_limit.api]\nkey = \"header:x-api-key\"\nrate = 1\nper = \"10s\"\nburst = 3\n\n[[route]]\npath_prefix = \"/api\"\nupstream = \"app\"\nrate_limit = \"api\"\n\n[[route]]\nupstream = \"app\"\n",
        up.addr
    );
    let gw = common::TestGateway::start(&cfg).await;
    let key_a = [("x-api-key", "alice")];
    // GCRA with burst 3: exactly three immediate requests pass, the fourth is refused.
    for i in 0..3 {
        assert_eq!(
            common::get(gw.addr, "/api/x", &key_a).await.status,
            200,
            "request {i} is within the burst"
        );
    }
    let r = common::get(gw.addr, "/api/x", &key_a).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.header("proxy-status"),
        Some("waygate; error=http_request_denied; details=\"rate limit api\"")
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "one token every 10 s: {retry}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"api\";q=1;w=10"));
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"api\";r=0;t={retry}").as_str())
    );
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "rate_limited");
    // Another key has its own budget; routes without the policy are not limited.
    assert_eq!(
        common::get(gw.addr, "/api/x", &[("x-api-key", "bob")])
            .await
            .status,
        200
    );
    for _ in 0..5 {
        assert_eq!(common::get(gw.addr, "/other", &key_a).await.status, 200);
    }
    assert_eq!(
        up.seen().len(),
        3 + 1 + 5,
        "refused requests never reached the upstream"
    );
}

#[tokio::test]
async fn connection_limits_refuse_with_503_and_free_up() {
    let (gw, _sink) = gateway("max_connections = 3\nmax_connections_per_ip = 2\n").await;
    let addr = gw.addr;
    let a = tokio::net::TcpStream::connect(addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A third connection from the same IP is over max_connections_per_ip.
    refused_until_closed(addr, vec![a, b]).await;
}

/// With `held` open, a new connection to `addr` gets the bare 503; once they
/// close, new connections are served again.
async fn refused_until_closed(addr: std::net::SocketAddr, held: Vec<tokio::net::TcpStream>) {
    let get = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    // The held connections may not be accepted yet: ask until refused.
    let mut r = common::send_raw(addr, get).await;
    for _ in 0..50 {
        if r.status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        r = common::send_raw(addr, get).await;
    }
    assert_eq!(r.status, 503);
    assert_eq!(r.proxy_error().as_deref(), Some("connection_limit_reached"));
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        if common::send_raw(addr, get).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "slots are given back when connections close");
}

#[tokio::test]
async fn gateway_wide_connection_limit_covers_every_listener() {
    let sink = Upstream::start(Behavior::Sink).await.unwrap();
    // Two listeners, each allowing plenty; the gateway allows 2 in total.
    let rest = format!(
        "[gateway]\nmax_connections = 2\n\n[[listener]]\nname = \"second\"\nlisten = \"127.0.0.1:0\"\n\n\
         [upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        sink.addr
    );
    let gw = common::TestGateway::start_with("", &rest).await;
    // One connection on each listener fills the gateway.
    let a = tokio::net::TcpStream::connect(gw.addrs[0]).await.unwrap();
    let b = tokio::net::TcpStream::connect(gw.addrs[1]).await.unwrap();
    refused_until_closed(gw.addrs[0], vec![a, b]).await;
}

#[tokio::test]
async fn keep_alive_connection_closes_after_max_requests() {
    let (gw, _sink) = gateway("max_requests_per_connection = 2\n").await;
    let addr = gw.addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\nGET /2 HTTP/1.1\r\nhost: x\r\n\r\nGET /3 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .unwrap()
        .ok();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

/// How many sockets this test may open (half for the clients, half for the
/// gateway, which runs in this process), at most `want`.
fn fd_budget(want: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| {
                    x.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<usize>().ok())
                })
        })
        .unwrap_or(1024);
    want.min(soft.saturating_sub(256) / 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_normal_clients_still_served() {
    let (gw, _sink) = gateway("client_header_timeout = \"1s\"\n").await;
    let addr = gw.addr;
    let n = fd_budget(2000);
    eprintln!("slowloris: {n} trickling connections");
    // Each slow client sends a request line, then one header byte pair every
    // 200 ms, for at most 4 s; it reports whether the gateway cut it off.
    let mut slow = Vec::with_capacity(n);
    for _ in 0..n {
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            if s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.is_err() {
                return true;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            let mut buf = [0u8; 256];
            while tokio::time::Instant::now() < deadline {
                if s.write_all(b"x-a: b\r\n").await.is_err() {
                    return true;
                }
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => {} // the 408; EOF follows
                    Err(_) => {}
                }
            }
            false
        }));
    }
    // Meanwhile a normal client is served promptly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let start = tokio::time::Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            common::send_raw(
                addr,
                b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            ),
        )
        .await
        .expect("a normal request is not starved");
        assert_eq!(r.status, 200, "request {i}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            start.elapsed()
        );
    }
    let mut cut = 0;
    for t in slow {
        if t.await.unwrap() {
            cut += 1;
        }
    }
    assert_eq!(
        cut, n,
        "every slow connection is closed after client_header_timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queue_for_a_busy_server_and_overflow_is_503() {
    let slow = Upstream::start(Behavior::SlowHead(Duration::from_millis(300)))
        .await
        .unwrap();
    let cfg = format!(
        "[upstream.app]\nservers = [\"{}\"]\n[upstream.app.limits]\nmax_in_flight_per_server = 1\nmax_queue = 1\nqueue_timeout = \"3s\"\n[upstream.app.retry]\nmax_attempts = 1\n\n[[route]]\nupstream = \"app\"\n",
        slow.addr
    );
    let gw = common::TestGateway::start(&cfg).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { common::get(addr, "/1", &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(async move { common::get(addr, "/2", &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The server is busy and the queue holds one: the third is refused at once.
    let start = tokio::time::Instant::now();
    let third = common::get(addr, "/3", &[]).await;
    assert_eq!(third.status, 503);
    assert_eq!(
        third.proxy_error().as_deref(),
        Some("connection_limit_reached")
    );
    assert_eq!(third.header("retry-after"), Some("1"));
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "refused at once, not after waiting"
    );
    // The queued one completes when the first frees the slot.
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(
        second.await.unwrap().status,
        200,
        "the queued request completes"
    );
    assert_eq!(slow.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_gives_up_after_queue_timeout() {
    let slow = Upstream::start(Behavior::SlowHead(Duration::from_millis(800)))
        .await
        .unwrap();
    let cfg = format!(
        "[upstream.app]\nservers = [\"{}\"]\n[upstream.app.limits]\nmax_in_flight_per_server = 1\nqueue_timeout = \"150ms\"\n\n[[route]]\nupstream = \"app\"\n",
        slow.addr
    );
    let gw = common::TestGateway::start(&cfg).await;
    let addr = gw.addr;
    let first = tokio::spawn(async move { common::get(addr, "/1", &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = tokio::time::Instant::now();
    let second = common::get(addr, "/2", &[]).await;
    assert_eq!(second.status, 503);
    assert!(
        start.elapsed() >= Duration::from_millis(140),
        "waited for queue_timeout"
    );
    let line = gw.log_line(&second.request_id()).await;
    assert_eq!(line["cause"], "upstream_limit_reached");
    assert!(line["detail"].as_str().unwrap().contains("queue_timeout"));
    assert_eq!(first.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_routes_leave_the_queue_first() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let slow = Upstream::start(Behavior::Gated(gate.clone()))
        .await
        .unwrap();
    let cfg = format!(
        "[upstream.app]\nservers = [\"{}\"]\n[upstream.app.limits]\nmax_in_flight_per_server = 1\nmax_queue = 10\nqueue_timeout = \"5s\"\n\n\
         [[route]]\npath_prefix = \"/high\"\nupstream = \"app\"\npriority = \"high\"\n\n\
         [[route]]\npath_prefix = \"/low\"\nupstream = \"app\"\npriority = \"low\"\n\n\
         [[route]]\nupstream = \"app\"\n",
        slow.addr
    );
    let cfg = format!("[admin]\nlisten = \"127.0.0.1:0\"\n\n{cfg}");
    let gw = common::TestGateway::start(&cfg).await;
    let addr = gw.addr;
    let admin = gw.admin.unwrap();
    let mut tasks = Vec::new();
    // One request holds the server; then low, normal and high ones queue,
    // the high one last. Each is sent once the one before is queued.
    for (n, path) in ["/busy", "/low/1", "/normal", "/low/2", "/high"]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(
            async move { common::get(addr, path, &[]).await },
        ));
        let want = format!("waygate_upstream_queued{{upstream=\"app\"}} {n}");
        let mut queued = false;
        for _ in 0..200 {
            let m = common::get(admin, "/metrics", &[]).await;
            let seen = !slow.seen().is_empty();
            if seen && String::from_utf8_lossy(&m.body).contains(&want) {
                queued = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(queued, "{path} queued behind {n} others");
    }
    // Everyone is queued behind the held request: let them all through.
    gate.add_permits(5);
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    let order: Vec<String> = slow.seen().iter().map(|r| r.target.clone()).collect();
    assert_eq!(order[0], "/busy");
    assert_eq!(order[1], "/high", "high goes first: {order:?}");
    assert_eq!(order[2], "/normal", "then normal: {order:?}");
    assert_eq!(order.len(), 5);
}

#[tokio::test]
async fn rate_limit_by_client_ip_uses_the_peer_or_a_trusted_forwarded_for() {
    let up = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let policy = "[rate_limit.ip]\nkey = \"client_ip\"\nrate = 1\nper = \"10s\"\nburst = 2\n\n[[route]]\nupstream = \"app\"\nrate_limit = \"ip\"\n";
    // Untrusted peer: its own address is the key, whatever it forwards.
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n{policy}",
        up.addr
    ))
    .await;
    let status_for = |gw: std::net::SocketAddr, xff: &'static str| async move {
        common::get(gw, "/", &[("x-forwarded-for", xff)])
            .await
            .status
    };
    assert_eq!(status_for(gw.addr, "198.51.100.1").await, 200);
    assert_eq!(status_for(gw.addr, "198.51.100.2").await, 200);
    assert_eq!(
        status_for(gw.addr, "198.51.100.3").await,
        429,
        "one peer, one budget: a forwarded address it sends is not trusted"
    );
    // Trusted peer: the first X-Forwarded-For address is the key.
    let gw = common::TestGateway::start(&format!(
        "[gateway]\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[upstream.app]\nservers = [\"{}\"]\n\n{policy}",
        up.addr
    ))
    .await;
    assert_eq!(status_for(gw.addr, "198.51.100.1, 10.0.0.1").await, 200);
    assert_eq!(status_for(gw.addr, " 198.51.100.1 ").await, 200);
    assert_eq!(status_for(gw.addr, "198.51.100.1").await, 429);
    assert_eq!(
        status_for(gw.addr, "198.51.100.2").await,
        200,
        "another client behind the proxy has its own budget"
    );
}
