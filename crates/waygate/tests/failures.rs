//! Every way an upstream can fail, over real sockets: the status, the
//! `Proxy-Status` type, the body for browsers (HTML), API clients
//! (problem+json) and others (text), the request id, and the access-log line.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{get, route, upstream, TestGateway};
use waygate_test_util::{refused_addr, Behavior, Blackhole, Upstream};

struct Expect {
    status: u16,
    proxy_status: &'static str,
    cause: &'static str,
}

/// Starts a gateway routing `/` to `servers` (with `extra` upstream
/// settings) and checks the three body formats and the log for `e`.
async fn assert_cause(servers: &[SocketAddr], extra: &str, e: Expect) {
    let gw = TestGateway::start(&(upstream("app", servers, extra) + &route("/", "app"))).await;
    let cases: [(Option<&str>, &str); 3] = [
        (
            Some("text/html,application/xhtml+xml,*/*;q=0.8"),
            "text/html",
        ),
        (Some("application/json"), "application/problem+json"),
        (None, "text/plain"),
    ];
    for (accept, content_type) in cases {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let r = get(gw.addr, "/some/path", &headers).await;
        assert_eq!(
            r.status,
            e.status,
            "status for {} ({accept:?}): {}",
            e.cause,
            r.text()
        );
        assert_eq!(
            r.proxy_error().as_deref(),
            Some(e.proxy_status),
            "Proxy-Status for {}",
            e.cause
        );
        assert!(r
            .header("proxy-status")
            .unwrap()
            .starts_with("waygate; error="));
        assert!(r.header("content-type").unwrap().starts_with(content_type));
        assert!(r.complete, "a generated error body is complete");
        let id = r.request_id();
        assert_eq!(id.len(), 20);
        let body = r.text();
        assert!(body.contains(&id), "body names the request id: {body}");
        for s in servers {
            assert!(
                !body.contains(&s.to_string()),
                "body leaks the server address: {body}"
            );
            assert!(!r.header("proxy-status").unwrap().contains(&s.to_string()));
        }
        match content_type {
            "text/html" => {
                assert!(body.starts_with("<!doctype html>"));
                assert!(body.contains("not a problem with your device"));
            }
            "application/problem+json" => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
                assert_eq!(v["status"], e.status);
                assert_eq!(v["proxy_status"], e.proxy_status);
                assert_eq!(v["cause"], e.cause);
                assert_eq!(v["request_id"], id.as_str());
                assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
                assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()));
            }
            _ => assert!(body.starts_with(&e.status.to_string())),
        }
        let line = gw.log_line(&id).await;
        assert_eq!(line["status"], e.status);
        assert_eq!(line["side"], "gateway");
        assert_eq!(line["cause"], e.cause);
        assert_eq!(line["proxy_status"], e.proxy_status);
        assert_eq!(line["aborted"], false);
        assert_eq!(line["path"], "/some/path");
        assert_eq!(line["upstream"], "app");
    }
}

#[tokio::test]
async fn refused_port_is_502_connection_refused() {
    let e = Expect {
        status: 502,
        proxy_status: "connection_refused",
        cause: "connection_refused",
    };
    assert_cause(&[refused_addr()], "", e).await;
}

#[tokio::test]
async fn unresolvable_host_is_502_dns_error() {
    let gw = TestGateway::start(
        "[upstream.app]\nservers = [\"no-such-host.invalid:80\"]\nconnect_timeout = \"5s\"\n\n[[route]]\nupstream = \"app\"\n",
    )
    .await;
    let r = get(gw.addr, "/", &[]).await;
    let line = gw.log_line(&r.request_id()).await;
    // A resolver that cannot be reached at all times out instead of failing.
    match r.status {
        502 => {
            assert_eq!(r.proxy_error().as_deref(), Some("dns_error"));
            assert_eq!(line["cause"], "dns_error");
        }
        504 => assert_eq!(r.proxy_error().as_deref(), Some("dns_timeout")),
        s => panic!("unexpected status {s}"),
    }
}

#[tokio::test]
async fn full_accept_queue_is_504_connection_timeout() {
    let hole = Blackhole::start().await.expect("blackhole");
    let e = Expect {
        status: 504,
        proxy_status: "connection_timeout",
        cause: "connect_timeout",
    };
    assert_cause(&[hole.addr], "connect_timeout = \"200ms\"", e).await;
}

