//! Upstream connections: connecting (DNS, TCP, HTTP/1.1 handshake) under
//! the connect timeout with each failure classified, and a bounded,
//! lock-free pool of idle keep-alive connections per server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use waygate_config::ServerAddr;
use waygate_core::{Cause, GatewayError};
use waygate_resilience::ConnPermit;

use crate::body::UpstreamBody;
use crate::classify;

/// How long a returned connection may take to become ready for its next
/// request before it is given up.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Largest read buffer of an upstream connection: large enough for ≥ 90 %
/// of direct throughput on 1 GiB bodies, small enough that a slow reader
/// holds ~430 KB (BENCHMARKS.md, "Large bodies").
const READ_BUF_MAX: usize = 128 * 1024;

/// A pooled connection is closed this long before the server's own
/// announced keep-alive timeout.
const KEEPALIVE_MARGIN: Duration = Duration::from_millis(500);

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
    /// Woken when a connection is returned, for requests waiting on the
    /// upstream's connection limit.
    released: Arc<Notify>,
    /// The upstream's open-connection gauge.
    conn_count: Arc<AtomicI64>,
}

#[derive(Debug)]
struct Idle {
    tx: SendRequest<UpstreamBody>,
    task: AbortHandle,
    expires: Instant,
}

/// A connection checked out of (or fresh for) a server.
#[derive(Debug)]
pub(crate) struct PooledConn {
    pub(crate) tx: SendRequest<UpstreamBody>,
    /// The task driving the connection: aborting it closes the socket and
    /// drops whatever request body it still holds.
    task: AbortHandle,
    server: Arc<Server>,
    /// Came from the pool (as opposed to freshly connected).
    pub(crate) reused: bool,
    /// The server's own idle timeout, from its `Keep-Alive: timeout=N`.
    pub(crate) server_keepalive: Option<Duration>,
}

// === impl Server ===

impl Server {
    pub(crate) fn new(
        addr: ServerAddr,
        max_idle: usize,
        idle_timeout: Duration,
        max_header_size: usize,
        released: Arc<Notify>,
        conn_count: Arc<AtomicI64>,
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
            released,
            conn_count,
        }
    }

    /// An idle connection that is still open and ready, if any.
    pub(crate) fn checkout(self: &Arc<Self>) -> Option<PooledConn> {
        let now = Instant::now();
        while let Some(idle) = self.idle.pop() {
            if idle.tx.is_closed() || now >= idle.expires {
                idle.task.abort();
                continue;
            }
            if idle.tx.is_ready() {
                return Some(PooledConn {
                    tx: idle.tx,
                    task: idle.task,
                    server: self.clone(),
                    reused: true,
                    server_keepalive: None,
                });
            }
            // Not ready yet (its previous exchange is still settling): give
            // it back and open a fresh one rather than wait.
            if let Err(idle) = self.idle.push(idle) {
                idle.task.abort();
            }
            return None;
        }
        None
    }

    /// Pools a connection for at most the pool idle timeout, and never
    /// longer than the server said it keeps idle connections (minus a
    /// margin), so the gateway closes it before the server does.
    fn put(
        &self,
        tx: SendRequest<UpstreamBody>,
        task: AbortHandle,
        server_keepalive: Option<Duration>,
    ) {
        if tx.is_closed() {
            return;
        }
        let mut ttl = self.idle_timeout;
        if let Some(ka) = server_keepalive {
            ttl = ttl.min(ka.saturating_sub(KEEPALIVE_MARGIN));
        }
        if ttl.is_zero() {
            task.abort();
            return;
        }
        let idle = Idle {
            tx,
            task,
            expires: Instant::now() + ttl,
        };
        if let Err(full) = self.idle.push(idle) {
            // A full pool closes the connection.
            full.task.abort();
        }
        self.released.notify_one();
    }

    /// Opens a new connection: DNS (unless the host is an IP), TCP connect
    /// and HTTP/1.1 handshake, all within `timeout`. `permit` is held for
    /// as long as the connection is open.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        timeout: Duration,
        permit: ConnPermit,
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
            // Reads grow adaptively up to this size while a body streams
            // (bigger reads: fewer syscalls for large responses); the head
            // is bounded separately by max_header_size.
            .max_buf_size(READ_BUF_MAX.max(self.max_header_size))
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
        let count = ConnCount::new(self.conn_count.clone());
        let task = tokio::spawn(async move {
            // The connection counts against the upstream's limit while open.
            let _permit = permit;
            let _count = count;
            if let Err(e) = conn.await {
                tracing::debug!(server = %label, error = %e, "upstream connection ended with an error");
            }
        })
        .abort_handle();
        Ok(PooledConn {
            tx,
            task,
            server: self.clone(),
            reused: false,
            server_keepalive: None,
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
        let PooledConn {
            tx,
            task,
            server,
            server_keepalive,
            ..
        } = self;
        if tx.is_ready() {
            server.put(tx, task, server_keepalive);
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let mut tx = tx;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                server.put(tx, task, server_keepalive);
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

/// Counts an open upstream connection in its upstream's gauge; the count
/// drops when the connection's task ends or is aborted.
struct ConnCount(Arc<AtomicI64>);

impl ConnCount {
    fn new(c: Arc<AtomicI64>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `timeout=N` of a `Keep-Alive` response header (RFC 2068 §19.7.1.1).
pub(crate) fn keepalive_timeout(value: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?;
    s.split(',')
        .filter_map(|p| p.trim().strip_prefix("timeout="))
        .find_map(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::keepalive_timeout;
    use std::time::Duration;

    #[test]
    fn parses_keep_alive_timeout() {
        assert_eq!(
            keepalive_timeout(b"timeout=5, max=100"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            keepalive_timeout(b"max=100,timeout=2"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(keepalive_timeout(b"max=100"), None);
        assert_eq!(keepalive_timeout(b"timeout=x"), None);
    }
}
