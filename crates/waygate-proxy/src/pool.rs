//! Upstream connections: connecting (DNS, TCP, TLS, HTTP/1.1 or HTTP/2
//! handshake) under the connect timeout with each failure classified; a
//! bounded, lock-free pool of idle keep-alive connections per server for
//! HTTP/1.1, and one shared multiplexed connection per server for HTTP/2.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use crossbeam_queue::{ArrayQueue, SegQueue};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use waygate_config::{ServerAddr, UpstreamProtocol};
use waygate_core::{Cause, GatewayError};
use waygate_resilience::ConnPermit;

use crate::body::UpstreamBody;
use crate::classify;
use crate::metrics::Gauged;

/// How long a returned connection may take to become ready for its next
/// request before it is given up.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Largest read buffer of an upstream connection: large enough for ≥ 90 %
/// of direct throughput on 1 GiB bodies, small enough that a slow reader
/// holds ~430 KB (BENCHMARKS.md, "Large bodies").
const READ_BUF_MAX: usize = 128 * 1024;

/// hyper's limit on header fields when none is set (it keeps its parse
/// arrays on the stack for it).
pub(crate) const HYPER_MAX_HEADERS: usize = 100;

/// A pooled connection is closed this long before the server's own
/// announced keep-alive timeout.
const KEEPALIVE_MARGIN: Duration = Duration::from_millis(500);

/// A pooled HTTP/1.1 connection (plain or TLS) idle this long is parked at the
/// next sweep: hyper's connection (its two 8 KiB buffers, its state, its
/// task: about 28 KB) ends, and the pool keeps the bare socket until a
/// request takes it or its idle time is over. Like the client side's
/// parking (`client_io`), for the memory a burst leaves behind.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// How an upstream's connections are made and pooled; shared by its
/// servers. Pools are kept across a reload only while this is unchanged.
#[derive(Debug)]
pub(crate) struct PoolSettings {
    pub(crate) max_idle: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_size: usize,
    pub(crate) max_headers: usize,
    pub(crate) protocol: UpstreamProtocol,
    /// Present: connections use TLS; an error if its configuration could
    /// not be built (every connect then fails with it).
    pub(crate) tls: Option<Result<waygate_upstream::TlsConnect, String>>,
}

impl PoolSettings {
    /// How health checks reach the servers: like requests do.
    pub(crate) fn transport(&self) -> waygate_upstream::Transport {
        waygate_upstream::Transport {
            tls: self.tls.as_ref().and_then(|t| t.as_ref().ok()).cloned(),
            h2: self.protocol != UpstreamProtocol::Http1,
        }
    }
}

/// The request half of an upstream connection.
#[derive(Debug)]
pub(crate) enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    /// One of the clones of a shared HTTP/2 connection's handle.
    H2(http2::SendRequest<UpstreamBody>),
}

/// One server of an upstream and its idle connections.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: ServerAddr,
    /// `host:port`, for logs.
    pub(crate) label: Arc<str>,
    /// Set when the host is an IP literal: no DNS lookup needed.
    literal: Option<SocketAddr>,
    idle: ArrayQueue<Idle>,
    /// The shared HTTP/2 connection, when the protocol is `h2` or `h2c`.
    h2: ArcSwapOption<H2Conn>,
    settings: Arc<PoolSettings>,
    /// Woken when a connection is returned, for requests waiting on the
    /// upstream's connection limit.
    released: Arc<Notify>,
    /// The upstream's open-connection gauge.
    conn_count: Arc<AtomicI64>,
    /// Parked connections: sockets without an HTTP connection, at most
    /// `max_idle`. Unbounded queue, capped by `park`: it takes no memory
    /// until a connection is parked (an `ArrayQueue` allocates all its
    /// slots up front, for every server).
    parked: SegQueue<Parked>,
    /// The upstream's parked-connection gauge.
    parked_count: Arc<AtomicI64>,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<UpstreamBody>,
    task: AbortHandle,
    expires: Instant,
    /// When it was pooled.
    since: Instant,
    /// Set (to the idle deadline) to have the connection's task park the
    /// socket when the connection ends; `None` if it cannot be parked (able
    /// to switch protocols).
    park: Option<Arc<OnceLock<Instant>>>,
}

