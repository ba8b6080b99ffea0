//! The forwarder: one request from route to response, top to bottom.
//!
//! ```text
//! request id → route → pick server → build upstream request
//!   → attempt (pooled or fresh conn → send under timeouts → classify)
//!   → check framing → hold for the first body bytes → stream, or render the error
//! ```
//! Every failure becomes a [`GatewayError`] with its [`Cause`] where it is
//! first seen; [`handle`] renders it and records it in the access log.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use waygate_core::{Cause, GatewayError, RequestId, Side};
use waygate_telemetry::AccessRecord;

use crate::body::{ms, Finish, ProxyBody, Streaming, Upload, UpstreamBody};
use crate::classify;
use crate::headers::{self, X_REQUEST_ID};
use crate::pool::{PooledConn, Server};
use crate::respond::ErrorReport;
use crate::router::route_host;
use crate::runtime::{Runtime, Upstream};
use crate::server::ConnInfo;

/// An upstream response ready to stream to the client.
struct Ready {
    parts: http::response::Parts,
    body: Streaming,
}

/// Where the request went, for error details.
#[derive(Default)]
struct Target {
    upstream: Option<Arc<str>>,
    server: Option<usize>,
}

/// The access-log record as far as the request head tells.
pub(crate) fn initial_record(
    rt: &Runtime,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    id: &RequestId,
) -> AccessRecord {
    let host = req
        .uri()
        .host()
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    AccessRecord {
        time: waygate_telemetry::rfc3339_millis(SystemTime::now()),
        request_id: id.as_str().to_owned(),
        listener: rt.listeners[conn.listener].name.to_string(),
        client: conn.peer.to_string(),
        method: req.method().as_str().to_owned(),
        host: host.to_owned(),
        path: req.uri().path().to_owned(),
        side: Side::Gateway.name(),
        ..AccessRecord::default()
    }
}

/// Handles one request and returns the response to send: the upstream's,
/// or one the gateway generated for a cause.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    id: RequestId,
    mut finish: Box<Finish>,
) -> Response<ProxyBody> {
    let accept = req.headers().get(header::ACCEPT).cloned();
    let mut target = Target::default();
    match forward(&rt, &conn, req, &id, &mut finish, &mut target).await {
        Ok(ready) => {
            finish.responding(ready.parts.status.as_u16(), Side::Upstream);
            Response::from_parts(ready.parts, ProxyBody::upstream(ready.body, finish))
        }
        Err(err) => {
            tracing::debug!(request_id = %id, cause = err.cause.name(), detail = %err.detail, "gateway error");
            finish.generated(&err);
            let public = if rt.expose_addresses {
                err.detail.clone()
            } else {
                public_detail(err.cause, &target)
            };
            let resp = rt.responder.render(&ErrorReport {
                cause: err.cause,
                detail: &public,
                request_id: id.as_str(),
                accept: accept.as_ref(),
            });
            let (parts, bytes) = resp.into_parts();
            Response::from_parts(parts, ProxyBody::full(bytes, finish))
        }
    }
}

/// A detail for the client's `Proxy-Status` that names no address.
fn public_detail(cause: Cause, t: &Target) -> String {
    match (&t.upstream, t.server) {
        (Some(u), Some(i)) => format!("upstream {u} server #{}: {}", i + 1, cause.name()),
        (Some(u), None) => format!("upstream {u}: {}", cause.name()),
        _ => cause.name().to_owned(),
    }
}

/// The client's `X-Request-Id` if it is a trusted proxy and the id is
/// well-formed; a fresh one otherwise.
pub(crate) fn request_id(rt: &Runtime, conn: &ConnInfo, req: &Request<Incoming>) -> RequestId {
    if conn.trusted {
        if let Some(id) = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| RequestId::parse(v.as_bytes()))
        {
            return id;
        }
    }
    rt.ids.next_id()
}

