//! Request smuggling: raw request vectors (CL.TE, TE.CL, TE.TE
//! obfuscations, CL.CL, chunk-size tricks, header-line tricks, pipelining
//! after an error) sent on a raw socket through the gateway to a recording
//! upstream. Each must be rejected with 400 (and the connection closed), or
//! reach the upstream as exactly the requests the client meant, each with
//! one unambiguous framing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waygate_test_util::{Behavior, Upstream};

/// What must happen to a vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// 400, connection closed, nothing reaches the upstream.
    Rejected,
    /// The upstream sees exactly this many requests, then (for a bad one
    /// after them) the client gets 400.
    Forwarded(usize),
    /// Normalized: the upstream sees exactly this many requests, each with
    /// one framing, and the gateway reads nothing more from the connection
    /// (RFC 9112 §6.1 lets a server process a request with both
    /// Content-Length and Transfer-Encoding by the latter alone, and then
    /// it MUST close the connection; hyper does so).
    ForwardedThenClosed(usize),
}

use Expect::*;

const VECTORS: &[(&str, &str, Expect)] = &[
    // CL.TE and TE.CL: both framings in one request.
    (
        "CL.TE",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        ForwardedThenClosed(1),
    ),
    (
        "TE.CL",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ForwardedThenClosed(1),
    ),
    // TE.TE: obfuscated Transfer-Encoding.
    (
        "TE xchunked",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE chunked-space",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        ForwardedThenClosed(1),
    ),
    (
        "TE not final",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE duplicated",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE quoted",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE in HTTP/1.0",
        "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE space before colon",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "TE tab value",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(1),
    ),
    (
        "TE uppercase",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(1),
    ),
    // CL.CL.
    (
        "CL.CL differing",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Rejected,
    ),
    (
        "CL list differing",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        Rejected,
    ),
    (
        "CL plus sign",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        Rejected,
    ),
    (
        "CL negative",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        Rejected,
    ),
    (
        "CL hex",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
        Rejected,
    ),
    // Chunk-size tricks.
    (
        "chunk size hex prefix",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk size negative",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk size overflow",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk size LF only",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk ext bare CR",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\rb\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk data longer than size",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        Rejected,
    ),
    (
        "chunk ext valid",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
        Forwarded(1),
    ),
    // Header-line tricks.
    (
        "obs-fold",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        Rejected,
    ),
    (
        "space before colon",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        Rejected,
    ),
    (
        "bare CR in value",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        Rejected,
    ),
    (
        "NUL in value",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
        Rejected,
    ),
    (
        "invalid header name",
        "GET / HTTP/1.1\r\nHost: x\r\nX@A: y\r\n\r\n",
        Rejected,
    ),
    (
        "LF-only line endings",
        "GET / HTTP/1.1\nHost: x\n\n",
        Forwarded(1),
    ),
    (
        "request line double space",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        Rejected,
    ),
    (
        "two Host headers",
        "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        Rejected,
    ),
    (
        "no Host in HTTP/1.1",
        "GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
        Rejected,
    ),
    (
        "absolute-form with another Host",
        "GET http://other.example/ HTTP/1.1\r\nHost: x\r\n\r\n",
        Forwarded(1),
    ),
    // Never an open proxy.
    (
        "CONNECT",
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        Rejected,
    ),
    // Pipelining after an error: the first request goes through, the bad
    // one is refused, and nothing after it is read.
    (
        "pipelined after CL.TE",
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        ForwardedThenClosed(2),
    ),
    (
        "pipelined after a bad Transfer-Encoding",
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
        Forwarded(1),
    ),
    (
        "smuggled in a CL body",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 32\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
        Forwarded(1),
    ),
];

/// Sends `bytes`; returns what came back and whether the gateway closed
/// the connection (rather than keeping it open for 2 s of silence).
async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Err(_) => return (out, false),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status codes of the responses in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..])
        .filter(|rest| {
            rest.len() > 3
                && rest.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && rest.as_bytes()[3] == b' '
        })
        .map(|rest| &rest[..3])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_is_rejected_or_forwarded_unambiguously() {
    let mut failures = Vec::new();
    // All vectors at once, each with its own upstream and gateway.
    let mut tasks = Vec::new();
    for (name, raw, expect) in VECTORS.iter().copied() {
        tasks.push(tokio::spawn(async move {
            let up = Upstream::start(Behavior::Sink).await.unwrap();
            let gw = common::TestGateway::start(&format!(
                "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
                up.addr
            ))
            .await;
            let (out, closed) = send(gw.addr, raw.as_bytes()).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen = up.seen();
            let statuses = statuses(&text);
            let problem = match expect {
                Rejected if statuses != ["400"] || !seen.is_empty() || !closed => Some(format!(
                    "want a single 400, the connection closed and nothing upstream; got {statuses:?}, closed {closed}, upstream saw {}",
                    seen.len()
                )),
                Forwarded(n) if seen.len() != n => Some(format!(
                    "want {n} request(s) upstream; got {} ({statuses:?})",
                    seen.len()
                )),
                ForwardedThenClosed(n) if seen.len() != n || !closed || statuses.len() != n => {
                    Some(format!(
                        "want {n} request(s) upstream and the connection closed; got {}, closed {closed}, responses {statuses:?}",
                        seen.len()
                    ))
                }
                _ => None,
            };
            // Whatever reached the upstream has exactly one framing.
            let ambiguous = seen.iter().any(|r| {
                let cl = r.headers.iter().filter(|(n, _)| n == "content-length").count();
                let te = r.headers.iter().filter(|(n, _)| n == "transfer-encoding").count();
                cl + te > 1
            });
            let problem = problem.or_else(|| {
                ambiguous.then(|| "a request reached the upstream with two framings".to_owned())
            });
            problem.map(|p| format!("{name}: {p}\n  response: {:?}", text.lines().next()))
        }));
    }
    for t in tasks {
        if let Some(p) = t.await.unwrap() {
            failures.push(p);
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