/// A parked connection: the socket, still counted as open.
#[derive(Debug)]
struct Parked {
    stream: ParkedIo,
    guard: (ConnPermit, Gauged),
    expires: Instant,
    _parked: Gauged,
}

impl Idle {
    /// Closed by the server, or idle past its time: not to be used.
    fn expired(&self, now: Instant) -> bool {
        self.tx.is_closed() || now >= self.expires
    }
}

#[derive(Debug)]
struct H2Conn {
    tx: http2::SendRequest<UpstreamBody>,
}

/// A connection checked out of (or fresh for) a server.
#[derive(Debug)]
pub(crate) struct PooledConn {
    pub(crate) tx: Sender,
    /// The task driving an HTTP/1.1 connection: aborting it closes the
    /// socket and drops whatever request body it still holds. `None` for
    /// HTTP/2, whose connection is shared and never closed for one stream.
    task: Option<AbortHandle>,
    /// See `Idle::park`.
    park: Option<Arc<OnceLock<Instant>>>,
    server: Arc<Server>,
    /// Came from the pool (as opposed to freshly connected).
    pub(crate) reused: bool,
    /// The server's own idle timeout, from its `Keep-Alive: timeout=N`.
    pub(crate) server_keepalive: Option<Duration>,
}

/// A parked socket: plain, or TLS with its session.
#[derive(Debug)]
enum ParkedIo {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

// === impl Server ===

impl Server {
    pub(crate) fn new(
        addr: ServerAddr,
        settings: Arc<PoolSettings>,
        released: Arc<Notify>,
        conn_count: Arc<AtomicI64>,
        parked_count: Arc<AtomicI64>,
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
            idle: ArrayQueue::new(settings.max_idle.max(1)),
            parked: SegQueue::new(),
            h2: ArcSwapOption::empty(),
            settings,
            released,
            conn_count,
            parked_count,
        }
    }