async fn forward(
    rt: &Runtime,
    conn: &ConnInfo,
    req: Request<Incoming>,
    id: &RequestId,
    finish: &mut Finish,
    target: &mut Target,
) -> Result<Ready, GatewayError> {
    // Route.
    let listener = &rt.listeners[conn.listener];
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let host = route_host(req.uri().host(), host_header);
    let route = listener
        .router
        .find(&host, req.uri().path())
        .ok_or_else(|| GatewayError::new(Cause::NoRoute, "no route matches this host and path"))?;
    let upstream = &rt.upstreams[route.upstream];
    finish.rec.route = Some(route.name.to_string());
    finish.rec.upstream = Some(upstream.name.to_string());
    target.upstream = Some(upstream.name.clone());

    // Pick a server.
    let (index, server) = upstream.pick().ok_or_else(|| {
        GatewayError::new(
            Cause::NoServerAvailable,
            format!("upstream {} has no servers", upstream.name),
        )
    })?;
    target.server = Some(index);
    finish.rec.upstream_server = Some(server.label.to_string());

    // Build the upstream request.
    let (mut parts, body) = req.into_parts();
    prepare_request(rt, conn, &mut parts, id);
    let (body, upload) = if body.is_end_stream() {
        (UpstreamBody::Empty, None)
    } else {
        let upload = Arc::new(Upload::new(finish.start));
        finish.upload = Some(upload.clone());
        (
            UpstreamBody::Stream {
                body,
                upload: upload.clone(),
            },
            Some(upload),
        )
    };

    let (resp, pooled) = attempt(upstream, server, parts, body, upload.as_deref(), finish).await?;
    finish.rec.upstream_status = Some(resp.status().as_u16());
    finish.rec.first_byte_ms = Some(ms(finish.start.elapsed()));
    respond(rt, upstream, resp, pooled, id).await
}

/// Rewrites the client's request for the upstream: origin-form target,
/// HTTP/1.1, hop-by-hop headers removed, forwarding headers and request id.
fn prepare_request(rt: &Runtime, conn: &ConnInfo, parts: &mut Parts, id: &RequestId) {
    if !parts.headers.contains_key(header::HOST) {
        if let Some(auth) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    // hyper answers `Expect: 100-continue` to the client itself.
    parts.headers.remove(header::EXPECT);
    let host = parts.headers.get(header::HOST).cloned();
    headers::set_forwarding(
        &mut parts.headers,
        conn.peer.ip(),
        conn.trusted,
        host.as_ref(),
        &rt.via,
    );
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        parts.headers.insert(X_REQUEST_ID.clone(), v);
    }
    let origin_form = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = Uri::try_from(origin_form).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
}

/// Sends the request to `server` and waits for the response head.
///
/// A pooled connection can be closed by the server just as we reuse it;
/// then a bodiless idempotent request is retried once on a fresh connection
/// (nothing of it can have been processed twice in a harmful way). Real
/// retries across servers come with issue #3.
async fn attempt(
    upstream: &Upstream,
    server: &Arc<Server>,
    mut parts: Parts,
    body: UpstreamBody,
    upload: Option<&Upload>,
    finish: &mut Finish,
) -> Result<(Response<Incoming>, PooledConn), GatewayError> {
    let mut body = Some(body);
    let mut fresh_only = false;
    loop {
        finish.rec.attempts += 1;
        let (mut conn, reused) = match (!fresh_only).then(|| server.checkout()).flatten() {
            Some(c) => (c, true),
            None => {
                let t = Instant::now();
                let c = server.connect(upstream.connect_timeout).await?;
                finish.rec.connect_ms = Some(ms(t.elapsed()));
                (c, false)
            }
        };
        finish.rec.reused = Some(reused);
        let replayable = reused && upload.is_none() && is_idempotent(&parts.method);
        let retry_parts = replayable.then(|| clone_parts(&parts));
        let req = Request::from_parts(parts, body.take().unwrap_or(UpstreamBody::Empty));
        let failure = match send(&mut conn, req, upstream, upload).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(failure) => {
                conn.close();
                failure
            }
        };
        match failure {
            SendError::Timeout(err) => return Err(err),
            SendError::Hyper(e) => {
                let cause = upload
                    .and_then(Upload::client_fault)
                    .unwrap_or_else(|| classify::send_error(&e));
                let stale = matches!(cause, Cause::UpstreamClosed | Cause::UpstreamReset);
                match retry_parts {
                    Some(p) if stale => {
                        tracing::debug!(server = %server.label, error = %e, "pooled connection was closed by the server; retrying on a fresh one");
                        parts = p;
                        body = Some(UpstreamBody::Empty);
                        fresh_only = true;
                    }
                    _ => return Err(GatewayError::new(cause, format!("{}: {e}", server.label))),
                }
            }
        }
    }
}

