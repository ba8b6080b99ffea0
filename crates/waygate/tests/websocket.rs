//! WebSocket (HTTP/1.1 Upgrade) through the gateway: a tokio-tungstenite
//! client and echo server, tunnels counted in metrics, the idle timeout, a
//! tunnel outliving the listener's keep-alive timeout, and the failed
//! switches answered 502 `http_upgrade_failed`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use waygate_test_util::{Behavior, Upstream};

use common::{get, route, send_raw, upstream, TestGateway};

/// A WebSocket server that echoes every data message.
async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(gw: SocketAddr, path: &str) -> (Ws, http::Response<Option<Vec<u8>>>) {
    let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{gw}{path}"), tcp)
        .await
        .unwrap()
}

fn metric(text: &str, name: &str, upstream: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{upstream=\"{upstream}\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn websocket_echo_through_the_gateway_is_counted() {
    let echo = echo_server().await;
    let gw = TestGateway::start(&(upstream("ws", &[echo], "") + &route("/", "ws"))).await;
    let (mut ws, resp) = connect(gw.addr, "/chat").await;
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));
    for i in 0..20 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));

    let text = gw.gateway.metrics_text();
    assert_eq!(
        metric(&text, "waygate_tunnels_active", "ws"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "waygate_tunnels_opened_total", "ws"),
        Some(1.0)
    );

    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    let mut active = None;
    for _ in 0..200 {
        active = metric(&gw.gateway.metrics_text(), "waygate_tunnels_active", "ws");
        if active == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(active, Some(0.0));
    // The handshake is an ordinary request in the access log.
    let lines = gw.log_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], 101);
    assert_eq!(lines[0]["path"], "/chat");
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_tunnel_idle_timeout_not_keepalive_timeout() {
    let echo = echo_server().await;
    let gw = TestGateway::start_with(
        "keepalive_timeout = \"100ms\"",
        &(upstream("ws", &[echo], "tunnel_idle_timeout = \"600ms\"") + &route("/", "ws")),
    )
    .await;
    let (mut ws, _) = connect(gw.addr, "/").await;
    // Longer than the keep-alive timeout: the tunnel is not an idle
    // keep-alive connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    // Then silence beyond the tunnel idle timeout closes it.
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        !matches!(end, Some(Ok(Message::Text(_)))),
        "closed, not a message: {end:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
}

/// A server that reads a request head and answers with `response`.
async fn raw_server(response: &'static [u8]) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        }
    });
    addr
}

const WS_REQUEST: &[u8] = b"GET /ws HTTP/1.1\r\nhost: test.local\r\nconnection: Upgrade, close\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn failed_switches_are_502_http_upgrade_failed() {
    // Switches to a protocol the client did not offer.
    let wrong = raw_server(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
    )
    .await;
    // Switches although nothing was asked.
    let unasked = raw_server(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let h2 = Upstream::start(Behavior::Hello("h2".into())).await.unwrap();
    let gw = TestGateway::start(&format!(
        "{}{}{}{}{}{}",
        upstream(
            "wrong",
            &[wrong],
            "[upstream.wrong.retry]\nmax_attempts = 1"
        ),
        upstream(
            "unasked",
            &[unasked],
            "[upstream.unasked.retry]\nmax_attempts = 1"
        ),
        upstream("h2", &[h2.addr], "protocol = \"h2c\""),
        route("/ws", "wrong"),
        route("/plain", "unasked"),
        route("/h2", "h2"),
    ))
    .await;
    let r = send_raw(gw.addr, WS_REQUEST).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_upgrade_failed"));
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["cause"], "http_upgrade_failed");

    let r = get(gw.addr, "/plain", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_upgrade_failed"));

    let req = String::from_utf8(WS_REQUEST.to_vec())
        .unwrap()
        .replace("GET /ws", "GET /h2");
    let r = send_raw(gw.addr, req.as_bytes()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("http_upgrade_failed"));
}

#[tokio::test]
async fn a_server_that_declines_the_upgrade_is_answered_as_usual() {
    let plain = Upstream::start(Behavior::Hello("plain".into()))
        .await
        .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[plain.addr], "") + &route("/", "app"))).await;
    let r = send_raw(gw.addr, WS_REQUEST).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello from plain"), "{}", r.text());
    // The server saw the upgrade asked of it.
    let seen = plain.seen();
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(seen[0].header("connection"), Some("upgrade"));
}

/// WebSocket over HTTP/2 (RFC 8441): the client's extended CONNECT reaches
/// an HTTP/1.1 WebSocket server as an Upgrade, and frames flow both ways
/// over the HTTP/2 stream.
#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let echo = echo_server().await;
    let gw = TestGateway::start(&(upstream("ws", &[echo], "") + &route("/", "ws"))).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // The gateway announces SETTINGS_ENABLE_CONNECT_PROTOCOL.
    for _ in 0..100 {
        if client.is_extended_connect_protocol_enabled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        client = client.ready().await.unwrap();
    }
    assert!(client.is_extended_connect_protocol_enabled());
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{}/chat", gw.addr))
        .extension(h2::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    let mut recv = resp.into_body();
    for text in ["hi", "over h2"] {
        // A masked text frame, as a client sends it (RFC 6455 §5.3).
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | text.len() as u8];
        f.extend(mask);
        f.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        send.send_data(bytes::Bytes::from(f), false).unwrap();
        let mut got = Vec::new();
        while got.len() < 2 + text.len() {
            let chunk = recv.data().await.unwrap().unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        let mut want = vec![0x81, text.len() as u8];
        want.extend_from_slice(text.as_bytes());
        assert_eq!(got, want);
    }
    let text = gw.gateway.metrics_text();
    assert_eq!(metric(&text, "waygate_tunnels_active", "ws"), Some(1.0));
}

/// h2c smuggling: an `Upgrade: h2c` would make a tunnel of HTTP/2 to the
/// upstream, carrying requests the gateway never routes or limits. It is
/// not passed on; the request goes as a plain one.
#[tokio::test]
async fn an_h2c_upgrade_is_never_passed_on() {
    let plain = Upstream::start(Behavior::Hello("plain".into()))
        .await
        .unwrap();
    let gw = TestGateway::start(&(upstream("app", &[plain.addr], "") + &route("/", "app"))).await;
    let r = send_raw(
        gw.addr,
        b"GET /admin HTTP/1.1\r\nhost: test.local\r\nconnection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = plain.seen();
    assert_eq!(seen[0].header("upgrade"), None);
    assert_eq!(seen[0].header("http2-settings"), None);
}
