//! The client connection's socket, wrapped to enforce two timeouts that
//! hyper's HTTP/1 server cannot tell apart:
//! - `client_header_timeout`: from the first byte of a request head (or the
//!   accept, for the first request) until the head is complete;
//! - `keepalive_timeout`: how long a connection may sit idle between
//!   requests.
//!
//! While a request is in flight neither runs (body and response timeouts
//! apply instead). When one fires, reads report end-of-file and hyper closes
//! the connection. The timer is reset only on phase changes, not per read.
//!
//! It also *parks* idle plain-TCP connections, as nginx and HAProxy do:
//! a connection idle for [`PARK_AFTER`] with nothing left to write reports
//! end-of-file to hyper without closing the socket, hands the socket back
//! through its [`ParkSlot`], and hyper's connection (its 8 KiB read buffer,
//! its write buffer, its state) is freed. The server then waits for the
//! socket to become readable, holding only the socket, and serves it with a
//! fresh hyper connection (see `server::serve_http1`).
//!
//! And it closes in stages when the client may still be sending a request
//! body (see [`linger`]), as nginx's lingering close does: a close with
//! unread bytes would reset the connection, and the reset can destroy the
//! response before the client reads it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::ConnShared;

/// How long a plain-TCP connection sits idle before it is parked. Long
/// enough that a client sending its next request right away (a load test, a
/// browser fetching the next resource) keeps its hyper connection; short
/// enough that thousands of idle keep-alive connections cost a socket each,
/// not a hyper connection each (about 25 KiB; see BENCHMARKS.md).
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(250);

/// Where a parked connection leaves its socket and its keep-alive deadline.
pub(crate) type ParkSlot<S> = Arc<Mutex<Option<(S, Instant)>>>;

/// A lingering close ends when the client has sent nothing for this long
/// (nginx's `lingering_timeout`)...
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// ...or after this long in all (nginx's `lingering_time`).
const LINGER_MAX: Duration = Duration::from_secs(30);

/// At most this many connections linger at once; past it, a connection
/// closes at once. Lingering sockets no longer count against the
/// connection limits, so this bounds what clients that keep trickling
/// bytes after their answer can hold: a socket and a small task each.
const LINGER_MAX_CONNS: usize = 1024;

/// Connections lingering now, in the whole process.
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Client connections lingering now (`waygate_client_connections_lingering`).
pub(crate) fn lingering() -> usize {
    LINGERING.load(Ordering::Relaxed)
}

/// Sent when a request head does not complete within client_header_timeout.
const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\nproxy-status: waygate; error=http_request_error; details=\"client_header_timeout\"\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the keep-alive timer runs.
    Idle,
    /// Bytes of a request head have arrived (or the connection is new):
    /// the header timer runs.
    Head,
    /// A request is in flight.
    Busy,
}

#[derive(Debug)]
pub(crate) struct ClientIo<S: ClientStream = TcpStream> {
    /// Always `Some` until dropped (taken only by `Drop`, to park).
    stream: Option<S>,
    shared: Arc<ConnShared>,
    phase: Phase,
    /// When the current phase's timer fires (in `Idle`, the earlier of the
    /// park time and `keepalive_deadline`).
    deadline: Instant,
    /// When the current idle period ends the connection.
    keepalive_deadline: Instant,
    /// Where to park the socket; `None` for streams that never park (TLS:
    /// rustls may hold decrypted bytes that socket readiness cannot see).
    park: Option<ParkSlot<S>>,
    /// End-of-file was reported to hyper to park the connection: shutdown
    /// is a no-op and `Drop` hands the socket to `park`.
    parking: bool,
    /// Bytes were written since the last completed flush: hyper may still
    /// hold response bytes, so the connection is not parked yet.
    unflushed: bool,
    /// `shared.requests` when last seen: a change means a request came and
    /// went, even one answered before any read saw it in flight.
    seen_requests: u32,
    /// The timer is set to `deadline`. It is only (re)armed when a read
    /// has to wait, so a request whose head arrives in one read costs no
    /// timer update for its header phase.
    armed: bool,
    /// Bytes of a request head arrived in the current head phase.
    head_bytes: bool,
    timer: Pin<Box<Sleep>>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

/// A client connection's byte stream: plain TCP or TLS over it.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether idle connections of this kind are parked.
    const PARKS: bool;

