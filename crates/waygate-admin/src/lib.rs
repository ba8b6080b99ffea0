//! The admin listener: its own address (never the public listener),
//! loopback by default, and a bearer token required on every request when
//! one is configured (the config refuses a non-loopback address without
//! one).
//!
//! Endpoints:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/healthz` | `ok` while the gateway runs |
//! | GET | `/metrics` | Prometheus text exposition (encoded with `prometheus-client`) |
//! | GET | `/status` | live status page (self-contained HTML, refreshes itself) |
//! | GET | `/status.json` | the status page's data |
//! | GET | `/upstreams` | every upstream and server with live state (JSON) |
//! | GET | `/errors` | the most recent gateway errors, newest first (JSON; `?limit=N`, default 50) |
//! | GET | `/errors/<request-id>` | one gateway error: the full record, what the cause means, what to check |
//! | POST | `/reload` | read the config file again and apply it; the outcome as JSON (200, or 422 with the errors of an invalid config, which is not applied) |
//! | POST | `/upstreams/<name>/servers/<host:port>/enable` | put a server back in rotation |
//! | POST | `/upstreams/<name>/servers/<host:port>/drain` | no new requests; in-flight ones finish |
//! | POST | `/upstreams/<name>/servers/<host:port>/disable` | out of rotation, even in panic mode |

mod status;

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use waygate_core::Cause;
use waygate_proxy::{admin_name, AdminState, ControlError, Gateway, ReloadError};
use waygate_telemetry::AccessRecord;

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    token: Option<String>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let gateway = gateway.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                let token = token.clone();
                async move { Ok::<_, Infallible>(handle(&gateway, token.as_deref(), &req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn handle(
    gateway: &Gateway,
    token: Option<&str>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "missing or wrong bearer token"}),
            );
        }
    }
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["status"]) => {
            let mut r = Response::new(Full::new(Bytes::from(status::html(&gateway.status()))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (&Method::GET, ["status.json"]) => json(StatusCode::OK, status::json(&gateway.status())),
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(gateway.metrics_text())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (&Method::GET, ["upstreams"]) => json(StatusCode::OK, upstreams(gateway)),
        (&Method::POST, ["reload"]) => match gateway.reload().await {
            Ok(report) => json(StatusCode::OK, report.to_json()),
            Err(e) => {
                let status = match e {
                    ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    ReloadError::NoConfigFile => StatusCode::CONFLICT,
                    ReloadError::NotServing => StatusCode::SERVICE_UNAVAILABLE,
                    ReloadError::Apply(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                json(status, e.to_json())
            }
        },
        (&Method::GET, ["errors"]) => {
            let limit = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("limit=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(50usize);
            let list: Vec<serde_json::Value> = gateway
                .recent_errors(limit)
                .iter()
                .map(error_json)
                .collect();
            json(StatusCode::OK, serde_json::json!({ "errors": list }))
        }
        (&Method::GET, ["errors", id]) => match gateway.error(id) {
            Some(rec) => json(StatusCode::OK, error_json(&rec)),
            None => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no gateway error recorded for request id {id}: the request succeeded, never reached this gateway, or is older than the last errors kept")}),
            ),
        },
        (&Method::POST, ["upstreams", name, "servers", server, action]) => {
            let state = match *action {
                "enable" => AdminState::Enabled,
                "drain" => AdminState::Draining,
                "disable" => AdminState::Disabled,
                _ => {
                    return json(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({"error": format!("unknown action `{action}`; expected enable, drain or disable")}),
                    )
                }
            };
            match gateway.set_server_admin(name, server, state) {
                Ok(()) => json(
                    StatusCode::OK,
                    serde_json::json!({"upstream": name, "server": server, "admin": admin_name(state)}),
                ),
                Err(e @ (ControlError::NoUpstream(_) | ControlError::NoServer(..))) => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": e.to_string()}),
                ),
            }
        }
        (
            _,
            ["healthz"]
            | ["metrics"]
            | ["status"]
            | ["status.json"]
            | ["upstreams"]
            | ["reload"]
            | ["errors"]
            | ["errors", _]
            | ["upstreams", _, "servers", _, _],
        ) => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "method not allowed"}),
        ),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no admin endpoint {path}")}),
        ),
    }
}

/// A recorded error with what its cause means for a person and an operator.
fn error_json(rec: &AccessRecord) -> serde_json::Value {
    let record: serde_json::Value = rec
        .to_json()
        .ok()
        .and_then(|l| serde_json::from_str(&l).ok())
        .unwrap_or(serde_json::Value::Null);
    let cause = rec.cause.and_then(Cause::from_name);
    serde_json::json!({
        "request_id": &*rec.request_id,
        "record": record,
        "cause": rec.cause,
        "title": cause.map(Cause::title),
        "explanation": cause.map(Cause::explanation),
        "fixes": cause.map(Cause::fixes),
    })
}

fn upstreams(gateway: &Gateway) -> serde_json::Value {
    let list: Vec<serde_json::Value> = gateway
        .upstreams()
        .into_iter()
        .map(|u| {
            let servers: Vec<serde_json::Value> = u
                .servers
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "address": s.address, "weight": s.weight, "health": s.health,
                        "admin": s.admin, "available": s.available,
                        "ejected_for_ms": s.ejected_for_ms, "ejections": s.ejections,
                        "in_flight": s.in_flight, "ewma_ms": s.ewma_ms, "reason": s.reason,
                    })
                })
                .collect();
            serde_json::json!({
                "name": u.name, "balance": u.balance, "panic": u.panic,
                "in_flight": u.in_flight, "servers": servers,
            })
        })
        .collect();
    serde_json::json!({ "upstreams": list })
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = v.to_string();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn text(status: StatusCode, s: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(s.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Compares secrets without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
