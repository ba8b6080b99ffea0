//! The happy path over real sockets: round robin, forwarding headers,
//! hop-by-hop removal, request ids, trusted proxies, pooling, bodies both
//! ways, client timeouts and operator error pages.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{get, route, send_raw, upstream, upstream_gauge, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waygate_test_util::{refused_addr, Behavior, Upstream};

#[tokio::test]
async fn round_robin_and_forwarding_headers() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[a.addr, b.addr], "balance = \"round_robin\"") + &route("/", "app")),
    )
    .await;
    let spoof = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "client-chosen"),
        ("connection", "x-hop"),
        ("x-hop", "secret"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
    ];
    let r1 = get(gw.addr, "/p?q=1", &spoof).await;
    let r2 = get(gw.addr, "/p?q=1", &spoof).await;
    let mut bodies = vec![r1.text(), r2.text()];
    bodies.sort();
    assert_eq!(
        bodies,
        ["hello from a: GET /p?q=1\n", "hello from b: GET /p?q=1\n"]
    );
    assert_eq!(r1.header("via"), Some("1.1 waygate"));
    assert_ne!(
        r1.request_id(),
        "client-chosen",
        "an untrusted client cannot choose the id"
    );

    let seen = a.seen().pop().expect("a saw a request");
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("test.local"));
    assert_eq!(seen.header("host"), Some("test.local"));
    assert_eq!(seen.header("via"), Some("1.1 waygate"));
    for hop in ["x-hop", "keep-alive", "te", "connection"] {
        assert_eq!(seen.header(hop), None, "{hop} must not be forwarded");
    }
    let ids: Vec<String> = [&a, &b]
        .iter()
        .map(|u| u.seen()[0].header("x-request-id").unwrap().to_owned())
        .collect();
    assert!(ids.contains(&r1.request_id()) && ids.contains(&r2.request_id()));

    let line = gw.log_line(&r1.request_id()).await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["side"], "upstream");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["upstream_status"], 200);
    assert!(line["first_byte_ms"].as_f64().is_some());
    assert!(line["duration_ms"].as_f64().is_some());
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn trusted_proxies_keep_their_forwarding_headers_and_id() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[a.addr], "")
            + &route("/", "app")
            + "[gateway]\ntrusted_proxies = [\"127.0.0.0/8\"]\n"),
    )
    .await;
    let r = get(
        gw.addr,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "edge-42"),
        ],
    )
    .await;
    assert_eq!(r.request_id(), "edge-42");
    let seen = a.seen().pop().unwrap();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-request-id"), Some("edge-42"));
}

/// hyper's connection to an upstream is renewed every 32 exchanges over
/// the same socket (to keep its request queue at one block): a hundred
/// requests, each one's answer checked, all go over one TCP connection.
#[tokio::test]
async fn an_upstream_connection_serves_on_across_renewals() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    for i in 0..100 {
        let path = format!("/n{i}");
        let r = get(gw.addr, &path, &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), format!("hello from a: GET {path}\n"));
    }
    assert_eq!(a.accepted(), 1, "one upstream connection for all");
}

#[tokio::test]
async fn keep_alive_reuses_the_upstream_connection() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200);
        ids.push(r.request_id());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = gw.log_line(&ids[0]).await;
    let third = gw.log_line(&ids[2]).await;
    assert_eq!(first["attempts"][0]["reused"], false);
    assert_eq!(
        third["attempts"][0]["reused"], true,
        "the pooled connection is reused"
    );
    assert!(third["connect_ms"].is_null());
}

