//! Upstream connections: connecting (DNS, TCP, TLS, HTTP/1.1 or HTTP/2
//! handshake) under the connect timeout with each failure classified; a
//! bounded, lock-free pool of idle keep-alive connections per server for
//! HTTP/1.1, and one shared multiplexed connection per server for HTTP/2.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, LazyLock};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam_queue::{ArrayQueue, SegQueue};
use http::{Request, Response};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
/// next sweep: hyper's connection (its two 8 KiB buffers and its state,
/// about 26 KB) ends, and the pool keeps the bare socket until a request
/// takes it or its idle time is over. Like the client side's
/// parking (`client_io`), for the memory a burst leaves behind.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// An inline HTTP/1.1 connection is renewed after this many exchanges:
/// hyper's connection is taken apart when idle and a new one started over
/// the same socket (no bytes exchanged). hyper queues requests on a tokio
/// channel whose blocks hold 32; from the 33rd request on, a connection
/// holds two blocks of 8.5 KB (the second kept for reuse), and renewing
/// before that keeps it at one. The cost is a new hyper connection every
/// 32 requests.
const RENEW_AFTER: u32 = 32;

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
    link: Link,
    /// Exchanges completed on hyper's connection (see `RENEW_AFTER`).
    exchanges: u32,
    expires: Instant,
    /// When it was pooled.
    since: Instant,
}

/// What drives an HTTP/1.1 connection's I/O.
enum Link {
    /// Its own task, for a connection able to switch protocols (a 101 hands
    /// the socket to the tunnel while the task runs). Aborting the task
    /// closes the socket and drops whatever request body it still holds.
    Task(#[allow(dead_code)] AbortOnDrop), // held for its `Drop`
    /// No task: the request using the connection polls it, in the request's
    /// own task, together with its response future and then its response
    /// body; while it is pooled, the pool's sweep polls it (with a no-op
    /// waker) to see whether the server closed it. So a request's bytes
    /// cross no task boundary on their way in and out, and an idle
    /// connection has no task. Dropping it closes the socket.
    Inline(Box<dyn Drive>),
}

/// A connection task's handle that aborts the task when dropped.
struct AbortOnDrop(AbortHandle);

/// An HTTP/1.1 connection polled in place (see [`Link::Inline`]).
trait Drive: Send {
    /// Polls the connection; `Ready` once it has ended (the server closed
    /// it, it failed, or its request half was dropped while idle), and on
    /// every poll after that.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Whether it has ended (as last polled).
    fn ended(&self) -> bool;

    /// The socket of a connection that ended cleanly with nothing unread,
    /// fit for parking, and its guard.
    fn into_parked(self: Box<Self>) -> Option<(ParkedIo, Guard)>;

    /// Closes an ended connection as hyper would have: a FIN, after a TLS
    /// close_notify (in a small task, bounded); one that failed or is still
    /// open is just dropped.
    fn finish(self: Box<Self>);
}

/// The socket types an upstream HTTP/1.1 connection runs over.
trait UpstreamIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// This socket as a parked one, if it can be parked.
    fn into_parked(self) -> Option<ParkedIo>;
}

struct Inline<S: UpstreamIo> {
    conn: Conn<S>,
    /// The connection counts against the upstream's limit while open.
    guard: Guard,
    label: Arc<str>,
}

/// An inline connection's state. Boxed as a whole (in `Link::Inline`), and
/// open for almost all of its life: the small variants waste nothing.
#[allow(clippy::large_enum_variant)]
enum Conn<S: UpstreamIo> {
    Open(http1::Connection<TokioIo<TaskIo<S>>, UpstreamBody>),
    /// Ended cleanly with nothing unread: hyper's connection (and with it
    /// the queue of requests it had not taken, handed back unsent) is gone;
    /// the socket is kept for parking or a graceful close.
    Ended(S),
    /// Ended by an error, or with bytes unread: the socket is closed.
    Closed,
}

/// A socket whose readiness wakes the request driving its connection
/// quietly (see [`drive_quiet`]), whatever waker hyper polls it with.
struct TaskIo<S>(S);

