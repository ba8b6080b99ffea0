//! One attempt: a connection to the chosen server (pooled, or fresh within
//! the upstream's connection limit), the request sent, the response head
//! awaited under the timeouts, and the failure classified. Also the request
//! body as prepared for attempts: buffered (replayable) when small enough.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use waygate_core::{Cause, GatewayError};
use waygate_telemetry::{AttemptOutcome, AttemptRecord};
use waygate_upstream::Pick;

use crate::body::{ms, Finish, FullBody, StreamBody, Upload, UpstreamBody};
use crate::classify;
use crate::pool::{PooledConn, SendResult, Server};
use crate::runtime::Upstream;

/// A failed attempt: the error, and whether any of the request may have
/// reached the server (which decides whether retrying is safe).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) err: GatewayError,
    pub(crate) sent: bool,
}

/// The request body, as prepared for one or more attempts.
#[derive(Debug)]
pub(crate) enum RequestBody {
    Empty,
    /// Received completely and small enough to replay, with its trailers
    /// (gRPC and others send some).
    Buffered(Bytes, Option<Box<http::HeaderMap>>),
    /// Streamed: usable by one attempt only; `None` once taken.
    Streamed {
        inner: Option<UpstreamBody>,
        upload: Arc<Upload>,
    },
}

enum SendError {
    /// The connection could not take the request; it is returned untouched.
    NotSent(Box<Request<UpstreamBody>>),
    Hyper(hyper::Error),
    Timeout(GatewayError),
}

// === impl RequestBody ===

impl RequestBody {
    /// Reads the client's body into memory when retries are possible and it
    /// fits in `max_replay_body`; otherwise streams it (what was read so far
    /// goes first).
    pub(crate) async fn prepare(
        mut body: Incoming,
        upstream: &Upstream,
        limit: Option<u64>,
        finish: &mut Finish,
    ) -> Result<Self, GatewayError> {
        if body.is_end_stream() {
            return Ok(RequestBody::Empty);
        }
        let cap = upstream.retry.max_replay_body;
        let too_big = body.size_hint().lower() > cap as u64;
        let mut prefix: VecDeque<Bytes> = VecDeque::new();
        let mut trailers = None;
        if upstream.retry.max_attempts > 1 && cap > 0 && !too_big {
            let mut total = 0usize;
            loop {
                let frame =
                    match tokio::time::timeout(upstream.body_idle_timeout, body.frame()).await {
                        Err(_) => {
                            return Err(GatewayError::new(
                                Cause::ClientBodyTimeout,
                                format!(
                                    "client sent no request body bytes for {:?}",
                                    upstream.body_idle_timeout
                                ),
                            ))
                        }
                        Ok(None) => {
                            let mut all = BytesMut::with_capacity(total);
                            for chunk in prefix {
                                all.extend_from_slice(&chunk);
                            }
                            return Ok(RequestBody::Buffered(all.freeze(), trailers));
                        }
                        Ok(Some(Err(e))) => {
                            let cause = if e.is_incomplete_message() || e.is_canceled() {
                                Cause::ClientClosed
                            } else {
                                Cause::ClientBodyError
                            };
                            return Err(GatewayError::new(
                                cause,
                                format!("reading the request body: {e}"),
                            ));
                        }
                        Ok(Some(Ok(frame))) => frame,
                    };
                let frame = match frame.into_trailers() {
                    Ok(t) => {
                        trailers = Some(Box::new(t));
                        continue;
                    }
                    Err(frame) => frame,
                };
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    if limit.is_some_and(|max| total as u64 > max) {
                        return Err(GatewayError::new(
                            Cause::RequestBodyTooLarge,
                            format!(
                                "request body is over max_request_body_size {}",
                                limit.unwrap_or(0)
                            ),
                        ));
                    }
                    finish.add_bytes_in(data.len() as u64);
                    prefix.push_back(data);
                }
                if total > cap {
                    break;
                }
                if body.is_end_stream() {
                    let mut all = BytesMut::with_capacity(total);
                    for chunk in prefix {
                        all.extend_from_slice(&chunk);
                    }
                    return Ok(RequestBody::Buffered(all.freeze(), trailers));
                }
            }
        }
        let read: u64 = prefix.iter().map(|b| b.len() as u64).sum();
        let mut upload = Upload::new(finish.start);
        upload.limit = limit.map(|max| max.saturating_sub(read));
        let upload = Arc::new(upload);
        finish.upload = Some(upload.clone());
        Ok(RequestBody::Streamed {
            inner: Some(UpstreamBody::Stream(Box::new(StreamBody {
                prefix,
                body,
                upload: upload.clone(),
            }))),
            upload,
        })
    }

    /// Whether another attempt can send this body.
    pub(crate) fn can_replay(&self, _sent: bool) -> bool {
        match self {
            RequestBody::Empty | RequestBody::Buffered(..) => true,
            RequestBody::Streamed { inner, .. } => inner.is_some(),
        }
    }

    fn take(&mut self) -> UpstreamBody {
        match self {
            RequestBody::Empty => UpstreamBody::Empty,
            RequestBody::Buffered(b, t) => UpstreamBody::Full(Box::new(FullBody {
                data: Some(b.clone()),
                trailers: t.clone(),
            })),
            RequestBody::Streamed { inner, .. } => inner.take().unwrap_or(UpstreamBody::Empty),
        }
    }

    fn restore(&mut self, b: UpstreamBody) {
        if let RequestBody::Streamed { inner, .. } = self {
            *inner = Some(b);
        }
    }

    fn upload(&self) -> Option<Arc<Upload>> {
        match self {
            RequestBody::Streamed { upload, .. } => Some(upload.clone()),
            _ => None,
        }
    }
}

