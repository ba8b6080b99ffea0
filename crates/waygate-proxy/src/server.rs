//! Listeners and client connections: bind, accept, serve HTTP/1.1 with
//! hyper, and drain gracefully on shutdown (stop accepting, let in-flight
//! requests finish up to the drain timeout, close idle connections).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::body::{ConnShared, Finish, ProxyBody};
use crate::client_io::ClientIo;
use crate::forward;
use crate::runtime::{Gateway, Runtime};

/// Listeners bound and ready to serve, in config order.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<(usize, TcpListener)>,
}

/// What a connection's requests need to know about it.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) listener: usize,
    pub(crate) peer: SocketAddr,
    pub(crate) trusted: bool,
    /// The peer's IP as an `X-Forwarded-For` value.
    pub(crate) peer_header: http::HeaderValue,
    pub(crate) shared: Arc<ConnShared>,
}

#[derive(Clone)]
struct GatewayService {
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
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

// === impl Gateway ===

impl Gateway {
    /// Binds every listener; the error names the address that failed.
    pub async fn bind(&self) -> io::Result<Bound> {
        let mut listeners = Vec::new();
        for (i, l) in self.rt.listeners.iter().enumerate() {
            let tcp = TcpListener::bind(l.listen).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot listen on {} (listener `{}`): {e}", l.listen, l.name),
                )
            })?;
            listeners.push((i, tcp));
        }
        Ok(Bound { listeners })
    }

    /// Serves until `shutdown` completes, then drains: stops accepting,
    /// lets in-flight requests finish for up to the drain timeout. Returns
    /// whether every connection finished in time.
    pub async fn serve(self, bound: Bound, shutdown: impl Future<Output = ()>) -> bool {
        let mut checkers = self.start_health_checks();
        checkers.push(tokio::spawn(crate::status::run_sampler(
            self.rt.clone(),
            self.rt.sample_every,
        )));
        if !self.rt.rate_limits.is_empty() {
            let rt = self.rt.clone();
            checkers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::ratelimit::EVICT_EVERY);
                loop {
                    tick.tick().await;
                    for p in &rt.rate_limits {
                        p.evict();
                        tracing::debug!(policy = %p.name, keys = p.keys(), "rate-limit keys after eviction");
                    }
                }
            }));
        }
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_tasks = Vec::new();
        for (i, listener) in bound.listeners {
            let rt = self.rt.clone();
            let graceful = graceful.clone();
            let stop = stop_rx.clone();
            accept_tasks.push(tokio::spawn(accept_loop(rt, i, listener, graceful, stop)));
        }
        shutdown.await;
        for c in &checkers {
            c.abort();
        }
        let _ = stop_tx.send(true);
        for t in accept_tasks {
            let _ = t.await;
        }
        // Every accept loop has ended, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            warn!("accept loops still running at shutdown");
            return false;
        };
        let open = graceful.count();
        info!(connections = open, drain_timeout = ?self.rt.drain_timeout, "draining");
        let started = Instant::now();
        match tokio::time::timeout(self.rt.drain_timeout, graceful.shutdown()).await {
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
}

impl Gateway {
    /// One supervisor per upstream (health checks, DNS refresh).
    fn start_health_checks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.rt.upstreams.len())
            .map(|i| tokio::spawn(crate::supervise::supervise(self.rt.clone(), i)))
            .collect()
    }
}