thread_local! {
    /// The waker of the request driving an inline connection quietly on
    /// this thread, for the duration of that call.
    static DRIVER: RefCell<Option<Waker>> = const { RefCell::new(None) };
    /// Set when [`FLAG`] is woken on this thread.
    static WOKEN: Cell<bool> = const { Cell::new(false) };
}

/// The waker hyper's connection sees while driven quietly: one for the
/// process.
static FLAG: LazyLock<Waker> = LazyLock::new(|| Waker::from(Arc::new(Flag(0))));

/// Records a wake-up in [`WOKEN`]. Not zero-sized: a waker points at its
/// `Arc`'s data, which for a zero-sized type lies just past the end of the
/// allocation, where LeakSanitizer (the fuzz targets) does not count it as
/// a reference, and reports the `Arc` as leaked.
struct Flag(#[allow(dead_code)] u8);

/// An open upstream connection's permit and its place in the gauge.
type Guard = (ConnPermit, Gauged);

/// A parked connection: the socket, still counted as open.
#[derive(Debug)]
struct Parked {
    stream: ParkedIo,
    guard: Guard,
    expires: Instant,
    _parked: Gauged,
}

impl Idle {
    /// Closed by the server, or idle past its time: not to be used.
    /// Without `poll`, an inline connection's close is not looked for: the
    /// request it is checked out for finds it on its first poll, which
    /// then hands the request back unsent, for a fresh connection.
    fn expired(&mut self, now: Instant, poll: bool) -> bool {
        if poll {
            // No syscall unless the socket became readable.
            self.link.poll_idle();
        }
        self.link.ended() || self.tx.is_closed() || now >= self.expires
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
    /// What drives an HTTP/1.1 connection; `None` for HTTP/2, whose
    /// connection is shared and never closed for one stream.
    link: Option<Link>,
    server: Arc<Server>,
    /// Came from the pool (as opposed to freshly connected).
    pub(crate) reused: bool,
    /// The server's own idle timeout, from its `Keep-Alive: timeout=N`.
    pub(crate) server_keepalive: Option<Duration>,
    /// An inline connection is driven quietly ([`drive_quiet`]) for the
    /// current exchange: its request body is complete.
    quiet: bool,
    /// Exchanges completed before this one on hyper's connection.
    exchanges: u32,
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
                link: None,
                server: self.clone(),
                reused: true,
                server_keepalive: None,
                quiet: false,
                exchanges: 0,
            });
        }
        let now = Instant::now();
        while let Some(mut idle) = self.idle.pop() {
            if idle.expired(now, false) {
                continue;
            }
            if idle.tx.is_ready() {
                return Some(PooledConn {
                    tx: Sender::H1(idle.tx),
                    link: Some(idle.link),
                    server: self.clone(),
                    reused: true,
                    server_keepalive: None,
                    quiet: false,
                    exchanges: idle.exchanges,
                });
            }
            // Not ready yet (its previous exchange is still settling in its
            // task): give it back and open a fresh one rather than wait. An
            // inline connection is only pooled ready, so one that is not
            // has gone wrong: it is closed.
            if matches!(idle.link, Link::Task(_)) {
                let _ = self.idle.push(idle);
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
            if let Ok(mut c) = self.start_over(stream, guard) {
                c.reused = true;
                return Some(c);
            }
        }
        None
    }

    /// A new HTTP/1.1 connection over a socket kept from an earlier one.
    fn start_over(
        self: &Arc<Self>,
        stream: ParkedIo,
        guard: Guard,
    ) -> Result<PooledConn, GatewayError> {
        match stream {
            ParkedIo::Tcp(s) => self.start_h1(s, guard, false),
            ParkedIo::Tls(s) => self.start_h1(*s, guard, false),
        }
    }

    /// Takes a parked socket; a full pool closes it.
    fn park(&self, stream: ParkedIo, guard: Guard, expires: Instant) {
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
            let Some(mut idle) = self.idle.pop() else {
                break;
            };
            if idle.expired(now, true) {
                continue;
            }
            if now.saturating_duration_since(idle.since) >= PARK_AFTER {
                if let Link::Inline(drive) = idle.link {
                    if let Some((stream, guard)) = end_idle(idle.tx, drive) {
                        self.park(stream, guard, idle.expires);
                    }
                    continue;
                }
            }
            let _ = self.idle.push(idle);
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
        link: Link,
        exchanges: u32,
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
            return;
        }
        let now = Instant::now();
        let idle = Idle {
            tx,
            link,
            exchanges,
            expires: now + ttl,
            since: now,
        };
        // A full pool closes the connection.
        let _ = self.idle.push(idle);
        self.released.notify_one();
    }

    /// Pools a new hyper connection over the socket of `drive`, an idle
    /// one that has served `RENEW_AFTER` exchanges; if it cannot be taken
    /// apart cleanly, it is closed.
    fn renew(
        self: &Arc<Self>,
        tx: http1::SendRequest<UpstreamBody>,
        drive: Box<dyn Drive>,
        server_keepalive: Option<Duration>,
    ) {
        let Some((stream, guard)) = end_idle(tx, drive) else {
            return;
        };
        if let Ok(c) = self.start_over(stream, guard) {
            if let (Sender::H1(tx), Some(mut link)) = (c.tx, c.link) {
                // A first poll makes the new connection ready for a
                // request, as the pool expects of what it holds.
                link.poll_idle();
                self.put(tx, link, 0, server_keepalive);
            }
        }
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

    /// The HTTP handshake over an established stream; the connection
    /// holds `guard` (its permit and its count) while it is open.
    async fn handshake<S: UpstreamIo>(
        self: &Arc<Self>,
        stream: S,
        guard: Guard,
        upgrades: bool,
    ) -> Result<PooledConn, GatewayError> {
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
                link: None,
                server: self.clone(),
                reused: false,
                server_keepalive: None,
                quiet: false,
                exchanges: 0,
            });
        }
        self.start_h1(stream, guard, upgrades)
    }

    /// Starts an HTTP/1.1 connection over `stream`. With `upgrades`, the
    /// connection can switch protocols (a 101 answer hands the socket to the
    /// tunnel) and runs in its own task; without, it is polled inline (see
    /// [`Link::Inline`]) and can be parked when it has been idle for a while
    /// (see `PARK_AFTER`).
    fn start_h1<S: UpstreamIo>(
        self: &Arc<Self>,
        stream: S,
        guard: Guard,
        upgrades: bool,
    ) -> Result<PooledConn, GatewayError> {
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
        let handshake = std::pin::pin!(builder.handshake(TokioIo::new(TaskIo(stream))));
        let (tx, conn) = match handshake.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(c)) => c,
            Poll::Ready(Err(e)) => return Err(self.handshake_failed(e)),
            Poll::Pending => return Err(self.handshake_failed("not ready at once")),
        };
        let link = if upgrades {
            let label = self.label.clone();
            let task = tokio::spawn(async move {
                // The connection counts against the upstream's limit while open.
                let _guard = guard;
                // An upgraded connection (101) ends here and lives on as a tunnel.
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(server = %label, error = %e, "upstream connection ended with an error");
                }
            });
            Link::Task(AbortOnDrop(task.abort_handle()))
        } else {
            Link::Inline(Box::new(Inline {
                conn: Conn::Open(conn),
                guard,
                label: self.label.clone(),
            }))
        };
        Ok(PooledConn {
            tx: Sender::H1(tx),
            link: Some(link),
            server: self.clone(),
            reused: false,
            server_keepalive: None,
            quiet: false,
            exchanges: 0,
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

/// Ends an idle inline connection, for its socket and guard; `None` (the
/// connection is then closed) if it does not end at once or cannot be
/// parked.
fn end_idle(
    tx: http1::SendRequest<UpstreamBody>,
    mut drive: Box<dyn Drive>,
) -> Option<(ParkedIo, Guard)> {
    // Without its request half, hyper's connection ends at its next poll,
    // leaving the socket.
    drop(tx);
    let mut cx = Context::from_waker(Waker::noop());
    drive.poll_drive(&mut cx).is_ready().then_some(())?;
    drive.into_parked()
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
            let mut cx = Context::from_waker(Waker::noop());
            tls.get_ref().0.poll_read_ready(&mut cx).is_pending()
        }
    }
}

