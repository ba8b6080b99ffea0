//! Listeners and client connections: bind, accept, serve HTTP/1.1 with
//! hyper, and drain gracefully on shutdown (stop accepting, let in-flight
//! requests finish up to the drain timeout, close idle connections).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::drain::{Drain, Graceful, Watcher};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::body::{ConnShared, Finish, ProxyBody};
use crate::client_io::{ClientIo, ClientStream, ParkSlot};
use crate::forward;
use crate::metrics::Gauged;
use crate::runtime::{Gateway, ListenerCounters, Runtime, Shared};

/// Listeners bound and ready to serve, in config order.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<(Arc<str>, TcpListener)>,
}

/// What a connection's requests need to know about it.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The listener's index in the generation the connection was accepted
    /// on (a hint for later generations, checked against the name).
    pub(crate) listener: usize,
    pub(crate) listener_name: Arc<str>,
    pub(crate) peer: SocketAddr,
    /// Arrived over TLS (`X-Forwarded-Proto: https`).
    pub(crate) tls: bool,
    pub(crate) trusted: bool,
    /// The peer's IP as an `X-Forwarded-For` value.
    pub(crate) peer_header: http::HeaderValue,
    pub(crate) shared: Arc<ConnShared>,
    /// Registers the connection with its listener's drain; a WebSocket
    /// tunnel made from it takes a clone.
    pub(crate) drain: Watcher,
}

#[derive(Clone)]
struct GatewayService {
    shared: Arc<Shared>,
    /// The generation the connection was accepted on: serves its requests
    /// only if a reload removed the listener meanwhile.
    born: Arc<Runtime>,
    conn: Arc<ConnInfo>,
}

/// A listener's accept loop.
struct Running {
    listen: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Drain>,
}

// === impl Bound ===

impl Bound {
    /// The bound address of each listener, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(_, l)| l.local_addr().ok())
            .collect()
    }
}

/// Binds `addr` for listener `name`; the error names both.
pub(crate) async fn bind_one(name: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (listener `{name}`): {e}"),
        )
    })
}

// === impl Gateway ===

impl Gateway {
    /// Binds every listener; the error names the address that failed.
    pub async fn bind(&self) -> io::Result<Bound> {
        let rt = self.rt();
        let mut listeners = Vec::new();
        for l in &rt.listeners {
            listeners.push((l.name.clone(), bind_one(&l.name, l.listen).await?));
        }
        Ok(Bound { listeners })
    }

    /// Like [`Gateway::bind`], but takes over `inherited` listening sockets
    /// (from the process being upgraded) for the listeners of the same name
    /// and address; binds the others. Inherited sockets no listener wants
    /// are closed.
    pub async fn bind_inherited(
        &self,
        mut inherited: HashMap<String, std::net::TcpListener>,
    ) -> io::Result<Bound> {
        let rt = self.rt();
        let mut listeners = Vec::new();
        for l in &rt.listeners {
            let reuse = inherited.remove(&*l.name).filter(|s| {
                s.local_addr().is_ok_and(|a| {
                    a == l.listen || (l.listen.port() == 0 && a.ip() == l.listen.ip())
                })
            });
            let tcp = match reuse {
                Some(s) => {
                    s.set_nonblocking(true)?;
                    TcpListener::from_std(s)?
                }
                None => bind_one(&l.name, l.listen).await?,
            };
            listeners.push((l.name.clone(), tcp));
        }
        Ok(Bound { listeners })
    }

    /// Duplicates of the listening sockets being served, by listener name,
    /// for a binary upgrade.
    pub fn listening_sockets(&self) -> io::Result<Vec<(String, std::os::fd::OwnedFd)>> {
        let sockets = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sockets
            .iter()
            .map(|(name, fd)| Ok((name.to_string(), fd.try_clone()?)))
            .collect()
    }

