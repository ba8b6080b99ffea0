//! Upstream connections: connecting (DNS, TCP, HTTP/1.1 handshake) under
//! the connect timeout with each failure classified, and a bounded,
//! lock-free pool of idle keep-alive connections per server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use waygate_config::ServerAddr;
use waygate_core::{Cause, GatewayError};

use crate::body::UpstreamBody;
use crate::classify;

/// How long a returned connection may take to become ready for its next
/// request before it is given up.
const READY_WAIT: Duration = Duration::from_secs(1);

/// One server of an upstream and its idle connections.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: ServerAddr,
    /// `host:port`, for logs.
    pub(crate) label: Arc<str>,
    /// Set when the host is an IP literal: no DNS lookup needed.
    literal: Option<SocketAddr>,
    idle: ArrayQueue<Idle>,
    idle_timeout: Duration,
    max_header_size: usize,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<UpstreamBody>,
    task: AbortHandle,
    since: Instant,
}

/// A connection checked out of (or fresh for) a server.
#[derive(Debug)]
pub(crate) struct PooledConn {
    pub(crate) tx: SendRequest<UpstreamBody>,
    /// The task driving the connection: aborting it closes the socket and
    /// drops whatever request body it still holds.
    task: AbortHandle,
    server: Arc<Server>,
}

// === impl Server ===

impl Server {
    pub(crate) fn new(
        addr: ServerAddr,
        max_idle: usize,
        idle_timeout: Duration,
        max_header_size: usize,
    ) -> Self {
        let literal = addr
            .host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, addr.port));
        Self {
            label: addr.to_string().into(),
            addr,
            literal,
            idle: ArrayQueue::new(max_idle.max(1)),
            idle_timeout,
            max_header_size,
        }
    }

    /// An idle connection that is still open and ready, if any.
    pub(crate) fn checkout(self: &Arc<Self>) -> Option<PooledConn> {
        let now = Instant::now();
        while let Some(idle) = self.idle.pop() {
            if idle.tx.is_closed() || now.duration_since(idle.since) > self.idle_timeout {
                continue;
            }
            if idle.tx.is_ready() {
                return Some(PooledConn {
                    tx: idle.tx,
                    task: idle.task,
                    server: self.clone(),
                });
            }
            // Not ready yet (its previous exchange is still settling): give
            // it back and open a fresh one rather than wait.
            let _ = self.idle.push(idle);
            return None;
        }
        None
    }

    fn put(&self, tx: SendRequest<UpstreamBody>, task: AbortHandle) {
        if !tx.is_closed() {
            // A full pool drops the connection, which closes it.
            let _ = self.idle.push(Idle {
                tx,
                task,
                since: Instant::now(),
            });
        }
    }

    /// Opens a new connection: DNS (unless the host is an IP), TCP connect
    /// and HTTP/1.1 handshake, all within `timeout`.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Result<PooledConn, GatewayError> {
        let deadline = Instant::now() + timeout;
        let addr = match self.literal {
            Some(a) => a,
            None => self.resolve(deadline, timeout).await?,
        };
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let cause = classify::connect_error(&e);
                return Err(GatewayError::new(
                    cause,
                    format!("connect to {}: {e}", self.label),
                ));
            }
            Err(_) => {
                return Err(GatewayError::new(
                    Cause::ConnectTimeout,
                    format!("connect to {} timed out after {timeout:?}", self.label),
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(self.max_header_size.max(8192))
            .max_header_size(self.max_header_size)
            .max_headers(500)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                GatewayError::new(
                    Cause::UpstreamClosed,
                    format!("handshake with {}: {e}", self.label),
                )
            })?;
        let label = self.label.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(server = %label, error = %e, "upstream connection ended with an error");
            }
        })
        .abort_handle();
        Ok(PooledConn {
            tx,
            task,
            server: self.clone(),
        })
    }

    async fn resolve(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<SocketAddr, GatewayError> {
        let host = (self.addr.host.as_str(), self.addr.port);
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host(host)).await {
            Err(_) => Err(GatewayError::new(
                Cause::DnsTimeout,
                format!("resolving {} took longer than {timeout:?}", self.addr.host),
            )),
            Ok(Err(e)) => Err(GatewayError::new(
                Cause::DnsError,
                format!("resolving {}: {e}", self.addr.host),
            )),
            Ok(Ok(mut addrs)) => addrs.next().ok_or_else(|| {
                GatewayError::new(
                    Cause::DnsError,
                    format!("{} resolved to no address", self.addr.host),
                )
            }),
        }
    }
}

// === impl PooledConn ===

impl PooledConn {
    /// Gives the connection back to its server's pool once its exchange is
    /// over. If hyper has not yet marked it ready for the next request, a
    /// small task waits (bounded) for that before pooling it.
    pub(crate) fn release(self) {
        let PooledConn { tx, task, server } = self;
        if tx.is_ready() {
            server.put(tx, task);
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let mut tx = tx;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                server.put(tx, task);
            } else {
                task.abort();
            }
        });
    }

    /// Closes the connection now: after a failed or timed-out exchange its
    /// state is unknown, and it may hold the client's request body.
    pub(crate) fn close(self) {
        self.task.abort();
    }
}