// === impl PooledConn ===

impl PooledConn {
    /// Gives the connection back to its server's pool once its exchange is
    /// over. If hyper has not yet marked it ready for the next request, a
    /// small task waits (bounded) for that, driving an inline connection
    /// meanwhile, before pooling it.
    pub(crate) fn release(self) {
        let PooledConn {
            tx,
            link,
            server,
            server_keepalive,
            quiet,
            exchanges,
            ..
        } = self;
        let exchanges = exchanges + 1;
        let (Sender::H1(mut tx), Some(mut link)) = (tx, link) else {
            // An HTTP/2 stream: the connection stays shared.
            return;
        };
        // Quietly driven and ready, it has registered only the request's
        // waker on its socket (see `drive_quiet`). Otherwise it is polled
        // once more without a waker: that settles the exchange just over,
        // and from then on it wakes nobody until a request polls it again.
        if !(quiet && tx.is_ready()) {
            link.poll_idle();
        }
        if link.ended() {
            link.finish();
            return;
        }
        if tx.is_ready() {
            match link {
                Link::Inline(drive) if exchanges >= RENEW_AFTER => {
                    server.renew(tx, drive, server_keepalive);
                }
                link => server.put(tx, link, exchanges, server_keepalive),
            }
            return;
        }
        if tx.is_closed() {
            return;
        }
        tokio::spawn(async move {
            let ready = std::future::poll_fn(|cx| {
                if link.poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                tx.poll_ready(cx).map(|r| r.is_ok())
            });
            if let Ok(true) = tokio::time::timeout(READY_WAIT, ready).await {
                server.put(tx, link, exchanges, server_keepalive);
            }
        });
    }