    /// Serves until `shutdown` completes, applying reloads meanwhile, then
    /// drains: stops accepting, lets in-flight requests finish for up to
    /// the drain timeout. Returns whether every connection finished in time.
    pub async fn serve(self, bound: Bound, shutdown: impl Future<Output = ()>) -> bool {
        let background = [
            tokio::spawn(crate::status::run_sampler(self.shared.clone())),
            tokio::spawn(crate::ratelimit::run_evictor(self.shared.clone())),
        ];
        let mut supervisors = crate::supervise::Supervisors::default();
        supervisors.sync(&self.rt());
        let mut running: HashMap<Arc<str>, Running> = HashMap::new();
        for (name, tcp) in bound.listeners {
            running.insert(name.clone(), self.start_listener(name, tcp));
        }
        let mut reloads = self.shared.reload.take_receiver();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(cmd) = crate::reload::next(&mut reloads) => {
                    let outcome = self.apply(cmd.config, &mut running, &mut supervisors).await;
                    self.shared.reload.finished(&outcome);
                    let _ = cmd.reply.send(outcome);
                }
            }
        }
        for t in &background {
            t.abort();
        }
        drop(supervisors);
        self.shared
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut gracefuls = Vec::new();
        for (_, r) in running {
            gracefuls.push(r.stop().await);
        }
        let open: usize = gracefuls.iter().map(Drain::count).sum();
        let drain_timeout = self.drain_timeout();
        info!(connections = open, ?drain_timeout, "draining");
        let started = Instant::now();
        // Every listener's connections are told to finish at once.
        let all: Vec<_> = gracefuls.into_iter().map(Drain::shutdown).collect();
        let drained = tokio::time::timeout(drain_timeout, async {
            for g in all {
                g.await;
            }
        });
        match drained.await {
            Ok(()) => {
                info!(took = ?started.elapsed(), "drained");
                true
            }
            Err(_) => {
                warn!("drain timeout reached with connections still open; closing them");
                false
            }
        }
    }

    fn start_listener(&self, name: Arc<str>, tcp: TcpListener) -> Running {
        use std::os::fd::AsFd;
        let listen = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if let Ok(dup) = tcp.as_fd().try_clone_to_owned() {
            let mut sockets = self
                .shared
                .sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            sockets.retain(|(n, _)| *n != name);
            sockets.push((name.clone(), dup));
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.shared.clone(), name, tcp, stop_rx));
        Running { listen, stop, task }
    }

    /// Swaps in a new generation built from `config`: binds the listeners
    /// it adds, then swaps, then starts and stops accept loops and
    /// supervisors. Nothing changes if any step before the swap fails.
    async fn apply(
        &self,
        config: waygate_config::Config,
        running: &mut HashMap<Arc<str>, Running>,
        supervisors: &mut crate::supervise::Supervisors,
    ) -> Result<crate::reload::ReloadReport, crate::reload::ReloadError> {
        use crate::reload::ReloadError;
        let old = self.rt();
        let new = Runtime::new(&config, crate::runtime::Base::Previous(&old))
            .map_err(|e| ReloadError::Apply(e.to_string()))?;
        // Listeners to start: new names, and names whose address changed
        // (an address of 0 as port keeps the running socket).
        let mut bound = Vec::new();
        for l in &new.listeners {
            let keep = running
                .get(&l.name)
                .is_some_and(|r| same_address(r.listen, l.listen, &old, &l.name));
            if !keep {
                let tcp = bind_one(&l.name, l.listen)
                    .await
                    .map_err(|e| ReloadError::Apply(e.to_string()))?;
                bound.push((l.name.clone(), tcp));
            }
        }
        let mut report = crate::reload::diff(&old, &new);
        let new = Arc::new(new);
        self.shared.current.store(new.clone());
        // Stop the listeners that went away or moved, then start the new ones.
        let moved: Vec<Arc<str>> = bound.iter().map(|(n, _)| n.clone()).collect();
        let gone: Vec<Arc<str>> = running
            .keys()
            .filter(|n| moved.contains(n) || !new.listeners.iter().any(|l| l.name == **n))
            .cloned()
            .collect();
        for name in gone {
            self.shared
                .sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(n, _)| *n != name);
            if let Some(r) = running.remove(&name) {
                let drain = new.drain_timeout;
                let graceful = r.stop().await;
                report.connections_draining += graceful.count() as u64;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
                });
            }
        }
        report.connections_kept = new
            .listeners
            .iter()
            .filter(|l| !moved.contains(&l.name))
            .map(|l| u64::from(l.counters.open.load(std::sync::atomic::Ordering::Relaxed)))
            .sum();
        for (name, tcp) in bound {
            running.insert(name.clone(), self.start_listener(name, tcp));
        }
        supervisors.sync(&new);
        info!(
            generation = new.generation,
            changes = %report.summary(),
            "config reloaded"
        );
        Ok(report)
    }
}