async fn accept_loop(
    rt: Arc<Runtime>,
    index: usize,
    listener: TcpListener,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let name = rt.listeners[index].name.clone();
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
        let l = &rt.listeners[index];
        let Some(slot) = ConnSlot::acquire(&rt, index, peer.ip()) else {
            // Over a connection limit: say so and close (best effort, the
            // send buffer of a new socket is empty).
            let _ = stream.try_write(REFUSED_503);
            continue;
        };
        let shared = Arc::new(ConnShared::default());
        let io = ClientIo::new(
            stream,
            shared.clone(),
            l.client_header_timeout,
            l.keepalive_timeout,
        );
        let conn = Arc::new(ConnInfo {
            listener: index,
            peer,
            trusted: crate::headers::is_trusted(&rt.trusted, peer.ip()),
            peer_header: crate::headers::peer_value(peer.ip()),
            shared,
        });
        let svc = GatewayService {
            rt: rt.clone(),
            conn,
        };
        // No hyper timer: its header-read timeout (30 s by default once a
        // timer is set) would arm a timer per request; ClientIo enforces
        // client_header_timeout and keepalive_timeout instead.
        let conn = http1::Builder::new()
            .keep_alive(true)
            // Over these hyper answers 431 itself.
            .max_header_size(l.max_header_size)
            .max_headers(l.max_headers)
            // Bounds what is queued for a slow reader (hyper's default is
            // ~400 KiB per connection); the kernel's send buffer holds more.
            .max_buf_size(CLIENT_BUF_MAX.max(l.max_header_size))
            .serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watcher().watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "client connection ended with an error");
            }
        });
    }
    debug!(listener = %name, "stopped accepting");
}

/// Most response bytes queued in user space for one client connection.
const CLIENT_BUF_MAX: usize = 64 * 1024;

/// Sent to a connection refused by a connection limit.
const REFUSED_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\nproxy-status: waygate; error=connection_limit_reached; details=\"too many client connections\"\r\n\r\n";

/// A client connection counted against the gateway's and its listener's
/// limits until dropped.
struct ConnSlot {
    rt: Arc<Runtime>,
    listener: usize,
    ip: Option<std::net::IpAddr>,
}

impl ConnSlot {
    fn acquire(rt: &Arc<Runtime>, listener: usize, ip: std::net::IpAddr) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let l = &rt.listeners[listener];
        let all = &rt.metrics.client_connections;
        if all.fetch_add(1, Ordering::Relaxed) >= i64::from(rt.max_connections) {
            all.fetch_sub(1, Ordering::Relaxed);
            l.refused[2].fetch_add(1, Ordering::Relaxed);
            debug!(listener = %l.name, max = rt.max_connections, "connection refused: [gateway] max_connections reached");
            return None;
        }
        if l.open.fetch_add(1, Ordering::Relaxed) >= l.max_connections {
            l.open.fetch_sub(1, Ordering::Relaxed);
            all.fetch_sub(1, Ordering::Relaxed);
            l.refused[0].fetch_add(1, Ordering::Relaxed);
            // Counted in waygate_connections_refused_total; a log line per
            // refused connection would flood the log during an attack.
            debug!(listener = %l.name, max = l.max_connections, "connection refused: max_connections reached");
            return None;
        }
        let mut slot = Self {
            rt: rt.clone(),
            listener,
            ip: None,
        };
        if let Some(max) = l.max_connections_per_ip {
            let mut map = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= max {
                l.refused[1].fetch_add(1, Ordering::Relaxed);
                debug!(listener = %l.name, %ip, max, "connection refused: max_connections_per_ip reached");
                drop(map);
                return None; // dropping `slot` gives back the listener count
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
        let l = &self.rt.listeners[self.listener];
        l.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.rt
            .metrics
            .client_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = l.per_ip.lock().unwrap_or_else(|p| p.into_inner());
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

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // The record (and the in-flight count) starts here, synchronously,
        // so a request whose future is dropped unpolled is still logged.
        let start = Instant::now();
        let id = forward::request_id(&self.rt, &self.conn, &req);
        let finish = Finish::new(
            forward::initial_record(&self.rt, &self.conn, &req, &id),
            start,
            self.rt.clone(),
            self.conn.listener,
            self.conn.shared.clone(),
        );
        let rt = self.rt.clone();
        let conn = self.conn.clone();
        // The last request allowed on this connection asks the client to
        // close it (hyper closes after the response).
        let served = conn
            .shared
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let last = served >= rt.listeners[conn.listener].max_requests_per_connection;
        Box::pin(async move {
            let mut resp = forward::handle(rt, conn, req, id, Box::new(finish)).await;
            if last {
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(resp)
        })
    }
}