    /// Closes the connection now: after a failed or timed-out exchange its
    /// state is unknown, and it may hold the client's request body.
    pub(crate) fn close(self) {
        drop(self.link);
    }

    /// Drives the exchange quietly (see [`drive_quiet`]) if `complete`:
    /// the request's body is buffered or empty.
    pub(crate) fn set_quiet(&mut self, complete: bool) {
        self.quiet = complete;
    }

    /// Polls `body`, this connection's response body. An inline connection
    /// is driven first if the body has nothing yet: it reads the body (and
    /// writes what is left of the request's) only when the request polls it.
    pub(crate) fn poll_body(
        &mut self,
        body: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(link @ Link::Inline(_)) = &mut self.link else {
            return Pin::new(body).poll_frame(cx);
        };
        if !self.quiet {
            let _ = link.poll(cx);
            return Pin::new(body).poll_frame(cx);
        }
        // Data reaches the body only from the connection, driven here: no
        // waker of the body's is needed.
        let mut noop = Context::from_waker(Waker::noop());
        if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(&mut noop) {
            return Poll::Ready(frame);
        }
        let _ = drive_quiet(link, cx);
        Pin::new(body).poll_frame(&mut noop)
    }

    /// Sends a request; it is handed back untouched if the connection could
    /// not take it. Not an `async fn`: hyper's future already owns the
    /// request, and a wrapper's state would hold a second copy of it in
    /// every request's future.
    pub(crate) fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Sending<'_, impl Future<Output = SendResult>, impl Future<Output = SendResult>> {
        match &mut self.tx {
            Sender::H1(tx) => Sending::H1 {
                fut: tx.try_send_request(req),
                link: self.link.as_mut(),
                quiet: self.quiet,
            },
            Sender::H2(tx) => Sending::H2 {
                fut: tx.try_send_request(req),
            },
        }
    }
}

pub(crate) type SendResult = Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>>;