/// Whether a running listener at `running` still serves the address the
/// new config gives it (`0` as port means "the one the OS chose").
fn same_address(running: SocketAddr, wanted: SocketAddr, old: &Runtime, name: &str) -> bool {
    if wanted.port() == 0 {
        return old
            .listeners
            .iter()
            .any(|l| &*l.name == name && l.listen == wanted);
    }
    running == wanted
}

// === impl Running ===

impl Running {
    /// Stops accepting; returns the listener's connections, to drain.
    async fn stop(self) -> Drain {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(g) => g,
            Err(_) => Drain::new(),
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    name: Arc<str>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Drain {
    let graceful = Drain::new();
    let mut hint = 0;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // rather than spin.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let rt = shared.current.load_full();
        let Some(index) = rt.listener_index(hint, &name) else {
            // Removed by a reload that is stopping this loop.
            break;
        };
        hint = index;
        let l = &rt.listeners[index];
        let Some(slot) = ConnSlot::acquire(&rt, index, peer.ip()) else {
            // Over a connection limit: say so and close (best effort, the
            // send buffer of a new socket is empty; a TLS client would
            // not understand it, so it only gets the close).
            if l.tls.is_none() {
                let _ = stream.try_write(REFUSED_503);
            }
            continue;
        };
        let conn = Arc::new(ConnInfo {
            listener: index,
            listener_name: l.name.clone(),
            peer,
            tls: l.tls.is_some(),
            trusted: crate::headers::is_trusted(&rt.trusted, peer.ip()),
            peer_header: crate::headers::peer_value(peer.ip()),
            shared: Arc::new(ConnShared::default()),
            drain: graceful.watcher(),
        });
        let shared = shared.clone();
        let limit = l.client_header_timeout;
        let http2 = l.http2;
        match l.tls.clone() {
            None if !http2 => {
                tokio::spawn(serve_conn(stream, false, rt, conn, shared, slot));
            }
            None => {
                tokio::spawn(async move {
                    match h2c_preface(&stream, limit).await {
                        Some(true) => serve_conn(stream, true, rt, conn, shared, slot).await,
                        Some(false) => serve_conn(stream, false, rt, conn, shared, slot).await,
                        None => debug!(%peer, "nothing received within client_header_timeout"),
                    }
                });
            }
            Some(acceptor) => {
                // The handshake runs in the connection's task, bounded by
                // the header timeout, never in the accept loop.
                tokio::spawn(async move {
                    match tokio::time::timeout(limit, acceptor.0.accept(stream)).await {
                        Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                            serve_conn(tls, true, rt, conn, shared, slot).await;
                        }
                        Ok(Ok(tls)) => serve_conn(tls, false, rt, conn, shared, slot).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    debug!(listener = %name, "stopped accepting");
    graceful
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E, B> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Boxed connections keep a task small whatever state it is in.
impl<C: Graceful> Graceful for Pin<Box<C>> {
    fn begin_shutdown(self: Pin<&mut Self>) {
        self.get_mut().as_mut().begin_shutdown();
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a cleartext client speaks HTTP/2 with prior knowledge: its first
/// bytes are the HTTP/2 preface. Peeks (reads nothing); `None` if nothing
/// arrives within `limit`. An HTTP/1.1 request differs at its first byte;
/// a client that stalls inside the preface is served as HTTP/1.1, whose
/// header timeout answers it (found by the `request` fuzz target: a lone
/// `P` kept this loop going forever).
async fn h2c_preface(stream: &tokio::net::TcpStream, limit: Duration) -> Option<bool> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        if Instant::now() >= deadline {
            return Some(false);
        }
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // A prefix of the preface so far: wait for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Serves one client connection (plain or TLS, HTTP/1.1 or, with `h2`,
/// HTTP/2) until it ends. HTTP/2 streams are bounded by
/// `max_concurrent_streams`, the header list by `max_header_size`, and
/// client resets by `max_pending_accept_reset_streams` (CVE-2023-44487
/// rapid reset: at most 20 pending, then GOAWAY).
async fn serve_conn<S: ClientStream>(
    stream: S,
    h2: bool,
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    slot: ConnSlot,
) {
    let _slot = slot;
    let peer = conn.peer;
    let l = &rt.listeners[conn.listener];
    let conn_shared = conn.shared.clone();
    let watcher = conn.clone();
    let svc = GatewayService {
        shared,
        born: rt.clone(),
        conn,
    };
    // Boxed: the task's own size is what an idle connection costs.
    let served = if h2 {
        Box::pin(serve_http2(stream, l, &watcher.drain, svc)).await
    } else {
        let parked = rt.metrics.parked_connections.clone();
        serve_http1(stream, l, conn_shared, &watcher.drain, svc, parked).await
    };
    if let Err(e) = served {
        debug!(%peer, h2, error = %e, "client connection ended with an error");
    }
}

/// Serves an HTTP/2 connection.
async fn serve_http2<S: ClientStream>(
    stream: S,
    l: &crate::runtime::ListenerRt,
    drain: &Watcher,
    svc: GatewayService,
) -> hyper::Result<()> {
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(l.max_concurrent_streams)
        .initial_stream_window_size(l.http2_stream_window)
        .initial_connection_window_size(l.http2_connection_window)
        .max_header_list_size(u32::try_from(l.max_header_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(20)
        // WebSocket over HTTP/2 (RFC 8441).
        .enable_connect_protocol()
        // A ping every keep-alive timeout finds dead peers.
        .keep_alive_interval(Some(l.keepalive_timeout))
        .keep_alive_timeout(l.client_header_timeout);
    drain
        .watch(builder.serve_connection(TokioIo::new(stream), svc))
        .await
}

/// Serves an HTTP/1.1 connection. An idle plain-TCP connection is parked
/// (see `client_io`): its hyper connection ends without closing the
/// socket, and a new one serves the socket when it becomes readable again,
/// unless the keep-alive timeout or a drain comes first. While parked, the
/// connection holds its socket and this future's small parked state only.
async fn serve_http1<S: ClientStream>(
    mut stream: S,
    l: &crate::runtime::ListenerRt,
    conn_shared: Arc<ConnShared>,
    drain: &Watcher,
    svc: GatewayService,
    gauge: Arc<std::sync::atomic::AtomicI64>,
) -> hyper::Result<()> {
    let slot: Option<ParkSlot<S>> = S::PARKS.then(ParkSlot::default);
    loop {
        let parked = Box::pin(serve_until_parked(
            stream,
            l,
            &conn_shared,
            drain,
            &svc,
            slot.as_ref(),
        ))
        .await?;
        let Some((parked, keepalive_deadline)) = parked else {
            return Ok(()); // closed
        };
        // Counted in waygate_client_connections_parked while parked.
        let counted = Gauged::new(gauge.clone());
        let woke = drain
            .until(keepalive_deadline, |cx| parked.poll_read_ready(cx))
            .await;
        drop(counted);
        match woke {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                debug!(error = %e, "parked client connection failed");
                return Ok(());
            }
            // The keep-alive timeout, or a drain, closes it.
            None => return Ok(()),
        }
        stream = parked;
    }
}

/// Runs one hyper connection on `stream` until it closes (`None`) or parks
/// (the socket and its keep-alive deadline).
async fn serve_until_parked<S: ClientStream>(
    stream: S,
    l: &crate::runtime::ListenerRt,
    conn_shared: &Arc<ConnShared>,
    drain: &Watcher,
    svc: &GatewayService,
    slot: Option<&ParkSlot<S>>,
) -> hyper::Result<Option<(S, Instant)>> {
    let io = ClientIo::new(
        stream,
        conn_shared.clone(),
        l.client_header_timeout,
        l.keepalive_timeout,
        slot.cloned(),
    );
    // No hyper timer: its header-read timeout (30 s by default once a
    // timer is set) would arm a timer per request; ClientIo enforces
    // client_header_timeout and keepalive_timeout instead.
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        // Over these hyper answers 431 itself.
        .max_header_size(l.max_header_size)
        // Bounds what is queued for a slow reader (hyper's default is
        // ~400 KiB per connection); the kernel's send buffer holds more.
        .max_buf_size(CLIENT_BUF_MAX.max(l.max_header_size));
    if l.max_headers != crate::pool::HYPER_MAX_HEADERS {
        // As for upstream responses: setting it costs per request.
        builder.max_headers(l.max_headers);
    }
    let conn = builder
        .serve_connection(TokioIo::new(io), svc.clone())
        .with_upgrades();
    drain.watch(conn).await?;
    // hyper dropped the ClientIo with the connection: a parked socket is in
    // the slot now.
    Ok(slot.and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).take()))
}

/// Most response bytes queued in user space for one client connection.
const CLIENT_BUF_MAX: usize = 64 * 1024;

/// Sent to a connection refused by a connection limit.
const REFUSED_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\nproxy-status: waygate; error=connection_limit_reached; details=\"too many client connections\"\r\n\r\n";

/// A client connection counted against the gateway's and its listener's
/// limits until dropped.
struct ConnSlot {
    all: Arc<std::sync::atomic::AtomicI64>,
    counters: Arc<ListenerCounters>,
    ip: Option<std::net::IpAddr>,
}

impl ConnSlot {
    fn acquire(rt: &Runtime, listener: usize, ip: std::net::IpAddr) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let l = &rt.listeners[listener];
        let c = &l.counters;
        let all = &rt.metrics.client_connections;
        if all.fetch_add(1, Ordering::Relaxed) >= i64::from(rt.max_connections) {
            all.fetch_sub(1, Ordering::Relaxed);
            c.refused[2].fetch_add(1, Ordering::Relaxed);
            debug!(listener = %l.name, max = rt.max_connections, "connection refused: [gateway] max_connections reached");
            return None;
        }
        if c.open.fetch_add(1, Ordering::Relaxed) >= l.max_connections {
            c.open.fetch_sub(1, Ordering::Relaxed);
            all.fetch_sub(1, Ordering::Relaxed);
            c.refused[0].fetch_add(1, Ordering::Relaxed);
            // Counted in waygate_connections_refused_total; a log line per
            // refused connection would flood the log during an attack.
            debug!(listener = %l.name, max = l.max_connections, "connection refused: max_connections reached");
            return None;
        }
        let mut slot = Self {
            all: all.clone(),
            counters: c.clone(),
            ip: None,
        };
        if let Some(max) = l.max_connections_per_ip {
            let mut map = c.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= max {
                c.refused[1].fetch_add(1, Ordering::Relaxed);
                debug!(listener = %l.name, %ip, max, "connection refused: max_connections_per_ip reached");
                drop(map);
                return None; // dropping `slot` gives back the counts
            }
            *n += 1;
            drop(map);
            slot.ip = Some(ip);
        }
        Some(slot)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
        self.all.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self
                .counters
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

// === impl GatewayService ===

impl hyper::service::Service<Request<Incoming>> for GatewayService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // Before anything clones a header or the target (and before hyper's
        // next read, which runs right after this returns).
        if req.version() <= http::Version::HTTP_11 {
            crate::headers::detach_head(&mut req);
        }
        // The record (and the in-flight count) starts here, synchronously,
        // so a request whose future is dropped unpolled is still logged.
        let start = Instant::now();
        // The current generation, unless a reload removed this listener.
        let current = self.shared.current.load_full();
        let (rt, li) = match current.listener_index(self.conn.listener, &self.conn.listener_name) {
            Some(li) => (current, li),
            None => (self.born.clone(), self.conn.listener),
        };
        let id = forward::request_id(&rt, &self.conn, &req);
        let finish = Box::new(Finish::new(
            forward::initial_record(&rt, li, &self.conn, &req, &id),
            start,
            rt.clone(),
            li,
            self.conn.shared.clone(),
        ));
        let conn = self.conn.clone();
        // The last request allowed on this connection asks the client to
        // close it (hyper closes after the response).
        let served = conn
            .shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        conn.shared.with_body.store(
            !http_body::Body::is_end_stream(req.body()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let last = served >= rt.listeners[li].max_requests_per_connection;
        // Not an `async` block around `handle`: its state would keep the
        // arguments beside `handle`'s own copy of them (about 1 KB more to
        // fill and copy per request).
        // Allocated first and written in place: `Box::pin(value)` builds the
        // 3.6 KB future on the stack and copies all of it into the box.
        let served = Box::write(
            Box::new_uninit(),
            Served {
                fut: forward::handle(rt, conn, req, id, finish),
                last,
            },
        );
        Box::into_pin(served)
    }
}

pin_project_lite::pin_project! {
    /// A request's response, with `Connection: close` when it is the last
    /// one its connection may carry.
    struct Served<F> {
        #[pin]
        fut: F,
        last: bool,
    }
}

impl<F: Future<Output = Response<ProxyBody>>> Future for Served<F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.fut.poll(cx));
        if *this.last {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        std::task::Poll::Ready(Ok(resp))
    }
}
