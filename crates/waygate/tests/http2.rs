//! HTTP/2 downstream: h2c with prior knowledge and h2 over TLS (ALPN), with
//! curl and a bounded h2load run; HTTP/1.1 on the same listener still works.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use waygate_test_util::{Behavior, Upstream};

fn app(up: &Upstream) -> String {
    format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        up.addr
    )
}

/// Runs a command off the runtime and returns (stdout, stderr).
async fn run(mut cmd: Command) -> (String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_and_http1_on_the_same_listener() {
    if !common::have("curl") || !common::have("h2load") {
        return;
    }
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let url = format!("http://{}/over-h2?x=1", gw.addr);
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    let (out, err) = run(cmd).await;
    assert_eq!(out, "hello from app: GET /over-h2?x=1\n\n2", "{err}");
    // The upstream got HTTP/1.1 with a Host and the forwarding headers.
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("host"), Some(gw.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // HTTP/1.1 on the same port.
    let r = common::get(gw.addr, "/over-h1", &[]).await;
    assert_eq!(r.status, 200);
    // A bounded load: 2,000 requests on 4 connections, 10 streams each.
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-n",
        "2000",
        "-c",
        "4",
        "-m",
        "10",
        &format!("http://{}/", gw.addr),
    ]);
    let (out, err) = run(cmd).await;
    assert!(
        out.contains("2000 succeeded, 0 failed, 0 errored"),
        "{out}{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_over_h2_keeps_its_status_and_proxy_status() {
    if !common::have("curl") {
        return;
    }
    let dead = waygate_test_util::refused_addr();
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{dead}\"]\n\n[[route]]\nupstream = \"app\"\n"
    ))
    .await;
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{}/", gw.addr),
    ]);
    let (out, err) = run(cmd).await;
    assert!(out.starts_with("HTTP/2 502"), "{out}{err}");
    assert!(
        out.contains("proxy-status: waygate; error=connection_refused"),
        "{out}"
    );
    assert!(out.contains("x-request-id: "), "{out}");
}

/// CVE-2023-44487: a client opening streams and resetting them at once, as
/// fast as it can. The gateway closes that connection (GOAWAY) and keeps
/// serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off_and_others_are_still_served() {
    let up = Upstream::start(Behavior::SlowHead(std::time::Duration::from_millis(200)))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..5000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let req = http::Request::get(format!("http://{}/flood", gw.addr))
            .body(())
            .unwrap();
        match client.send_request(req, true) {
            Ok((resp, _)) => drop(resp), // dropping the response resets the stream
            Err(_) => break,
        }
        sent += 1;
    }
    // The gateway ended the attacker's connection...
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
    assert!(
        ended.is_ok(),
        "the flooding connection was closed ({sent} streams sent)"
    );
    assert!(
        sent < 5000,
        "cut off before the flood ended: {sent} streams"
    );
    // ...while a normal client is served.
    let r = common::get(gw.addr, "/normal", &[]).await;
    assert_eq!(r.status, 200);
}

/// An HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block of HPACK literals (no indexing, no Huffman), so any
/// bytes, CR and LF included, can be sent.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// HTTP/2 → HTTP/1.1 downgrade: requests that are malformed in HTTP/2 in
/// ways an HTTP/1.1 upstream could misread (CR/LF in a header value or a
/// pseudo-header, DATA longer or shorter than `content-length`) never
/// reach the upstream as a request; the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_never_reach_the_http1_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(Behavior::Sink).await.unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let get = |extra: (&'static str, &'static str), path: &'static str| {
        block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            extra,
        ])
    };
    let post = block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/upload"),
        (":authority", "x"),
        ("content-length", "3"),
    ]);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "CR LF in a value",
            vec![frame(
                1,
                0x5,
                1,
                &get(("x-evil", "a\r\nx-injected: 1"), "/"),
            )],
        ),
        (
            "LF in :path",
            vec![frame(1, 0x5, 1, &get(("x-ok", "1"), "/a\nGET /b"))],
        ),
        (
            "NUL in a value",
            vec![frame(1, 0x5, 1, &get(("x-evil", "a\0b"), "/"))],
        ),
        (
            "DATA longer than content-length",
            vec![frame(1, 0x4, 1, &post), frame(0, 0x1, 1, b"0123456789")],
        ),
        (
            "DATA shorter than content-length",
            vec![frame(1, 0x4, 1, &post), frame(0, 0x1, 1, b"0")],
        ),
    ];
    for (name, frames) in cases {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        for f in frames {
            s.write_all(&f).await.unwrap();
        }
        // Read what comes back for a while (RST_STREAM, GOAWAY or a 4xx).
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            up.seen().is_empty(),
            "{name}: reached the upstream: {:?}",
            up.seen()
        );
    }
    // The same frames, well-formed, do reach it (the test can tell).
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    s.write_all(&frame(1, 0x4, 1, &post)).await.unwrap();
    s.write_all(&frame(0, 0x1, 1, b"abc")).await.unwrap();
    let mut reached = false;
    for _ in 0..100 {
        if up.seen().len() == 1 {
            reached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        reached,
        "a well-formed POST over raw frames reaches the upstream"
    );
    assert_eq!(up.seen()[0].body_len, 3);
    // Still serving HTTP/1.1 too.
    let r = common::send_raw(
        gw.addr,
        b"POST /fine HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.seen().len(), 2);
}

/// Opens a raw HTTP/2 connection (preface and empty SETTINGS sent).
async fn raw_h2(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    s
}

/// Reads until the peer closes or sends GOAWAY; false if neither happens
/// within `limit`.
async fn closed_or_goaway(s: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Err(_)) | Ok(Ok(0)) => return true,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Walk the frames received so far.
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            if buf[at + 3] == 7 {
                return true;
            }
            at += 9 + len;
        }
    }
}