    /// An idle connection that is still open and ready, if any.
    pub(crate) fn checkout(self: &Arc<Self>) -> Option<PooledConn> {
        if self.settings.protocol != UpstreamProtocol::Http1 {
            let shared = self.h2.load();
            let c = shared.as_ref()?;
            if c.tx.is_closed() {
                return None;
            }
            return Some(PooledConn {
                tx: Sender::H2(c.tx.clone()),
                task: None,
                park: None,
                server: self.clone(),
                reused: true,
                server_keepalive: None,
            });
        }
        let now = Instant::now();
        while let Some(idle) = self.idle.pop() {
            if idle.expired(now) {
                idle.task.abort();
                continue;
            }
            if idle.tx.is_ready() {
                return Some(PooledConn {
                    tx: Sender::H1(idle.tx),
                    task: Some(idle.task),
                    park: idle.park,
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
        self.unpark(now)
    }

    /// A parked connection the server has not closed, with a new HTTP/1.1
    /// connection over it (no bytes exchanged: HTTP/1.1 has no handshake).
    fn unpark(self: &Arc<Self>, now: Instant) -> Option<PooledConn> {
        while let Some(p) = self.parked.pop() {
            if now >= p.expires || !still_open(&p.stream) {
                continue;
            }
            let Parked { stream, guard, .. } = p;
            let started = match stream {
                ParkedIo::Tcp(s) => self.start_h1(s, guard, false),
                ParkedIo::Tls(s) => self.start_h1(*s, guard, false),
            };
            if let Ok(mut c) = started {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    /// Takes a parked socket (called by the connection's task as its
    /// hyper connection ends); a full pool closes it.
    fn park(&self, stream: ParkedIo, guard: (ConnPermit, Gauged), expires: Instant) {
        if self.parked.len() >= self.settings.max_idle.max(1) {
            return;
        }
        self.parked.push(Parked {
            stream,
            guard,
            expires,
            _parked: Gauged::new(self.parked_count.clone()),
        });
        // A request waiting on the upstream's connection limit can take it.
        self.released.notify_one();
    }

    /// Closes the pooled and parked connections whose idle time is over
    /// (or that the server closed), so `pool_idle_timeout` holds while no
    /// request comes to take them (see `supervise`), and parks the pooled
    /// ones idle for `PARK_AFTER`. The rest are pushed back; a checkout
    /// racing with this may miss one and connect anew, which is harmless.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        for _ in 0..self.idle.len() {
            let Some(idle) = self.idle.pop() else {
                break;
            };
            if idle.expired(now) {
                idle.task.abort();
                continue;
            }
            if let Some(park) = &idle.park {
                if now.saturating_duration_since(idle.since) >= PARK_AFTER {
                    // Dropping the request half ends hyper's connection;
                    // its task then hands the socket to `park`.
                    let _ = park.set(idle.expires);
                    continue;
                }
            }
            if let Err(idle) = self.idle.push(idle) {
                idle.task.abort();
            }
        }
        for _ in 0..self.parked.len() {
            let Some(p) = self.parked.pop() else {
                break;
            };
            if now >= p.expires || !still_open(&p.stream) {
                continue;
            }
            self.parked.push(p);
        }
    }

    /// Pools a connection for at most the pool idle timeout, and never
    /// longer than the server said it keeps idle connections (minus a
    /// margin), so the gateway closes it before the server does.
    fn put(
        &self,
        tx: http1::SendRequest<UpstreamBody>,
        task: AbortHandle,
        park: Option<Arc<OnceLock<Instant>>>,
        server_keepalive: Option<Duration>,
    ) {
        if tx.is_closed() {
            return;
        }
        let mut ttl = self.settings.idle_timeout;
        if let Some(ka) = server_keepalive {
            ttl = ttl.min(ka.saturating_sub(KEEPALIVE_MARGIN));
        }
        if ttl.is_zero() {
            task.abort();
            return;
        }
        let now = Instant::now();
        let idle = Idle {
            tx,
            task,
            expires: now + ttl,
            since: now,
            park,
        };
        if let Err(full) = self.idle.push(idle) {
            // A full pool closes the connection.
            full.task.abort();
        }
        self.released.notify_one();
    }

    /// Opens a new connection: DNS (unless the host is an IP), TCP connect,
    /// TLS and HTTP handshakes, all within `timeout`. `permit` is held for
    /// as long as the connection is open. A new HTTP/2 connection becomes
    /// the server's shared one.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        timeout: Duration,
        permit: ConnPermit,
        upgrades: bool,
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
        // The connection counts in the upstream's gauge until its task ends
        // or is aborted.
        let guard = (permit, Gauged::new(self.conn_count.clone()));
        match &self.settings.tls {
            None => self.handshake(stream, guard, upgrades).await,
            Some(Err(e)) => Err(GatewayError::new(
                Cause::TlsCertificateError,
                format!("TLS to {}: {e}", self.label),
            )),
            Some(Ok(tls)) => {
                let hs = tls.handshake(stream, &self.addr.host);
                let stream = match tokio::time::timeout_at(deadline, hs).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(f)) => {
                        return Err(GatewayError::new(
                            crate::classify::tls_cause(&f),
                            format!("{}: {}", self.label, f.detail),
                        ));
                    }
                    Err(_) => {
                        return Err(GatewayError::new(
                            Cause::ConnectTimeout,
                            format!(
                                "TLS handshake with {} did not complete within {timeout:?} (does the port speak TLS?)",
                                self.label
                            ),
                        ))
                    }
                };
                let alpn = stream.get_ref().1.alpn_protocol();
                if self.settings.protocol == UpstreamProtocol::H2 && alpn == Some(b"http/1.1") {
                    return Err(GatewayError::new(
                        Cause::TlsProtocolError,
                        format!(
                            "{} chose HTTP/1.1 in ALPN; the upstream's protocol is h2",
                            self.label
                        ),
                    ));
                }
                self.handshake(stream, guard, upgrades).await
            }
        }
    }

    /// The HTTP handshake over an established stream; the connection's task
    /// holds `guard` (its permit and its count) while it is open.
    async fn handshake<S>(
        self: &Arc<Self>,
        stream: S,
        guard: (ConnPermit, Gauged),
        upgrades: bool,
    ) -> Result<PooledConn, GatewayError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if self.settings.protocol != UpstreamProtocol::Http1 {
            let max_header_size = self.settings.max_header_size;
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX))
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| self.handshake_failed(e))?;
            let label = self.label.clone();
            tokio::spawn(async move {
                let _guard = guard;
                if let Err(e) = conn.await {
                    tracing::debug!(server = %label, error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            self.h2.store(Some(Arc::new(H2Conn { tx: tx.clone() })));
            return Ok(PooledConn {
                tx: Sender::H2(tx),
                task: None,
                park: None,
                server: self.clone(),
                reused: false,
                server_keepalive: None,
            });
        }
        self.start_h1(stream, guard, upgrades)
    }

    /// Starts an HTTP/1.1 connection over `stream` and its task. With
    /// `upgrades`, the connection can switch protocols (a 101 answer hands
    /// the socket to the tunnel); without, over plain TCP or TLS, it can be
    /// parked when it has been idle for a while (see `PARK_AFTER`).
    fn start_h1<S>(
        self: &Arc<Self>,
        stream: S,
        guard: (ConnPermit, Gauged),
        upgrades: bool,
    ) -> Result<PooledConn, GatewayError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        // Reads grow adaptively up to this size while a body streams
        // (bigger reads: fewer syscalls for large responses); the head
        // is bounded separately by max_header_size.
        let max_header_size = self.settings.max_header_size;
        builder
            .max_buf_size(READ_BUF_MAX.max(max_header_size))
            .max_header_size(max_header_size);
        if self.settings.max_headers != HYPER_MAX_HEADERS {
            // Any explicit count, even hyper's own, makes it fill (and over
            // 100, allocate) its parse arrays for every response.
            builder.max_headers(self.settings.max_headers);
        }
        // HTTP/1.1 has no handshake: hyper's future only builds the
        // connection, ready at its first poll.
        let handshake = std::pin::pin!(builder.handshake(TokioIo::new(stream)));
        let (tx, conn) = match handshake.poll(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(c)) => c,
            Poll::Ready(Err(e)) => return Err(self.handshake_failed(e)),
            Poll::Pending => return Err(self.handshake_failed("not ready at once")),
        };
        let label = self.label.clone();
        let io = std::any::TypeId::of::<S>();
        let parkable = !upgrades
            && (io == std::any::TypeId::of::<TcpStream>()
                || io == std::any::TypeId::of::<TlsStream<TcpStream>>());
        let park = parkable.then(|| Arc::new(OnceLock::new()));
        let task = if !parkable {
            tokio::spawn(async move {
                // The connection counts against the upstream's limit while open.
                let _guard = guard;
                // An upgraded connection (101) ends here and lives on as a tunnel.
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(server = %label, error = %e, "upstream connection ended with an error");
                }
            })
        } else {
            let server = Arc::downgrade(self);
            let park = park.clone();
            tokio::spawn(async move {
                match conn.without_shutdown().await {
                    Ok(parts) => {
                        let parking = park.as_ref().and_then(|p| p.get().copied());
                        let mut io = parts.io.into_inner();
                        if let (Some(expires), true) = (parking, parts.read_buf.is_empty()) {
                            park_socket(&server, io, guard, expires);
                        } else {
                            // Closed as hyper would have: a FIN, after a
                            // TLS close_notify.
                            let _ = tokio::time::timeout(
                                READY_WAIT,
                                tokio::io::AsyncWriteExt::shutdown(&mut io),
                            )
                            .await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(server = %label, error = %e, "upstream connection ended with an error");
                    }
                }
            })
        }
        .abort_handle();
        Ok(PooledConn {
            tx: Sender::H1(tx),
            task: Some(task),
            park,
            server: self.clone(),
            reused: false,
            server_keepalive: None,
        })
    }

