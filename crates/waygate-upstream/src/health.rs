//! Active health checks: one task per server sends an HTTP GET (or only
//! connects, for `tcp`) every interval plus jitter, and flips the server's
//! health after `rise` consecutive successes or `fall` consecutive failures,
//! logging the reason ("3 consecutive checks failed: connection refused").

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use waygate_config::{HealthCheckConfig, HealthCheckKind, ServerAddr};

use crate::server::{Health, ServerState};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub healthy: bool,
    /// "status 200", "connection refused", "timed out after 2s", ...
    pub detail: String,
}

/// How a probe talks to a server: TLS or not, HTTP/2 or HTTP/1.1, like
/// the upstream's requests do.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    pub tls: Option<crate::TlsConnect>,
    pub h2: bool,
}

/// Checks `server` forever (until the task is aborted).
pub async fn run_checker(
    server: Arc<ServerState>,
    addr: ServerAddr,
    cfg: HealthCheckConfig,
    transport: Transport,
) {
    let (mut ok_streak, mut fail_streak) = (0u32, 0u32);
    // Spread the first checks of many servers over the first interval.
    let mut delay = cfg.jitter.mul_f64(fastrand::f64());
    loop {
        tokio::time::sleep(delay).await;
        delay = cfg.interval + cfg.jitter.mul_f64(fastrand::f64());
        let outcome = check_once(&addr, &cfg, &transport).await;
        let state = server.health();
        if outcome.healthy {
            ok_streak += 1;
            fail_streak = 0;
            // A server never seen before is trusted on its first success.
            if state != Health::Healthy && (ok_streak >= cfg.rise || state == Health::Unknown) {
                let why = format!("{ok_streak} consecutive checks passed: {}", outcome.detail);
                if server.set_health(true, why.clone()) {
                    tracing::info!(server = %server.label, reason = %why, "server healthy");
                }
            }
        } else {
            fail_streak += 1;
            ok_streak = 0;
            if state != Health::Unhealthy && fail_streak >= cfg.fall {
                let why = format!(
                    "{fail_streak} consecutive checks failed: {}",
                    outcome.detail
                );
                if server.set_health(false, why.clone()) {
                    tracing::warn!(server = %server.label, reason = %why, "server unhealthy");
                }
            }
        }
    }
}

/// One check of `addr`, bounded by the check timeout.
pub async fn check_once(
    addr: &ServerAddr,
    cfg: &HealthCheckConfig,
    transport: &Transport,
) -> CheckOutcome {
    match tokio::time::timeout(cfg.timeout, check(addr, cfg, transport)).await {
        Ok(outcome) => outcome,
        Err(_) => CheckOutcome {
            healthy: false,
            detail: format!("timed out after {:?}", cfg.timeout),
        },
    }
}

async fn check(addr: &ServerAddr, cfg: &HealthCheckConfig, transport: &Transport) -> CheckOutcome {
    let first = match resolve(addr).await {
        Ok(mut all) => all.remove(0),
        Err(detail) => {
            return CheckOutcome {
                healthy: false,
                detail,
            }
        }
    };
    let spec = ProbeSpec::from_check(addr, cfg, transport.clone());
    let p = probe_addr(first, &spec).await;
    CheckOutcome {
        healthy: p.verdict.is_ok(),
        detail: p.detail,
    }
}

/// What a probe found about one server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The health check passed.
    Healthy,
    /// No health check configured: it answered HTTP with a status below 500.
    Reachable,
    /// The host name did not resolve.
    DnsError,
    /// Nothing listens on the port.
    Refused,
    /// No connect, or no response, in time.
    Timeout,
    /// The connect failed otherwise (unreachable network, ...).
    ConnectFailed,
    /// It answered, but not with HTTP (or closed without answering).
    BadHttp,
    /// The TLS handshake failed (certificate refused, or not TLS).
    TlsError,
    /// A valid HTTP answer with a status the check does not accept.
    Unhealthy,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Reachable => "reachable",
            Verdict::DnsError => "dns_error",
            Verdict::Refused => "refused",
            Verdict::Timeout => "timeout",
            Verdict::ConnectFailed => "connect_failed",
            Verdict::BadHttp => "bad_http",
            Verdict::TlsError => "tls_error",
            Verdict::Unhealthy => "unhealthy",
        }
    }

    pub fn is_ok(self) -> bool {
        matches!(self, Verdict::Healthy | Verdict::Reachable)
    }
}

/// The outcome of probing one address, with timings.
#[derive(Debug, Clone)]
pub struct Probe {
    pub address: SocketAddr,
    pub verdict: Verdict,
    /// How long the TCP connect took, if it completed.
    pub connect: Option<std::time::Duration>,
    /// From the request sent to the response head, if one came.
    pub response: Option<std::time::Duration>,
    /// "GET /healthz answered 200", "connection refused", ...
    pub detail: String,
}

/// How to probe: the request to send (none: connect only) and which
/// statuses pass.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// (path, Host header); `None` connects only.
    pub request: Option<(String, String)>,
    /// Inclusive status ranges that pass; `None`: any status below 500.
    pub expected: Option<Vec<(u16, u16)>>,
    pub connect_timeout: std::time::Duration,
    pub response_timeout: std::time::Duration,
    /// Whether a health check defined this probe (then a pass is "healthy").
    pub is_health_check: bool,
    /// The server's host, for TLS server names.
    pub host: String,
    pub transport: Transport,
}

