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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::ConnShared;

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
pub(crate) struct ClientIo<S = TcpStream> {
    stream: S,
    shared: Arc<ConnShared>,
    phase: Phase,
    /// When the current phase's timeout fires.
    deadline: Instant,
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
    /// Writes what fits without waiting (best effort, for a last word
    /// before closing).
    fn try_write_now(&mut self, buf: &[u8]);
}

impl ClientStream for TcpStream {
    fn try_write_now(&mut self, buf: &[u8]) {
        let _ = self.try_write(buf);
    }
}

impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn try_write_now(&mut self, buf: &[u8]) {
        // Encrypts into the session and writes what the socket takes now.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut *self).poll_write(&mut cx, buf);
        let _ = Pin::new(&mut *self).poll_flush(&mut cx);
    }
}

// === impl ClientIo ===

impl<S: ClientStream> ClientIo<S> {
    pub(crate) fn new(
        stream: S,
        shared: Arc<ConnShared>,
        header_timeout: Duration,
        keepalive_timeout: Duration,
    ) -> Self {
        let deadline = Instant::now() + header_timeout;
        Self {
            stream,
            shared,
            phase: Phase::Head,
            deadline,
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
        let after = match phase {
            Phase::Idle => self.keepalive_timeout,
            Phase::Head => self.header_timeout,
            Phase::Busy => return,
        };
        self.deadline = Instant::now() + after;
        self.armed = false;
    }
}

impl<S: ClientStream> AsyncRead for ClientIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shared.in_flight.load(Ordering::Acquire) > 0 {
            this.enter(Phase::Busy);
            let r = Pin::new(&mut this.stream).poll_read(cx, buf);
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
        if this.phase == Phase::Busy {
            this.enter(Phase::Idle);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.enter(Phase::Head);
                    this.head_bytes = true;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.armed {
                    this.timer.as_mut().reset(this.deadline);
                    this.armed = true;
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    let which = if this.phase == Phase::Idle {
                        "keepalive_timeout"
                    } else {
                        "client_header_timeout"
                    };
                    tracing::debug!(timeout = which, "closing client connection");
                    if this.phase == Phase::Head && this.head_bytes {
                        // A partial request head: say so (RFC 9110 §15.5.9)
                        // before closing. Best effort: the socket's send
                        // buffer is empty at this point, so this never waits.
                        this.stream.try_write_now(TIMEOUT_408);
                    }
                    // Report end-of-file: hyper closes the connection.
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: ClientStream> AsyncWrite for ClientIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