/// Runs one attempt on `pick`. A pooled connection that turns out to have
/// been closed before any byte of the request was written is replaced by a
/// fresh one, whatever the method (the keep-alive race); both tries are
/// recorded. A request asking to switch protocols (`upgrade`) always gets a
/// fresh connection able to hand its socket over.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    upstream: &Upstream,
    pool: &Arc<Server>,
    pick: &Pick,
    parts: &mut Parts,
    body: &mut RequestBody,
    more: bool,
    upgrade: bool,
    finish: &mut Finish,
) -> Result<(Response<Incoming>, PooledConn), Failure> {
    let mut fresh_only = upgrade;
    loop {
        let mut rec = AttemptRecord {
            server: pick.server.label.clone(),
            pick: pick.reason.name(),
            panic: pick.panic,
            reused: false,
            outcome: AttemptOutcome::Pending,
            connect_ms: None,
            first_byte_ms: None,
        };
        let t = Instant::now();
        let mut conn = match acquire(upstream, pool, fresh_only, upgrade).await {
            Ok(c) => c,
            Err(err) => {
                rec.outcome = AttemptOutcome::Cause(err.cause.name());
                finish.rec.attempts.push(rec);
                return Err(Failure { err, sent: false });
            }
        };
        rec.reused = conn.reused;
        // One clock read per phase: a pooled connection is sent on at once.
        let sent_at = if conn.reused {
            t
        } else {
            let now = Instant::now();
            let connect = ms(now - t);
            rec.connect_ms = Some(connect);
            finish.rec.connect_ms = Some(connect);
            now
        };
        // Keep the head for a later attempt only if there can be one.
        let head = if more {
            clone_parts(parts)
        } else {
            std::mem::replace(parts, empty_parts())
        };
        let upload = body.upload();
        conn.set_quiet(upload.is_none());
        let req = Request::from_parts(head, body.take());
        match send(&mut conn, req, sent_at, upstream, upload.as_deref()).await {
            Ok(resp) => {
                let now = Instant::now();
                rec.outcome = AttemptOutcome::Status(resp.status().as_u16());
                rec.first_byte_ms = Some(ms(now - sent_at));
                finish.rec.first_byte_ms = Some(ms(now - finish.start));
                finish.rec.attempts.push(rec);
                return Ok((resp, conn));
            }
            Err(SendError::NotSent(req)) => {
                let (p, b) = req.into_parts();
                *parts = p;
                body.restore(b);
                let reused = conn.reused;
                conn.close();
                if reused && !fresh_only {
                    rec.outcome = AttemptOutcome::Note(
                        "pooled_connection_closed (nothing sent; retrying on a fresh connection)",
                    );
                    finish.rec.attempts.push(rec);
                    tracing::debug!(server = %pick.server.label, "pooled connection was closed before the request was sent; using a fresh one");
                    fresh_only = true;
                    continue;
                }
                let err = GatewayError::new(
                    Cause::UpstreamClosed,
                    format!(
                        "{}: connection closed before the request was sent",
                        pool.label
                    ),
                );
                rec.outcome = AttemptOutcome::Cause(err.cause.name());
                finish.rec.attempts.push(rec);
                return Err(Failure { err, sent: false });
            }
            Err(SendError::Hyper(e)) => {
                let reused = conn.reused;
                conn.close();
                let mut cause = upload
                    .as_deref()
                    .and_then(Upload::client_fault)
                    .unwrap_or_else(|| classify::send_error(&e));
                if reused && matches!(cause, Cause::UpstreamClosed | Cause::UpstreamReset) {
                    cause = Cause::PooledConnectionClosed;
                }
                rec.outcome = AttemptOutcome::Cause(cause.name());
                finish.rec.attempts.push(rec);
                let detail = match classify::tls(&e) {
                    Some(f) => format!("{}: {e}: {}", pool.label, f.detail),
                    None => format!("{}: {e}", pool.label),
                };
                let err = GatewayError::new(cause, detail);
                return Err(Failure { err, sent: true });
            }
            Err(SendError::Timeout(err)) => {
                conn.close();
                rec.outcome = AttemptOutcome::Cause(err.cause.name());
                finish.rec.attempts.push(rec);
                return Err(Failure { err, sent: true });
            }
        }
    }
}

