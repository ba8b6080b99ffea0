//! HTTP/1.1 Upgrade (WebSocket) tunnels: which requests ask for one, which
//! `101 Switching Protocols` answers may be passed on, and the byte copy
//! between client and server once both sides have switched, closed after
//! `tunnel_idle_timeout` without a byte either way.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::body::ConnShared;
use crate::drain::Watcher;
use crate::metrics::TunnelCount;

/// Size of each direction's copy buffer.
const BUF: usize = 16 * 1024;

/// Once one side has closed, how long the other may still send (like
/// HAProxy's `timeout client-fin`); a WebSocket has finished its own
/// closing handshake by then.
const FIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, with
/// `upgrade` among its `Connection` options), if any. HTTP/2 has no
/// Upgrade (RFC 9113 §8.6). An offer of `h2c` is never passed on: a
/// tunnel of HTTP/2 to the upstream would carry requests the gateway never
/// sees, routes or limits ("h2c smuggling"); such a request goes on as a
/// plain one.
pub(crate) fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    let offered = req.headers().get(header::UPGRADE)?;
    let h2c = offered.to_str().map_or(true, |o| {
        o.split(',').any(|p| {
            p.trim()
                .get(..3)
                .is_some_and(|t| t.eq_ignore_ascii_case("h2c"))
        })
    });
    (!h2c).then(|| offered.clone())
}

/// The protocol of an HTTP/2 extended CONNECT (RFC 8441), if it is
/// WebSocket: the only protocol defined for it, and the only one tunnelled.
pub(crate) fn requested_h2<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.method() != http::Method::CONNECT {
        return None;
    }
    let p = req.extensions().get::<hyper::ext::Protocol>()?;
    p.as_str()
        .eq_ignore_ascii_case("websocket")
        .then(|| HeaderValue::from_static("websocket"))
}

/// Turns an extended CONNECT (RFC 8441 §5) into the HTTP/1.1 WebSocket
/// handshake an upstream expects: `GET` with `Upgrade: websocket` and a
/// fresh `Sec-WebSocket-Key` (HTTP/2 clients send none).
pub(crate) fn connect_to_upgrade(parts: &mut http::request::Parts) {
    parts.method = http::Method::GET;
    let key: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    if let Ok(v) = HeaderValue::from_str(&key) {
        parts.headers.insert(header::SEC_WEBSOCKET_KEY, v);
    }
    if !parts.headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        parts.headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
}

/// Whether the server switched to a protocol the client offered (RFC 9110
/// §7.8: the server's `Upgrade` names the protocol it switched to).
pub(crate) fn switched_to_offered(offered: &HeaderValue, response: &HeaderMap) -> bool {
    let Some(chosen) = response.get(header::UPGRADE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let chosen = chosen.trim();
    offered
        .to_str()
        .ok()
        .is_some_and(|o| o.split(',').any(|p| p.trim().eq_ignore_ascii_case(chosen)))
}

/// What keeps a tunnel accounted for while it is open (each field does its
/// work when dropped).
#[allow(dead_code)]
pub(crate) struct Holds {
    /// Keeps the client connection out of its keep-alive and header timers.
    pub(crate) busy: Busy,
    /// Counts in the listener's drain.
    pub(crate) drain: Watcher,
    pub(crate) count: Option<TunnelCount>,
}

/// Marks the client connection busy while held.
pub(crate) struct Busy(Arc<ConnShared>);

impl Busy {
    pub(crate) fn new(c: Arc<ConnShared>) -> Self {
        c.begin();
        Self(c)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Waits for the client's side of the switch (after hyper wrote the 101),
/// then copies bytes both ways until both sides close, either fails, or
/// nothing moves for `idle`.
pub(crate) async fn run(
    client: OnUpgrade,
    server: Upgraded,
    idle: Duration,
    holds: Holds,
    label: Arc<str>,
) {
    let _holds = holds;
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(server = %label, error = %e, "client side of the upgrade failed");
            return;
        }
    };
    let (up, down, why) = copy(TokioIo::new(client), TokioIo::new(server), idle).await;
    tracing::debug!(server = %label, bytes_up = up, bytes_down = down, end = why, "tunnel closed");
}

/// Copies `a` → `b` and `b` → `a`; returns the bytes each way and why it
/// ended. When one side closes, the other's write half is shut down and
/// it has `FIN_TIMEOUT` of silence left to finish.
async fn copy<A, B>(a: A, b: B, idle: Duration) -> (u64, u64, &'static str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; BUF];
    let mut bbuf = vec![0u8; BUF];
    let (mut a_open, mut b_open) = (true, true);
    let (mut up, mut down) = (0u64, 0u64);
    let mut idle = idle;
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    while a_open && b_open || (a_open || b_open) && !timer.is_elapsed() {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r {
                Ok(0) | Err(_) => {
                    a_open = false;
                    let _ = bw.shutdown().await;
                    idle = idle.min(FIN_TIMEOUT);
                    timer.as_mut().reset(Instant::now() + idle);
                }
                Ok(n) => {
                    if bw.write_all(&abuf[..n]).await.is_err() {
                        return (up, down, "server write failed");
                    }
                    up += n as u64;
                    timer.as_mut().reset(Instant::now() + idle);
                }
            },
            r = br.read(&mut bbuf), if b_open => match r {
                Ok(0) | Err(_) => {
                    b_open = false;
                    let _ = aw.shutdown().await;
                    idle = idle.min(FIN_TIMEOUT);
                    timer.as_mut().reset(Instant::now() + idle);
                }
                Ok(n) => {
                    if aw.write_all(&bbuf[..n]).await.is_err() {
                        return (up, down, "client write failed");
                    }
                    down += n as u64;
                    timer.as_mut().reset(Instant::now() + idle);
                }
            },
            _ = &mut timer => {
                let why = if a_open && b_open { "tunnel_idle_timeout" } else { "closed (one side)" };
                return (up, down, why);
            }
        }
    }
    (up, down, "closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_and_answers() {
        let req = Request::get("/")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap_or_default();
        let offered = requested(&req).expect("an upgrade");
        let mut resp = HeaderMap::new();
        resp.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(switched_to_offered(&offered, &resp));
        resp.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!switched_to_offered(&offered, &resp));
        resp.remove(header::UPGRADE);
        assert!(!switched_to_offered(&offered, &resp));

        let no_connection = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap_or_default();
        assert!(requested(&no_connection).is_none());
        let mut http10 = Request::get("/")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap_or_default();
        *http10.version_mut() = Version::HTTP_10;
        assert!(requested(&http10).is_none());
        let h2c = Request::get("/")
            .header("connection", "Upgrade, HTTP2-Settings")
            .header("upgrade", "websocket, H2C")
            .body(())
            .unwrap_or_default();
        assert!(requested(&h2c).is_none());
    }

    #[tokio::test]
    async fn copy_ends_on_idle_timeout() {
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let (_, _, why) = copy(a, b, Duration::from_millis(20)).await;
        assert_eq!(why, "tunnel_idle_timeout");
    }
}