#[tokio::test]
async fn garbage_status_line_is_502_protocol_error() {
    let up = Upstream::start(Behavior::GarbageStatusLine).await.unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_protocol_error",
        cause: "response_protocol_error",
    };
    assert_cause(&[up.addr], "", e).await;
}

#[tokio::test]
async fn reset_after_request_is_502_connection_terminated() {
    let up = Upstream::start(Behavior::ResetAfterRequest).await.unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "connection_terminated",
        cause: "upstream_reset",
    };
    assert_cause(&[up.addr], "", e).await;
}

#[tokio::test]
async fn close_without_answer_is_502_response_incomplete() {
    let up = Upstream::start(Behavior::CloseWithoutAnswer).await.unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_response_incomplete",
        cause: "upstream_closed",
    };
    assert_cause(&[up.addr], "", e).await;
}

#[tokio::test]
async fn slow_head_is_504_response_timeout() {
    let up = Upstream::start(Behavior::SlowHead(Duration::from_secs(10)))
        .await
        .unwrap();
    let e = Expect {
        status: 504,
        proxy_status: "http_response_timeout",
        cause: "response_timeout",
    };
    assert_cause(&[up.addr], "response_timeout = \"300ms\"", e).await;
}

#[tokio::test]
async fn oversize_headers_are_502_header_section_size() {
    let up = Upstream::start(Behavior::OversizeHeaders(100 * 1024))
        .await
        .unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_response_header_section_size",
        cause: "response_headers_too_large",
    };
    assert_cause(&[up.addr], "", e).await;
}

#[tokio::test]
async fn too_many_response_headers_are_502_unless_allowed() {
    // 150 fields: over the default max_response_headers (100).
    let up = Upstream::start(Behavior::ManyHeaders(150)).await.unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_response_header_section_size",
        cause: "response_headers_too_large",
    };
    assert_cause(&[up.addr], "", e).await;
    // Allowed: passed on whole.
    let gw = TestGateway::start(
        &(upstream("app", &[up.addr], "max_response_headers = 200") + &route("/", "app")),
    )
    .await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-h-149"), Some("149"));
}

#[tokio::test]
async fn content_length_with_chunked_is_502_protocol_error() {
    let up = Upstream::start(Behavior::ContentLengthAndChunked)
        .await
        .unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_protocol_error",
        cause: "response_framing_conflict",
    };
    assert_cause(&[up.addr], "", e).await;
}

#[tokio::test]
async fn invalid_first_chunk_is_502_protocol_error() {
    let up = Upstream::start(Behavior::InvalidChunk).await.unwrap();
    let e = Expect {
        status: 502,
        proxy_status: "http_protocol_error",
        cause: "response_body_invalid",
    };
    assert_cause(&[up.addr], "head_hold = \"2s\"", e).await;
}

#[tokio::test]
async fn no_server_is_503_with_retry_after() {
    let gw =
        TestGateway::start("[upstream.app]\nservers = []\n\n[[route]]\nupstream = \"app\"\n").await;
    let r = get(gw.addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_unavailable"));
    assert_eq!(r.header("retry-after"), Some("5"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["side"], "gateway");
    assert_eq!(line["cause"], "no_server_available");
}

#[tokio::test]
async fn no_route_is_404_from_the_gateway() {
    let up = Upstream::start(Behavior::Hello("x".into())).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/api", "app"))).await;
    let r = get(gw.addr, "/other", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_not_found"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "no_route");
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn upstream_own_503_passes_through_unchanged() {
    let up = Upstream::start(Behavior::Status(503)).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/", "app"))).await;
    let r = get(gw.addr, "/", &[("accept", "text/html")]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.header("proxy-status").is_none(),
        "no gateway error on an upstream's own 503"
    );
    assert_eq!(r.header("x-app"), Some("own-error"));
    assert_eq!(r.text(), "the application itself answered 503\n");
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["status"], 503);
    assert_eq!(line["side"], "upstream");
    assert_eq!(line["upstream_status"], 503);
    assert!(line["cause"].is_null());
}

#[tokio::test]
async fn truncated_body_after_head_aborts_the_client_connection() {
    let up = Upstream::start(Behavior::TruncatedBody).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/", "app"))).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200, "the head was already sent");
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(
        !r.complete,
        "the client must see a truncated response, not a fake success"
    );
    assert_eq!(r.body, b"0123456789");
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["aborted"], true);
    assert_eq!(line["cause"], "response_body_truncated");
    assert_eq!(line["proxy_status"], "http_response_incomplete");
    assert_eq!(line["bytes_out"], 10);
}

#[tokio::test]
async fn invalid_chunk_after_head_aborts_without_terminating_chunk() {
    let up = Upstream::start(Behavior::InvalidChunkLater(Duration::from_millis(300)))
        .await
        .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/", "app"))).await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "no terminating chunk after a broken upstream body"
    );
    assert_eq!(r.text(), "hello\n");
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["aborted"], true);
    assert_eq!(line["cause"], "response_body_invalid");
}