    /// Writes what fits without waiting (best effort, for a last word
    /// before closing).
    fn try_write_now(&mut self, buf: &[u8]);

    /// Ready when the socket has bytes (or end-of-file) to read.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientStream for TcpStream {
    const PARKS: bool = true;

    fn try_write_now(&mut self, buf: &[u8]) {
        let _ = self.try_write(buf);
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    const PARKS: bool = false;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }

    fn try_write_now(&mut self, buf: &[u8]) {
        // Encrypts into the session and writes what the socket takes now.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut *self).poll_write(&mut cx, buf);
        let _ = Pin::new(&mut *self).poll_flush(&mut cx);
    }
}

// === impl ClientIo ===

impl<S: ClientStream> ClientIo<S> {
    /// Wraps a new connection's stream, or a parked one's that became
    /// readable: both start in the header phase.
    pub(crate) fn new(
        stream: S,
        shared: Arc<ConnShared>,
        header_timeout: Duration,
        keepalive_timeout: Duration,
        park: Option<ParkSlot<S>>,
    ) -> Self {
        let deadline = Instant::now() + header_timeout;
        Self {
            stream: Some(stream),
            phase: Phase::Head,
            deadline,
            keepalive_deadline: deadline,
            park,
            parking: false,
            unflushed: false,
            seen_requests: shared.requests.load(Ordering::Relaxed),
            shared,
            armed: true,
            head_bytes: false,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            header_timeout,
            keepalive_timeout,
        }
    }

    fn enter(&mut self, phase: Phase) {
        if self.phase == phase {
            return;
        }
        self.phase = phase;
        self.head_bytes = false;
        self.deadline = match phase {
            Phase::Idle => {
                let now = Instant::now();
                self.keepalive_deadline = now + self.keepalive_timeout;
                self.park_time(now)
            }
            Phase::Head => Instant::now() + self.header_timeout,
            Phase::Busy => return,
        };
        self.armed = false;
    }