pin_project_lite::pin_project! {
    /// The response of [`PooledConn::send`], from either kind of connection;
    /// an inline HTTP/1.1 connection is driven while it is awaited.
    #[project = SendingProj]
    pub(crate) enum Sending<'a, A, B> {
        H1 { #[pin] fut: A, link: Option<&'a mut Link>, quiet: bool },
        H2 { #[pin] fut: B },
    }
}

impl<A, B> Future for Sending<'_, A, B>
where
    A: Future<Output = SendResult>,
    B: Future<Output = SendResult>,
{
    type Output = SendResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendResult> {
        match self.project() {
            SendingProj::H1 { fut, link, quiet } => {
                // The connection first: it writes the request and reads the
                // response head, which completes `fut`.
                match link {
                    Some(link @ Link::Inline(_)) if *quiet => {
                        let _ = drive_quiet(link, cx);
                        // Only the connection, driven here, completes it.
                        fut.poll(&mut Context::from_waker(Waker::noop()))
                    }
                    Some(link) => {
                        let _ = link.poll(cx);
                        fut.poll(cx)
                    }
                    None => fut.poll(cx),
                }
            }
            SendingProj::H2 { fut } => fut.poll(cx),
        }
    }
}

// === impl Link ===

impl Link {
    /// Polls an inline connection; `Ready` once it has ended. A task's
    /// connection drives itself: always `Pending`.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Link::Task(_) => Poll::Pending,
            Link::Inline(drive) => drive.poll_drive(cx),
        }
    }

    /// Polls an inline connection with a waker that wakes nothing: what is
    /// ready is done, and the socket's readiness is no longer tied to the
    /// last request's task.
    fn poll_idle(&mut self) {
        let _ = self.poll(&mut Context::from_waker(Waker::noop()));
    }

    /// Whether an inline connection has ended (as last polled).
    fn ended(&self) -> bool {
        match self {
            Link::Task(_) => false,
            Link::Inline(drive) => drive.ended(),
        }
    }

    /// Closes the connection gracefully if it ended cleanly, else at once.
    fn finish(self) {
        if let Link::Inline(drive) = self {
            drive.finish();
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Task(_) => f.write_str("Link::Task"),
            Link::Inline(drive) => write!(f, "Link::Inline(ended: {})", drive.ended()),
        }
    }
}

// === impl Inline ===

impl<S: UpstreamIo> Drive for Inline<S> {
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Conn::Open(conn) = &mut self.conn else {
            return Poll::Ready(());
        };
        let done = ready!(conn.poll_without_shutdown(cx));
        // hyper's connection goes now, so that a request it never took is
        // handed back unsent rather than left waiting.
        if let (Ok(()), Conn::Open(conn)) = (&done, std::mem::replace(&mut self.conn, Conn::Closed))
        {
            let parts = conn.into_parts();
            if parts.read_buf.is_empty() {
                self.conn = Conn::Ended(parts.io.into_inner().0);
            }
        }
        if let Err(e) = done {
            tracing::debug!(server = %self.label, error = %e, "upstream connection ended with an error");
        }
        Poll::Ready(())
    }

    fn ended(&self) -> bool {
        !matches!(self.conn, Conn::Open(_))
    }

    fn into_parked(self: Box<Self>) -> Option<(ParkedIo, Guard)> {
        let this = *self;
        match this.conn {
            Conn::Ended(io) => Some((io.into_parked()?, this.guard)),
            _ => None,
        }
    }

    fn finish(self: Box<Self>) {
        let this = *self;
        if let Conn::Ended(mut io) = this.conn {
            let guard = this.guard;
            tokio::spawn(async move {
                let _guard = guard;
                let _ =
                    tokio::time::timeout(READY_WAIT, tokio::io::AsyncWriteExt::shutdown(&mut io))
                        .await;
            });
        }
    }
}

/// Drives an inline connection *quietly*: hyper's connection sees a waker
/// that only records whether it was woken during the call (hyper yielding,
/// or tokio's cooperative budget running out), and that is then passed on;
/// only its socket's readiness wakes the request's task later. Everything
/// else a connection registers a waker for is something only the request
/// itself can move, at its next poll, which drives the connection anyway:
/// the next request to send, the response body's room, the request's
/// response future. So the connection's progress costs no wake-ups of the
/// request's own task, and a pooled connection wakes nobody when the next
/// request is queued on it. Only for requests whose body is complete
/// (buffered or empty): a streamed body's progress comes from the client,
/// and needs the real waker.
fn drive_quiet(link: &mut Link, cx: &mut Context<'_>) -> Poll<()> {
    DRIVER.with_borrow_mut(|driver| *driver = Some(cx.waker().clone()));
    WOKEN.with(|w| w.set(false));
    let done = link.poll(&mut Context::from_waker(&FLAG));
    // Not kept past the call: a task's waker held here would keep the
    // task's memory after it ends.
    DRIVER.with_borrow_mut(|driver| *driver = None);
    if WOKEN.with(Cell::get) {
        cx.waker().wake_by_ref();
    }
    done
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = WOKEN.try_with(|w| w.set(true));
    }
}

// === impl TaskIo ===