#[tokio::test]
async fn stalled_body_is_aborted_after_body_idle_timeout() {
    let up = Upstream::start(Behavior::SlowBody(Duration::from_secs(10)))
        .await
        .unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[up.addr], "body_idle_timeout = \"300ms\"") + &route("/", "app")),
    )
    .await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert_eq!(r.text(), "first part|");
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["aborted"], true);
    assert_eq!(line["cause"], "response_body_timeout");
    assert_eq!(line["proxy_status"], "connection_read_timeout");
}

#[tokio::test]
async fn client_gone_before_response_is_logged_as_499() {
    let up = Upstream::start(Behavior::SlowHead(Duration::from_secs(1)))
        .await
        .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/", "app"))).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET /leaving HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let mut found = None;
    for _ in 0..300 {
        found = gw.log_lines().into_iter().find(|l| l["path"] == "/leaving");
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let line = found.expect("a log line for the abandoned request");
    assert_eq!(line["status"], 499);
    assert_eq!(
        line["request_id"].as_str().map(str::len),
        Some(20),
        "the id is known from the start"
    );
    assert_eq!(line["cause"], "client_closed");
    assert_eq!(line["side"], "downstream");
}

#[tokio::test]
async fn invalid_chunked_request_body_is_400_client_body_error() {
    let up = Upstream::start(Behavior::Sink).await.unwrap();
    let gw = TestGateway::start(&(upstream("app", &[up.addr], "") + &route("/", "app"))).await;
    let r = common::send_raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "client_body_error");
    assert_eq!(line["side"], "downstream");
}

#[tokio::test]
async fn stalled_client_upload_is_408_client_body_timeout() {
    let up = Upstream::start(Behavior::Sink).await.unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[up.addr], "body_idle_timeout = \"300ms\"") + &route("/", "app")),
    )
    .await;
    let r = common::send_raw(
        gw.addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\nconnection: close\r\n\r\nonly ten b",
    )
    .await;
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_request_error"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "client_body_timeout");
    assert_eq!(line["side"], "downstream");
    assert_eq!(line["bytes_in"], 10);
}

#[tokio::test]
async fn upstream_that_stops_reading_the_upload_is_504_write_timeout() {
    let up = Upstream::start(Behavior::IgnoreBody(Duration::from_secs(10)))
        .await
        .unwrap();
    let gw = TestGateway::start(
        &(upstream("app", &[up.addr], "body_idle_timeout = \"300ms\"") + &route("/", "app")),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let n: u64 = 256 << 20;
    s.write_all(
        format!("POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let block = vec![0u8; 64 * 1024];
        // Stops when the gateway stops reading or closes.
        for _ in 0..(n / block.len() as u64) {
            if tokio::time::timeout(Duration::from_secs(5), wr.write_all(&block))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
    writer.abort();
    let r = common::parse_response(&buf);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("connection_write_timeout"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "upstream_write_timeout");
}

/// A line's `time` is when the request started (as nginx's `$time_iso8601`
/// is not: that is when it is logged), also for a slow success.
#[tokio::test]
async fn the_log_time_is_when_the_request_started() {
    let slow = Upstream::start(Behavior::DelayedHello(
        "slow".into(),
        Duration::from_millis(600),
    ))
    .await
    .unwrap();
    let gw = TestGateway::start(&format!(
        "{}{}",
        upstream("app", &[slow.addr], ""),
        route("/", "app")
    ))
    .await;
    let before = std::time::SystemTime::now();
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    let line = gw.log_line(&r.request_id()).await;
    let time = line["time"].as_str().unwrap();
    // Same format, UTC: the strings order as the times do.
    let lo = waygate_telemetry::rfc3339_millis(before);
    let hi = waygate_telemetry::rfc3339_millis(before + Duration::from_millis(300));
    assert!(
        lo.as_str() <= time && time <= hi.as_str(),
        "{time} not within [{lo}, {hi}]"
    );
}