enum SendError {
    Hyper(hyper::Error),
    Timeout(GatewayError),
}

/// Sends and waits for the response head. The response timeout counts from
/// the end of the request body; while the body is still uploading, it must
/// make progress at least every body idle timeout, and a stall is blamed on
/// whichever side was holding it up.
async fn send(
    conn: &mut PooledConn,
    req: Request<UpstreamBody>,
    upstream: &Upstream,
    upload: Option<&Upload>,
) -> Result<Response<Incoming>, SendError> {
    let sent_at = Instant::now();
    let fut = conn.tx.send_request(req);
    let Some(upload) = upload else {
        return match tokio::time::timeout(upstream.response_timeout, fut).await {
            Ok(r) => r.map_err(SendError::Hyper),
            Err(_) => Err(SendError::Timeout(response_timeout(
                upstream.response_timeout,
            ))),
        };
    };
    tokio::pin!(fut);
    loop {
        let deadline = match upload.done_at() {
            Some(done) => done + upstream.response_timeout,
            None => upload.last_progress().max(sent_at) + upstream.body_idle_timeout,
        };
        tokio::select! {
            r = &mut fut => return r.map_err(SendError::Hyper),
            _ = tokio::time::sleep_until(deadline) => {}
        }
        let now = Instant::now();
        let next = match upload.done_at() {
            Some(done) => done + upstream.response_timeout,
            None => upload.last_progress().max(sent_at) + upstream.body_idle_timeout,
        };
        if next > now {
            continue;
        }
        let err = match upload.done_at() {
            Some(_) => response_timeout(upstream.response_timeout),
            None if upload.waiting_on_client() => GatewayError::new(
                Cause::ClientBodyTimeout,
                format!(
                    "client sent no request body bytes for {:?}",
                    upstream.body_idle_timeout
                ),
            ),
            None => GatewayError::new(
                Cause::UpstreamWriteTimeout,
                format!(
                    "upstream read no request body bytes for {:?}",
                    upstream.body_idle_timeout
                ),
            ),
        };
        return Err(SendError::Timeout(err));
    }
}

fn response_timeout(d: Duration) -> GatewayError {
    GatewayError::new(
        Cause::ResponseTimeout,
        format!("no response head within {d:?}"),
    )
}

/// Turns the upstream's response head into ours, after checking that its
/// framing is unambiguous and holding for its first body bytes.
async fn respond(
    rt: &Runtime,
    upstream: &Upstream,
    resp: Response<Incoming>,
    conn: PooledConn,
    id: &RequestId,
) -> Result<Ready, GatewayError> {
    let (mut parts, mut body) = resp.into_parts();
    // RFC 9112 §6.3: both headers is a smuggling/splitting risk; refuse it.
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        conn.close();
        return Err(GatewayError::new(
            Cause::ResponseFramingConflict,
            "response has both Content-Length and Transfer-Encoding",
        ));
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, &rt.via);
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        parts.headers.insert(X_REQUEST_ID.clone(), v);
    }
    parts.version = Version::HTTP_11;

    // Hold the head briefly for the first body bytes: a body broken from its
    // first byte can then still be answered with a truthful 502 instead of
    // a truncated success.
    let mut first = None;
    if !body.is_end_stream() {
        match tokio::time::timeout(upstream.head_hold, body.frame()).await {
            Ok(Some(Ok(frame))) => first = Some(frame),
            Ok(Some(Err(e))) => {
                conn.close();
                return Err(GatewayError::new(
                    classify::body_error(&e),
                    format!("upstream response body failed before any byte was sent: {e}"),
                ));
            }
            Ok(None) | Err(_) => {}
        }
    }
    Ok(Ready {
        parts,
        body: Streaming {
            first,
            body,
            idle: Box::pin(tokio::time::sleep(upstream.body_idle_timeout)),
            idle_timeout: upstream.body_idle_timeout,
            conn: Some(conn),
        },
    })
}

/// RFC 9110 §9.2.2.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}