#[tokio::test]
async fn request_bodies_stream_up_with_both_framings() {
    let sink = Upstream::start(Behavior::Sink).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[sink.addr], "") + &route("/", "app"))).await;
    let r = send_raw(gw.addr, b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\nconnection: close\r\n\r\nhello world").await;
    assert_eq!((r.status, r.text().as_str()), (200, "11\n"));
    let r = send_raw(
        gw.addr,
        b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (200, "11\n"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["bytes_in"], 11);
    // Small bodies are buffered (so they can be replayed) and sent with a length.
    let seen = sink.seen();
    assert_eq!(seen[1].header("content-length"), Some("11"));

    // A chunked body larger than max_replay_body is streamed, still chunked.
    let big = vec![b'z'; 100_000];
    let mut req =
        b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for chunk in big.chunks(10_000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = send_raw(gw.addr, &req).await;
    assert_eq!((r.status, r.text().as_str()), (200, "100000\n"));
    assert_eq!(sink.seen()[2].header("transfer-encoding"), Some("chunked"));
    assert_eq!(gw.log_line(&r.request_id()).await["bytes_in"], 100_000);
}

#[tokio::test]
async fn head_request_has_no_body() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    let r = send_raw(
        gw.addr,
        b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["aborted"], false);
    assert!(line["cause"].is_null());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let toml_gw = TestGateway::start_with(
        "keepalive_timeout = \"200ms\"\nclient_header_timeout = \"300ms\"\n",
        &(upstream("app", &[a.addr], "") + &route("/", "app")),
    )
    .await;
    // Idle after one request: closed after keepalive_timeout.
    let mut s = tokio::net::TcpStream::connect(toml_gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed");
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "not before keepalive_timeout"
    );

    // A head that never completes: 408, then closed, after client_header_timeout.
    let mut s = tokio::net::TcpStream::connect(toml_gw.addr).await.unwrap();
    let start = tokio::time::Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("closed in time")
        .ok();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
    assert!(
        text.contains("proxy-status: waygate; error=http_request_error"),
        "{text}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "not before client_header_timeout"
    );

    // A client that connects and sends nothing is closed too.
    let mut s = tokio::net::TcpStream::connect(toml_gw.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn operators_can_replace_the_html_page() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("502.html");
    std::fs::write(
        &page,
        "<h1>Custom {{status}}</h1><p>{{explanation}}</p><code>{{request_id}}</code>",
    )
    .unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[refused_addr()], "")
            + &route("/", "app")
            + &format!("[error_pages]\n502 = \"{}\"\n", page.display())),
    )
    .await;
    let r = get(gw.addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 502);
    let body = r.text();
    assert!(body.starts_with("<h1>Custom 502</h1>"), "{body}");
    assert!(body.contains(&format!("<code>{}</code>", r.request_id())));
    // JSON clients still get problem+json.
    let r = get(gw.addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn expose_upstream_addresses_when_configured() {
    let refused = refused_addr();
    let gw = TestGateway::start(
        &(upstream("app", &[refused], "")
            + &route("/", "app")
            + "[gateway]\nexpose_upstream_addresses = true\n"),
    )
    .await;
    let r = get(gw.addr, "/", &[]).await;
    let ps = r.header("proxy-status").unwrap();
    assert!(ps.contains(&format!("next-hop=\"{refused}\"")), "{ps}");
    assert!(
        ps.contains("connection refused") || ps.contains("Connection refused"),
        "{ps}"
    );

    // Without the option: no next-hop, no address.
    let gw = TestGateway::start(&(upstream("app", &[refused], "") + &route("/", "app"))).await;
    let r = get(gw.addr, "/", &[]).await;
    let ps = r.header("proxy-status").unwrap();
    assert!(
        !ps.contains("next-hop") && !ps.contains(&refused.to_string()),
        "{ps}"
    );
}

#[tokio::test]
async fn upstream_closing_keep_alive_connections_never_yields_502_for_get() {
    let a = Upstream::start(Behavior::HelloThenClose("a".into()))
        .await
        .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    for i in 0..30 {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A pooled upstream connection is polled only by the request that takes
/// it: one the server closed while it sat in the pool is found on that
/// request's first poll, before any byte is written, and the request goes
/// out at once on a fresh connection (recorded as a note on the attempt)
/// rather than failing or waiting for a timeout.
#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced_at_once() {
    // The server closes a connection idle for 5 ms.
    let a = Upstream::start(Behavior::HelloIdleTimeout(
        "a".into(),
        Duration::from_millis(5),
    ))
    .await
    .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let r = tokio::time::timeout(Duration::from_secs(5), get(gw.addr, "/", &[]))
            .await
            .unwrap_or_else(|_| panic!("request {i} not answered within 5 s"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        ids.push(r.request_id());
        // The server's close reaches the gateway before the next request
        // (and, at 30 ms, mostly before the pool's next sweep).
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut replaced = 0;
    for id in &ids {
        let line = gw.log_line(id).await;
        let attempts = line["attempts"].as_array().unwrap();
        if attempts.len() == 2 {
            assert_eq!(attempts[0]["reused"], true, "{line}");
            assert!(
                attempts[0]["outcome"]
                    .as_str()
                    .unwrap()
                    .starts_with("pooled_connection_closed (nothing sent"),
                "{line}"
            );
            assert_eq!(attempts[1]["reused"], false, "{line}");
            assert_eq!(attempts[1]["outcome"], "status 200", "{line}");
            replaced += 1;
        } else {
            assert_eq!(attempts.len(), 1, "{line}");
            assert_eq!(attempts[0]["outcome"], "status 200", "{line}");
        }
    }
    assert!(
        replaced > 0,
        "no request found its pooled connection closed"
    );
    assert_eq!(a.accepted(), 10, "one connection per request");
}

/// Reads `n` responses with `Content-Length` off a keep-alive connection
/// (leaving it open), within 20 s.
async fn read_cl_responses(s: &mut tokio::net::TcpStream, n: usize) -> Vec<common::RawResponse> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut tmp = vec![0u8; 1 << 16];
    let read = async {
        while out.len() < n {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                let k = s.read(&mut tmp).await.unwrap();
                assert!(k > 0, "closed after {} responses", out.len());
                buf.extend_from_slice(&tmp[..k]);
                continue;
            };
            let r = common::parse_response(&buf);
            let cl: usize = r
                .header("content-length")
                .expect("content-length")
                .parse()
                .unwrap();
            if buf.len() < end + 4 + cl {
                let k = s.read(&mut tmp).await.unwrap();
                assert!(k > 0, "closed inside a response");
                buf.extend_from_slice(&tmp[..k]);
                continue;
            }
            buf.drain(..end + 4 + cl);
            out.push(r);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("responses within 20 s");
    out
}

/// `waygate_client_connections_parked` from the admin listener.
async fn parked(admin: std::net::SocketAddr) -> u64 {
    let text = get(admin, "/metrics", &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("waygate_client_connections_parked "))
        .and_then(|v| v.trim().parse().ok())
        .expect("parked gauge")
}

/// Waits up to 5 s for the parked gauge to read `want`.
async fn parked_becomes(admin: std::net::SocketAddr, want: u64) {
    for _ in 0..100 {
        if parked(admin).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "parked connections never reached {want} (now {})",
        parked(admin).await
    );
}

/// A gateway with an admin listener in front of one `Hello` upstream;
/// `listener` and `upstream_extra` are added to their tables.
async fn hello_with_admin(listener: &str, upstream_extra: &str) -> (Upstream, TestGateway) {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = TestGateway::start_with(
        listener,
        &(upstream("app", &[a.addr], upstream_extra)
            + &route("/", "app")
            + "[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    (a, gw)
}

#[tokio::test]
async fn idle_connections_are_parked_and_served_again() {
    let (_a, gw) = hello_with_admin("keepalive_timeout = \"3s\"\n", "").await;
    let admin = gw.admin.unwrap();
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_cl_responses(&mut s, 1).await[0].status, 200);
        conns.push(s);
    }
    // Idle past the park delay (250 ms): parked, still open.
    parked_becomes(admin, 3).await;
    for s in &mut conns {
        // Two pipelined requests on a parked connection: both answered, in
        // order, on the same connection.
        s.write_all(b"GET /two HTTP/1.1\r\nhost: x\r\n\r\nGET /three HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut rs = read_cl_responses(s, 2).await;
        let three = rs.pop().unwrap();
        let two = rs.pop().unwrap();
        assert_eq!((two.status, three.status), (200, 200));
        assert!(two.text().contains("/two") && three.text().contains("/three"));
        assert!(two.complete && three.complete);
    }
    // Parked again; the keep-alive timeout (3 s, counted from the end of
    // the last response, not from the park) closes them.
    let idle_since = tokio::time::Instant::now();
    parked_becomes(admin, 3).await;
    let mut buf = [0u8; 64];
    for s in &mut conns {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed by keepalive_timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert!(idle_since.elapsed() >= Duration::from_millis(2500));
    parked_becomes(admin, 0).await;
}

#[tokio::test]
async fn a_slow_reader_gets_its_whole_response_although_idle() {
    // 32 MiB, more than the loopback socket buffers hold: a client that
    // reads nothing for well past the park delay, then everything, gets the
    // whole response, and its connection stays usable. (The narrower case,
    // hyper holding the last bytes while the connection looks idle, is
    // pinned down with paused time in `client_io`'s unit test.)
    const SIZE: u64 = 32 << 20;
    let a = Upstream::start(Behavior::Source(SIZE)).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[a.addr], "") + &route("/", "app"))).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read nothing for well over the park delay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = read_cl_responses(&mut s, 1).await.remove(0);
    assert_eq!(r.status, 200);
    assert!(r.complete, "response cut off");
    assert_eq!(r.body.len() as u64, SIZE);
    // The connection is still usable.
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_cl_responses(&mut s, 1).await.remove(0);
    assert!(r.complete && r.body.len() as u64 == SIZE);
}

#[tokio::test]
async fn a_drain_closes_parked_connections_at_once() {
    let (_a, gw) = hello_with_admin("keepalive_timeout = \"60s\"\n", "").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_cl_responses(&mut s, 1).await[0].status, 200);
    parked_becomes(gw.admin.unwrap(), 1).await;
    drop(gw); // stops the gateway: it drains
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed by the drain, not after keepalive_timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn pooled_connections_are_closed_after_pool_idle_timeout_without_traffic() {
    let (_a, gw) = hello_with_admin("", "pool_idle_timeout = \"300ms\"").await;
    let admin = gw.admin.unwrap();
    let open = || upstream_gauge(admin, "waygate_upstream_connections");
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
    assert_eq!(open().await, 1, "pooled after the request");
    // No request comes to take it: the supervisor closes it within a
    // second of its idle timeout (the server itself would keep it).
    let start = tokio::time::Instant::now();
    while open().await != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "an idle pooled connection outlived pool_idle_timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
    // And the next request connects anew.
    assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn an_idle_pooled_connection_is_parked_then_used_again() {
    let (a, gw) = hello_with_admin("", "").await;
    let admin = gw.admin.unwrap();
    assert_eq!(get(gw.addr, "/one", &[]).await.status, 200);
    // Idle past PARK_AFTER (250 ms), then a sweep (every second) parks it:
    // its socket stays open, its HTTP connection is gone.
    let start = tokio::time::Instant::now();
    while upstream_gauge(admin, "waygate_upstream_connections_parked").await != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "an idle pooled connection was not parked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream_gauge(admin, "waygate_upstream_connections").await,
        1,
        "a parked connection is still open"
    );
    let r = get(gw.addr, "/two", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.accepted(), 1, "the parked connection carried the request");
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["attempts"][0]["reused"], true);
    assert_eq!(line["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        upstream_gauge(admin, "waygate_upstream_connections_parked").await,
        0
    );
}

#[tokio::test]
async fn a_parked_connection_the_server_closed_is_not_used() {
    let a = Upstream::start(Behavior::HelloIdleTimeout(
        "a".into(),
        Duration::from_millis(1700),
    ))
    .await
    .unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[a.addr], "")
            + &route("/", "app")
            + "[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .await;
    let admin = gw.admin.unwrap();
    assert_eq!(get(gw.addr, "/one", &[]).await.status, 200);
    let start = tokio::time::Instant::now();
    while upstream_gauge(admin, "waygate_upstream_connections_parked").await != 1 {
        assert!(
            start.elapsed() < Duration::from_millis(1600),
            "an idle pooled connection was not parked before the server closed it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server closes it at 1.7 s: no task watches a parked socket, so
    // the next checkout (or sweep) must see the close, not a request sent
    // into it.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    let r = get(gw.addr, "/two", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.accepted(), 2);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(
        line["attempts"].as_array().map(Vec::len),
        Some(1),
        "no attempt on the closed connection: {line}"
    );
    assert_eq!(line["attempts"][0]["reused"], false);
}