impl ProbeSpec {
    /// The upstream's health check, as the checker runs it.
    pub fn from_check(addr: &ServerAddr, cfg: &HealthCheckConfig, transport: Transport) -> Self {
        Self {
            request: match &cfg.kind {
                HealthCheckKind::Tcp => None,
                HealthCheckKind::Http { path, host } => Some((
                    path.clone(),
                    host.clone().unwrap_or_else(|| addr.to_string()),
                )),
            },
            expected: Some(cfg.expected_statuses.clone()),
            connect_timeout: cfg.timeout,
            response_timeout: cfg.timeout,
            is_health_check: true,
            host: addr.host.clone(),
            transport,
        }
    }
}

/// Every address of `addr` (one for an IP, each answer for a host name).
pub async fn resolve(addr: &ServerAddr) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host((addr.host.as_str(), addr.port)).await {
        Ok(it) => {
            let mut v: Vec<SocketAddr> = it.collect();
            v.dedup();
            if v.is_empty() {
                Err("host name resolved to no address".into())
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(format!("DNS error: {e}")),
    }
}

/// Connects to `target` and, if the spec has a request, sends it and
/// classifies the answer.
pub async fn probe_addr(target: SocketAddr, spec: &ProbeSpec) -> Probe {
    let started = tokio::time::Instant::now();
    let mut p = Probe {
        address: target,
        verdict: Verdict::Timeout,
        connect: None,
        response: None,
        detail: String::new(),
    };
    let stream = match tokio::time::timeout(spec.connect_timeout, TcpStream::connect(target)).await
    {
        Err(_) => {
            p.detail = format!("no connection within {:?}", spec.connect_timeout);
            return p;
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            p.verdict = Verdict::Refused;
            p.detail = "connection refused".into();
            return p;
        }
        Ok(Err(e)) => {
            p.verdict = Verdict::ConnectFailed;
            p.detail = format!("connect failed: {e}");
            return p;
        }
        Ok(Ok(s)) => s,
    };
    p.connect = Some(started.elapsed());
    let pass = if spec.is_health_check {
        Verdict::Healthy
    } else {
        Verdict::Reachable
    };
    let Some((path, host)) = &spec.request else {
        p.verdict = pass;
        p.detail = "connected".into();
        return p;
    };
    let sent = tokio::time::Instant::now();
    let exchange = async {
        match &spec.transport.tls {
            None => Ok(exchange(stream, spec.transport.h2, "http", path, host).await),
            Some(tls) => match tls.handshake(stream, &spec.host).await {
                Ok(s) => Ok(exchange(s, spec.transport.h2, "https", path, host).await),
                Err(f) => Err(f),
            },
        }
    };
    let answer = match tokio::time::timeout(spec.response_timeout, exchange).await {
        Ok(Err(f)) => {
            p.verdict = Verdict::TlsError;
            p.detail = f.detail;
            return p;
        }
        Ok(Ok(r)) => Ok(r),
        Err(e) => Err(e),
    };
    match answer {
        Err(_) => {
            p.detail = format!("GET {path}: no response within {:?}", spec.response_timeout);
        }
        Ok(Ok(status)) => {
            p.response = Some(sent.elapsed());
            let ok = match &spec.expected {
                Some(ranges) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)),
                None => status < 500,
            };
            p.verdict = if ok { pass } else { Verdict::Unhealthy };
            p.detail = format!("GET {path} answered {status}");
            if let (false, Some(ranges)) = (ok, &spec.expected) {
                let list: Vec<String> =
                    ranges.iter().map(|(lo, hi)| format!("{lo}-{hi}")).collect();
                p.detail
                    .push_str(&format!(" (expected {})", list.join(", ")));
            }
        }
        Ok(Err(e)) if e.is_parse() => {
            p.verdict = Verdict::BadHttp;
            p.detail = format!("GET {path}: not a valid HTTP response ({e})");
        }
        Ok(Err(e)) => {
            p.verdict = Verdict::BadHttp;
            p.detail = format!("GET {path}: no response ({e})");
        }
    }
    p
}

/// `GET path` over HTTP/1.1 (closing after) or HTTP/2; the status.
async fn exchange<S>(
    stream: S,
    h2: bool,
    scheme: &str,
    path: &str,
    host: &str,
) -> Result<u16, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut req = Request::get(path)
        .header(header::USER_AGENT, "waygate-health-check")
        .body(Empty::<Bytes>::new())
        .unwrap_or_default();
    if h2 {
        if let Ok(uri) = http::Uri::builder()
            .scheme(scheme)
            .authority(host)
            .path_and_query(path)
            .build()
        {
            *req.uri_mut() = uri;
        }
        let (mut tx, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await?;
        let driver = tokio::spawn(conn);
        let out = tx.send_request(req).await.map(|r| r.status().as_u16());
        driver.abort();
        return out;
    }
    if let Ok(h) = http::HeaderValue::from_str(host) {
        req.headers_mut().insert(header::HOST, h);
    }
    req.headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let out = tx.send_request(req).await.map(|r| r.status().as_u16());
    driver.abort();
    out
}