/// The 2024 CONTINUATION flood: a header block that never ends, in tiny
/// CONTINUATION frames far below the header size limit, so only a cap on
/// the number of frames stops it. The gateway (hyper's `h2`) ends the
/// connection; another client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let mut s = raw_h2(gw.addr).await;
    // HEADERS with END_STREAM but without END_HEADERS...
    let start = block(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]);
    s.write_all(&frame(1, 0x1, 1, &start)).await.unwrap();
    // ...then 2,000 one-byte CONTINUATION frames (2 KB in all, well under
    // max_header_size), none with END_HEADERS.
    let mut sent = 0;
    for _ in 0..2000 {
        if s.write_all(&frame(9, 0, 1, b"\0")).await.is_err() {
            break;
        }
        sent += 1;
    }
    assert!(
        closed_or_goaway(&mut s, std::time::Duration::from_secs(5)).await,
        "the connection was ended ({sent} CONTINUATION frames sent)"
    );
    let r = common::get(gw.addr, "/normal", &[]).await;
    assert_eq!(r.status, 200);
}

/// A SETTINGS flood (CVE-2019-9515): SETTINGS frames as fast as the socket
/// takes them, never reading the ACKs. The gateway does not queue an ACK
/// per frame: once one ACK is pending it stops reading, so the flood stalls
/// in TCP instead of growing the gateway's memory; another client is served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_flood_stalls_instead_of_queueing_acks() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let s = raw_h2(gw.addr).await;
    let (_read_half_never_read, mut w) = s.into_split();
    // 1,000,000 SETTINGS frames: 9 MB, far more than the kernel buffers.
    let batch: Vec<u8> = (0..1000).flat_map(|_| frame(4, 0, 0, &[])).collect();
    let flood = async {
        for _ in 0..1000 {
            if w.write_all(&batch).await.is_err() {
                return "closed";
            }
        }
        "all sent"
    };
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(3), flood).await;
    assert!(
        !matches!(outcome, Ok("all sent")),
        "9 MB of SETTINGS were all read (ACKs queued in memory)"
    );
    let r = common::get(gw.addr, "/normal", &[]).await;
    assert_eq!(r.status, 200);
}

/// The limits a listener announces in its SETTINGS and first
/// WINDOW_UPDATE, read off the wire: concurrent streams, the stream and
/// connection flow-control windows, the header list size, and extended
/// CONNECT (for WebSocket).
#[tokio::test]
async fn the_configured_http2_limits_are_announced() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start_with(
        "max_concurrent_streams = 7\nhttp2_stream_window = 131072\nhttp2_connection_window = 4194304\nmax_header_size = 16384",
        &app(&up),
    )
    .await;
    let mut s = raw_h2(gw.addr).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut settings = std::collections::HashMap::new();
    let mut conn_window_update = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while settings.is_empty() || conn_window_update.is_none() {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("SETTINGS and WINDOW_UPDATE within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            if buf.len() < at + 9 + len {
                break;
            }
            let (kind, flags) = (buf[at + 3], buf[at + 4]);
            let stream = u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]);
            let payload = &buf[at + 9..at + 9 + len];
            if kind == 4 && flags & 1 == 0 {
                for p in payload.chunks(6) {
                    let id = u16::from_be_bytes([p[0], p[1]]);
                    settings.insert(id, u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
                }
            }
            if kind == 8 && stream == 0 {
                conn_window_update = Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            at += 9 + len;
        }
        buf.drain(..at);
    }
    assert_eq!(
        settings.get(&3),
        Some(&7),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert_eq!(settings.get(&4), Some(&131_072), "INITIAL_WINDOW_SIZE");
    assert_eq!(settings.get(&6), Some(&16_384), "MAX_HEADER_LIST_SIZE");
    assert_eq!(settings.get(&8), Some(&1), "ENABLE_CONNECT_PROTOCOL");
    // The connection window starts at 65,535 and is raised to the setting.
    assert_eq!(conn_window_update, Some(4_194_304 - 65_535));
}