    /// When an idle connection should next try to park (or close).
    fn park_time(&self, now: Instant) -> Instant {
        match self.park {
            Some(_) => (now + PARK_AFTER).min(self.keepalive_deadline),
            None => self.keepalive_deadline,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut S>> {
        match self.stream.as_mut() {
            Some(s) => Ok(Pin::new(s)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The idle timer fired: park, close (keep-alive over), or, with
    /// response bytes still being written, try again later. Returns whether
    /// to report end-of-file.
    fn idle_timer_fired(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.keepalive_deadline || self.park.is_none() {
            tracing::debug!(timeout = "keepalive_timeout", "closing client connection");
            return true;
        }
        if self.unflushed {
            self.deadline = self.park_time(now);
            self.armed = false;
            return false;
        }
        self.parking = true;
        true
    }
}

impl<S: ClientStream> Drop for ClientIo<S> {
    fn drop(&mut self) {
        if !self.parking {
            if self.shared.with_body.load(Ordering::Relaxed) {
                if let Some(stream) = self.stream.take() {
                    linger(stream);
                }
            }
            return;
        }
        if let (Some(slot), Some(stream)) = (self.park.as_ref(), self.stream.take()) {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some((stream, self.keepalive_deadline));
        }
    }
}

/// Closes a connection whose latest request came with a body, in stages:
/// a FIN after the response, then whatever the client still sends is read
/// and dropped until it closes too, goes quiet for [`LINGER_IDLE`], or
/// [`LINGER_MAX`] passes. Closed at once, a socket with unread bytes sends
/// a reset, and the client's system may then discard the response before
/// the client reads it; a client still uploading (answered early, by a 413
/// or by an upstream that did not wait for the body) sees its upload fail.
fn linger<S: ClientStream>(mut stream: S) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= LINGER_MAX_CONNS {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    rt.spawn(async move {
        let end = Instant::now() + LINGER_MAX;
        let drain = async {
            stream.shutdown().await?;
            loop {
                let quiet = (Instant::now() + LINGER_IDLE).min(end);
                match tokio::time::timeout_at(quiet, discard(&mut stream)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Ok::<_, io::Error>(()),
                }
            }
        };
        let _ = tokio::time::timeout_at(end, drain).await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Reads what has arrived and drops it; the number of bytes (0 at the
/// end). The buffer lives only during a poll: a lingering connection holds
/// none while it waits.
async fn discard<S: ClientStream>(stream: &mut S) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut buf = [0u8; 8 * 1024];
        let mut rb = ReadBuf::new(&mut buf);
        std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    })
    .await
}

impl<S: ClientStream> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parking {
            return Poll::Ready(Ok(()));
        }
        if this.shared.in_flight.load(Ordering::Acquire) > 0 {
            this.enter(Phase::Busy);
            let r = this.stream()?.poll_read(cx, buf);
            if r.is_pending() {
                // Be woken when the response finishes, to start the
                // keep-alive timer even if the client sends nothing.
                this.shared.idle_waker.register(cx.waker());
                if this.shared.in_flight.load(Ordering::Acquire) == 0 {
                    cx.waker().wake_by_ref();
                }
            }
            return r;
        }
        let requests = this.shared.requests.load(Ordering::Relaxed);
        if this.phase == Phase::Busy || requests != this.seen_requests {
            this.seen_requests = requests;
            this.enter(Phase::Idle);
        }
        let before = buf.filled().len();
        match this.stream()?.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.enter(Phase::Head);
                    this.head_bytes = true;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                if !this.armed {
                    this.timer.as_mut().reset(this.deadline);
                    this.armed = true;
                }
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if this.phase == Phase::Idle {
                    if this.idle_timer_fired() {
                        // End-of-file: hyper ends the connection (and,
                        // when parking, leaves the socket open).
                        return Poll::Ready(Ok(()));
                    }
                    continue; // re-armed for later
                }
                tracing::debug!(
                    timeout = "client_header_timeout",
                    "closing client connection"
                );
                if this.head_bytes {
                    if let Some(s) = this.stream.as_mut() {
                        // A partial request head: say so (RFC 9110
                        // §15.5.9) before closing. Best effort: the
                        // socket's send buffer is empty at this point,
                        // so this never waits.
                        s.try_write_now(TIMEOUT_408);
                    }
                }
                // Report end-of-file: hyper closes the connection.
                return Poll::Ready(Ok(()));
            },
        }
    }
}

impl<S: ClientStream> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        this.stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        this.stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    /// hyper flushes the socket after writing out all it holds, so a
    /// completed flush means no response bytes are left in user space.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = this.stream()?.poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            this.unflushed = false;
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parking {
            // Parked, not closed: the socket goes back to the server.
            return Poll::Ready(Ok(()));
        }
        this.stream()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    impl ClientStream for DuplexStream {
        const PARKS: bool = true;

        fn try_write_now(&mut self, _: &[u8]) {}

        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A response the gateway is done with while hyper still holds most of
    /// it (the client reads nothing for 8 park delays): the client gets it
    /// all, and the connection parks (socket handed back, not closed) once
    /// it is written.
    #[tokio::test(start_paused = true)]
    async fn parks_once_the_response_is_written() {
        const SIZE: usize = 256 * 1024;
        let (mut client, server) = tokio::io::duplex(4096);
        let shared = Arc::new(ConnShared::default());
        let slot = ParkSlot::default();
        let io = ClientIo::new(
            server,
            shared.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
            Some(slot.clone()),
        );
        let svc = hyper::service::service_fn(move |_req| {
            // In flight from the request to the end of the response on the
            // gateway's side, which here is at once.
            shared.requests.fetch_add(1, Ordering::Relaxed);
            shared.begin();
            shared.end();
            let body = http_body_util::Full::new(Bytes::from(vec![b'x'; SIZE]));
            async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
        });
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(io), svc),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("request written");
        // Idle (for ClientIo) far past PARK_AFTER, with the response unread.
        tokio::time::sleep(PARK_AFTER * 8).await;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let body_len = |got: &[u8]| {
            let head = got.windows(4).position(|w| w == b"\r\n\r\n");
            head.map_or(0, |h| got.len() - h - 4)
        };
        while body_len(&got) < SIZE {
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("the rest of the response arrives")
                .expect("read");
            assert!(n > 0, "closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(body_len(&got), SIZE);
        // All written: now it parks, handing the socket back.
        let served = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("parked after PARK_AFTER idle");
        assert!(matches!(served, Ok(Ok(()))));
        assert!(
            slot.lock().expect("slot").is_some(),
            "socket parked, not closed"
        );
    }
}
