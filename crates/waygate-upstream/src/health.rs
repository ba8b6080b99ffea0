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

/// Checks `server` forever (until the task is aborted).
pub async fn run_checker(server: Arc<ServerState>, addr: ServerAddr, cfg: HealthCheckConfig) {
    let (mut ok_streak, mut fail_streak) = (0u32, 0u32);
    // Spread the first checks of many servers over the first interval.
    let mut delay = cfg.jitter.mul_f64(fastrand::f64());
    loop {
        tokio::time::sleep(delay).await;
        delay = cfg.interval + cfg.jitter.mul_f64(fastrand::f64());
        let outcome = check_once(&addr, &cfg).await;
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
pub async fn check_once(addr: &ServerAddr, cfg: &HealthCheckConfig) -> CheckOutcome {
    match tokio::time::timeout(cfg.timeout, probe(addr, cfg)).await {
        Ok(outcome) => outcome,
        Err(_) => CheckOutcome {
            healthy: false,
            detail: format!("timed out after {:?}", cfg.timeout),
        },
    }
}

async fn probe(addr: &ServerAddr, cfg: &HealthCheckConfig) -> CheckOutcome {
    let fail = |detail: String| CheckOutcome {
        healthy: false,
        detail,
    };
    let target: SocketAddr = match tokio::net::lookup_host((addr.host.as_str(), addr.port)).await {
        Ok(mut it) => match it.next() {
            Some(a) => a,
            None => return fail("host name resolved to no address".into()),
        },
        Err(e) => return fail(format!("DNS error: {e}")),
    };
    let stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return fail("connection refused".into())
        }
        Err(e) => return fail(format!("connect failed: {e}")),
    };
    let (path, host) = match &cfg.kind {
        HealthCheckKind::Tcp => {
            return CheckOutcome {
                healthy: true,
                detail: "connected".into(),
            }
        }
        HealthCheckKind::Http { path, host } => {
            (path, host.clone().unwrap_or_else(|| addr.to_string()))
        }
    };
    let (mut tx, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return fail(format!("handshake failed: {e}")),
    };
    let driver = tokio::spawn(conn);
    let req = Request::get(path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "waygate-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let req = match req {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid check request: {e}")),
    };
    let outcome = match tx.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            CheckOutcome {
                healthy: cfg.is_expected(status),
                detail: format!("status {status}"),
            }
        }
        Err(e) if e.is_parse() => fail(format!("invalid HTTP response: {e}")),
        Err(e) => fail(format!("no response: {e}")),
    };
    driver.abort();
    outcome
}