impl<S> TaskIo<S> {
    /// `cx`, or the quietly driving request's waker during a quiet drive.
    fn with_cx<R>(cx: &mut Context<'_>, f: impl FnOnce(&mut Context<'_>) -> R) -> R {
        DRIVER.with_borrow(|driver| match driver {
            Some(w) => f(&mut Context::from_waker(w)),
            None => f(cx),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TaskIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let io = Pin::new(&mut self.get_mut().0);
        Self::with_cx(cx, |cx| io.poll_read(cx, buf))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TaskIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let io = Pin::new(&mut self.get_mut().0);
        Self::with_cx(cx, |cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let io = Pin::new(&mut self.get_mut().0);
        Self::with_cx(cx, |cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let io = Pin::new(&mut self.get_mut().0);
        Self::with_cx(cx, |cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let io = Pin::new(&mut self.get_mut().0);
        Self::with_cx(cx, |cx| io.poll_shutdown(cx))
    }
}

impl UpstreamIo for TcpStream {
    fn into_parked(self) -> Option<ParkedIo> {
        Some(ParkedIo::Tcp(self))
    }
}

impl UpstreamIo for TlsStream<TcpStream> {
    fn into_parked(mut self) -> Option<ParkedIo> {
        // Decrypted bytes rustls still holds would not show in the
        // socket's readiness: such a connection is not parked.
        match self.get_mut().1.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() == 0 => {
                Some(ParkedIo::Tls(Box::new(self)))
            }
            _ => None,
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
    use super::{drive_quiet, keepalive_timeout, Drive, Guard, Link, ParkedIo, TaskIo};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    /// A waker that counts its wake-ups: the request's task.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A stand-in for hyper's connection, doing one thing with the waker
    /// it is polled with.
    enum Probe {
        /// Yields: wakes itself during the poll.
        Yields,
        /// Keeps the waker, as for a channel it waits on.
        Keeps(Arc<Mutex<Option<Waker>>>),
        /// Keeps the waker its socket would register.
        Socket(Arc<Mutex<Option<Waker>>>),
    }

    impl Drive for Probe {
        fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
            match self {
                Probe::Yields => cx.waker().wake_by_ref(),
                Probe::Keeps(slot) => *slot.lock().unwrap() = Some(cx.waker().clone()),
                Probe::Socket(slot) => TaskIo::<()>::with_cx(cx, |cx| {
                    *slot.lock().unwrap() = Some(cx.waker().clone());
                }),
            }
            Poll::Pending
        }
        fn ended(&self) -> bool {
            false
        }
        fn into_parked(self: Box<Self>) -> Option<(ParkedIo, Guard)> {
            None
        }
        fn finish(self: Box<Self>) {}
    }

    /// Drives `probe` quietly from a request whose wake-ups are counted;
    /// returns the count after the call and after waking what the probe
    /// kept.
    fn drive(probe: Probe) -> (usize, usize) {
        let slot = match &probe {
            Probe::Keeps(s) | Probe::Socket(s) => Some(s.clone()),
            Probe::Yields => None,
        };
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut link = Link::Inline(Box::new(probe));
        assert!(drive_quiet(&mut link, &mut Context::from_waker(&waker)).is_pending());
        let during = count.0.load(Ordering::SeqCst);
        if let Some(kept) = slot.and_then(|s| s.lock().unwrap().take()) {
            kept.wake();
        }
        (during, count.0.load(Ordering::SeqCst))
    }

    #[test]
    fn a_quiet_drive_passes_on_a_yield() {
        assert_eq!(drive(Probe::Yields), (1, 1));
    }

    #[test]
    fn a_quiet_drive_keeps_the_request_from_being_woken_by_channels() {
        let slot = Arc::new(Mutex::new(None));
        assert_eq!(drive(Probe::Keeps(slot)), (0, 0));
    }

    #[test]
    fn a_quiet_drive_has_the_socket_wake_the_request() {
        let slot = Arc::new(Mutex::new(None));
        assert_eq!(drive(Probe::Socket(slot)), (0, 1));
        // Outside a quiet drive, the socket is polled with the waker given.
        let noop = Waker::noop();
        assert!(TaskIo::<()>::with_cx(
            &mut Context::from_waker(noop),
            |cx| cx.waker().will_wake(noop)
        ));
    }

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