/// A pooled connection, or a fresh one within the upstream's connection
/// limit (waiting, as one of at most `max_pending`, up to the connect
/// timeout for a connection to be returned or closed). `upgrades`: a fresh
/// connection able to switch protocols.
async fn acquire(
    upstream: &Upstream,
    pool: &Arc<Server>,
    fresh_only: bool,
    upgrades: bool,
) -> Result<PooledConn, GatewayError> {
    if !fresh_only {
        if let Some(c) = pool.checkout() {
            return Ok(c);
        }
    }
    // Boxed: connecting (DNS, TCP, TLS, handshake) is a large future that
    // would otherwise sit inline in every request's state, copied and
    // allocated per request although a pooled connection is the rule.
    Box::pin(connect(upstream, pool, upgrades)).await
}

/// A fresh connection within the upstream's connection limit (or, while
/// waiting for room, a pooled one returned meanwhile, unless `upgrades`).
async fn connect(
    upstream: &Upstream,
    pool: &Arc<Server>,
    upgrades: bool,
) -> Result<PooledConn, GatewayError> {
    let permit = match upstream.limits.try_connection() {
        Some(p) => p,
        None => {
            let deadline = Instant::now() + upstream.connect_timeout;
            loop {
                tokio::select! {
                    p = upstream.limits.wait_connection() => match p {
                        Some(p) => break p,
                        None => return Err(GatewayError::new(
                            Cause::UpstreamLimitReached,
                            format!("upstream {}: max_connections reached and max_pending requests already waiting", upstream.name),
                        )),
                    },
                    _ = upstream.released.notified(), if !upgrades => {
                        if let Some(c) = pool.checkout() {
                            return Ok(c);
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return Err(GatewayError::new(
                        Cause::UpstreamLimitReached,
                        format!("upstream {}: no connection free within {:?} (max_connections)", upstream.name, upstream.connect_timeout),
                    )),
                }
            }
        }
    };
    pool.connect(upstream.connect_timeout, permit, upgrades)
        .await
}

/// Sends and waits for the response head. The response timeout (or the
/// shorter per-try timeout) counts from the end of the request body; while
/// a streamed body is still uploading, it must make progress at least every
/// body idle timeout, and a stall is blamed on whichever side held it up.
async fn send(
    conn: &mut PooledConn,
    req: Request<UpstreamBody>,
    sent_at: Instant,
    upstream: &Upstream,
    upload: Option<&Upload>,
) -> Result<Response<Incoming>, SendError> {
    let response_timeout = upstream
        .retry
        .per_try_timeout
        .map_or(upstream.response_timeout, |t| {
            t.min(upstream.response_timeout)
        });
    let fut = conn.send(req);
    let Some(upload) = upload else {
        return match tokio::time::timeout_at(sent_at + response_timeout, fut).await {
            Ok(r) => sent_or_not(r),
            Err(_) => Err(SendError::Timeout(timeout_error(response_timeout))),
        };
    };
    // Boxed: a streamed upload is the rarer case, and its state would
    // otherwise make every request's future larger.
    Box::pin(send_uploading(
        fut,
        sent_at,
        response_timeout,
        upstream,
        upload,
    ))
    .await
}

/// [`send`] while a streamed request body is still uploading.
async fn send_uploading(
    fut: impl Future<Output = SendResult>,
    sent_at: Instant,
    response_timeout: std::time::Duration,
    upstream: &Upstream,
    upload: &Upload,
) -> Result<Response<Incoming>, SendError> {
    tokio::pin!(fut);
    let deadline = |u: &Upload| match u.done_at() {
        Some(done) => done + response_timeout,
        None => u.last_progress().max(sent_at) + upstream.body_idle_timeout,
    };
    loop {
        tokio::select! {
            r = &mut fut => return sent_or_not(r),
            _ = tokio::time::sleep_until(deadline(upload)) => {}
        }
        if deadline(upload) > Instant::now() {
            continue;
        }
        let err = match upload.done_at() {
            Some(_) => timeout_error(response_timeout),
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

/// hyper's answer: the request back untouched if it was never sent.
fn sent_or_not(r: SendResult) -> Result<Response<Incoming>, SendError> {
    r.map_err(|mut e| match e.take_message() {
        Some(req) => SendError::NotSent(Box::new(req)),
        None => SendError::Hyper(e.into_error()),
    })
}

fn timeout_error(d: std::time::Duration) -> GatewayError {
    GatewayError::new(
        Cause::ResponseTimeout,
        format!("no response head within {d:?}"),
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

fn empty_parts() -> Parts {
    Request::new(()).into_parts().0
}