    fn handshake_failed(&self, why: impl std::fmt::Display) -> GatewayError {
        GatewayError::new(
            Cause::UpstreamClosed,
            format!("handshake with {}: {why}", self.label),
        )
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

/// Hands a connection's socket (plain or TLS) to its server's parked
/// queue, if the server (pool) still exists.
fn park_socket<S: Send + 'static>(
    server: &Weak<Server>,
    stream: S,
    guard: (ConnPermit, Gauged),
    expires: Instant,
) {
    let Some(server) = server.upgrade() else {
        return;
    };
    let stream: Box<dyn std::any::Any + Send> = Box::new(stream);
    let stream = match stream.downcast::<TcpStream>() {
        Ok(tcp) => ParkedIo::Tcp(*tcp),
        Err(other) => match other.downcast::<TlsStream<TcpStream>>() {
            // Decrypted bytes rustls still holds would not show in the
            // socket's readiness: such a connection is not parked.
            Ok(mut tls) => match tls.get_mut().1.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() == 0 => ParkedIo::Tls(tls),
                _ => return,
            },
            Err(_) => return,
        },
    };
    server.park(stream, guard, expires);
}

/// Whether a parked socket is still open: not closed by the server, and
/// with nothing unexpected to read. No syscall unless the socket became
/// readable. A TLS socket with anything to read (a close_notify, a
/// session ticket) is given up: its records are not read while parked.
fn still_open(stream: &ParkedIo) -> bool {
    match stream {
        ParkedIo::Tcp(tcp) => {
            let mut byte = [0u8; 1];
            matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
        ParkedIo::Tls(tls) => {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            tls.get_ref().0.poll_read_ready(&mut cx).is_pending()
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
            park,
            server,
            server_keepalive,
            ..
        } = self;
        let (Sender::H1(tx), Some(task)) = (tx, task) else {
            // An HTTP/2 stream: the connection stays shared.
            return;
        };
        if tx.is_ready() {
            server.put(tx, task, park, server_keepalive);
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let mut tx = tx;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                server.put(tx, task, park, server_keepalive);
            } else {
                task.abort();
            }
        });
    }

    /// Closes the connection now: after a failed or timed-out exchange its
    /// state is unknown, and it may hold the client's request body.
    pub(crate) fn close(self) {
        if let Some(task) = self.task {
            task.abort();
        }
    }

    /// Sends a request; it is handed back untouched if the connection could
    /// not take it. Not an `async fn`: hyper's future already owns the
    /// request, and a wrapper's state would hold a second copy of it in
    /// every request's future.
    pub(crate) fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Sending<impl Future<Output = SendResult>, impl Future<Output = SendResult>> {
        match &mut self.tx {
            Sender::H1(tx) => Sending::H1 {
                fut: tx.try_send_request(req),
            },
            Sender::H2(tx) => Sending::H2 {
                fut: tx.try_send_request(req),
            },
        }
    }
}

pub(crate) type SendResult = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>;

pin_project_lite::pin_project! {
    /// The response of [`PooledConn::send`], from either kind of connection.
    #[project = SendingProj]
    pub(crate) enum Sending<A, B> {
        H1 { #[pin] fut: A },
        H2 { #[pin] fut: B },
    }
}

impl<A, B> Future for Sending<A, B>
where
    A: Future<Output = SendResult>,
    B: Future<Output = SendResult>,
{
    type Output = SendResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendResult> {
        match self.project() {
            SendingProj::H1 { fut } => fut.poll(cx),
            SendingProj::H2 { fut } => fut.poll(cx),
        }
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
