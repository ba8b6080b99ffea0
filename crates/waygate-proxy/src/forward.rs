//! The forwarder: one request from route to response, top to bottom.
//!
//! ```text
//! request id → route → admit (upstream limits) → prepare request and body
//!   → loop: pick server → attempt (pooled or fresh conn → send under timeouts → classify)
//!           → passive health → retry decision (safe? budget? back-off)
//!   → check framing → hold for the first body bytes → stream, or render the error
//! ```
//! Every failure becomes a [`GatewayError`] with its [`Cause`] where it is
//! first seen; [`handle`] renders it and records it in the access log.

use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use waygate_config::{HashKey, UpstreamProtocol};
use waygate_core::{Cause, GatewayError, RequestId, Side};
use waygate_telemetry::AccessRecord;
use waygate_upstream::{Outcome, Pick, ServerSet};

use crate::attempt::{self, Failure, RequestBody};
use crate::body::{Finish, ProxyBody, Streaming};
use crate::classify;
use crate::headers::{self, X_REQUEST_ID};
use crate::pool::{self, PooledConn};
use crate::respond::ErrorReport;
use crate::router::route_host;
use crate::runtime::{Runtime, Upstream};
use crate::server::ConnInfo;
use crate::tunnel;

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
    listener: usize,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    id: &RequestId,
) -> AccessRecord {
    AccessRecord::new(
        // Set when the request ends, and only if the record is kept: most
        // requests never need the wall clock (see `Finish`).
        SystemTime::UNIX_EPOCH,
        id.shared(),
        rt.listeners[listener].name.clone(),
        conn.peer,
        req.method().clone(),
        req.headers().get(header::HOST).cloned(),
        req.uri().clone(),
    )
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
    let grpc = crate::respond::is_grpc(req.headers());
    let listener = &rt.listeners[finish.listener];
    if let Some(page) = &listener.status_page {
        if req.uri().path() == &**page
            && (req.method() == Method::GET || req.method() == Method::HEAD)
        {
            let resp = crate::public_status::render(&rt, listener);
            finish.responding(200, Side::Gateway);
            let (parts, bytes) = resp.into_parts();
            return Response::from_parts(parts, ProxyBody::full(bytes, finish));
        }
    }
    // A redirecting listener serves no route: every request is sent to
    // HTTPS, or refused if it is malformed.
    let redirect = listener.redirect_https.map(|port| {
        headers::check_request(&req)?;
        https_location(&req, port).ok_or_else(|| {
            GatewayError::new(Cause::InvalidRequest, "no valid Host to redirect to HTTPS")
        })
    });
    let mut target = Target::default();
    let result = match redirect {
        Some(Ok(location)) => {
            finish.responding(308, Side::Gateway);
            let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new(), finish));
            *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
            let h = resp.headers_mut();
            h.insert(header::LOCATION, location);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::from_str(id.as_str()) {
                h.insert(X_REQUEST_ID.clone(), v);
            }
            return resp;
        }
        Some(Err(e)) => Err(e),
        None => forward(&rt, &conn, req, &id, &mut finish, &mut target).await,
    };
    match result {
        Ok(ready) => {
            finish.responding(ready.parts.status.as_u16(), Side::Upstream);
            Response::from_parts(ready.parts, ProxyBody::upstream(ready.body, finish))
        }
        Err(err) => {
            tracing::debug!(request_id = %id, cause = err.cause.name(), detail = %err.detail, "gateway error");
            finish.generated(&err);
            let public = if rt.expose_addresses
                || matches!(err.cause, Cause::RateLimited | Cause::InvalidRequest)
            {
                // These details name only a policy or the rule broken.
                err.detail.clone()
            } else {
                public_detail(err.cause, &target)
            };
            let resp = rt.responder.render(&ErrorReport {
                cause: err.cause,
                detail: &public,
                request_id: id.as_str(),
                accept: accept.as_ref(),
                status_page: rt.listeners[finish.listener].status_page.as_deref(),
                retry_after: err.retry_after,
                headers: &err.headers,
                next_hop: finish
                    .rec
                    .upstream_server
                    .as_deref()
                    .filter(|_| rt.expose_addresses),
                grpc,
            });
            let (mut parts, bytes) = resp.into_parts();
            if err.cause == Cause::InvalidRequest {
                // Where this request ends is uncertain: read nothing more
                // from the connection (RFC 9112 §6.3).
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Response::from_parts(parts, ProxyBody::full(bytes, finish))
        }
    }
}

/// `https://<host>[:port]<path and query>` for a request on a redirecting
/// listener; `None` without a valid host (the request is then refused as
/// usual).
fn https_location<B>(req: &Request<B>, port: u16) -> Option<HeaderValue> {
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let host = route_host(req.uri().host(), host_header);
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_');
    if host.is_empty() || !host.bytes().all(allowed) {
        return None;
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    let authority = if port == 443 {
        host
    } else {
        format!("{host}:{port}")
    };
    // Only a well-formed authority goes into Location.
    http::uri::Authority::try_from(authority.as_str()).ok()?;
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    HeaderValue::from_str(&format!("https://{authority}{pq}")).ok()
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
    mut req: Request<Incoming>,
    id: &RequestId,
    finish: &mut Finish,
    target: &mut Target,
) -> Result<Ready, GatewayError> {
    // What hyper lets through but could make an upstream read the request
    // differently (request smuggling) is refused here.
    headers::check_request(&req)?;
    // Route.
    let listener = &rt.listeners[finish.listener];
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
    finish.route = Some(route.index);
    finish.upstream = Some(route.upstream);
    finish.rec.route = Some(route.name.clone());
    finish.rec.upstream = Some(upstream.name.clone());
    target.upstream = Some(upstream.name.clone());

    // Rate limit.
    if let Some(p) = route.rate_limit.and_then(|i| rt.rate_limits.get(i)) {
        p.check(rate_key(p, conn, &req, &route.name))?;
    }

    // Admit.
    let members = upstream.members.load_full();
    if members.set.is_empty() {
        return Err(GatewayError::new(
            Cause::NoServerAvailable,
            format!("upstream {} has no servers", upstream.name),
        ));
    }
    let permit = upstream.limits.admit().ok_or_else(|| {
        GatewayError::new(
            Cause::UpstreamLimitReached,
            format!("upstream {} has reached max_requests", upstream.name),
        )
    })?;
    finish.permit = Some(permit);
    if let Some(a) = &upstream.adaptive {
        let permit = a.try_acquire().ok_or_else(|| {
            let (usual, now) = a.latencies_ms();
            GatewayError::new(
                Cause::UpstreamLimitReached,
                format!(
                    "upstream {}: adaptive concurrency limit {} reached (latency {now:.1} ms against {usual:.1} ms when not overloaded)",
                    upstream.name,
                    a.limit()
                ),
            )
        })?;
        finish.adaptive = Some(permit);
    }

    // Prepare the request and its body.
    let key = upstream.hash_key.as_ref().map(|k| hash_key(k, conn, &req));
    // An HTTP/1.1 upgrade (WebSocket): the client's side of the switch.
    // Or WebSocket over HTTP/2 (extended CONNECT): the same to the upstream.
    let h2_websocket = tunnel::requested_h2(&req);
    let upgrade = tunnel::requested(&req)
        .or_else(|| h2_websocket.clone())
        .map(|offered| (offered, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    // Responses to an HTTP/2 client wait in its connection's send queue:
    // they are detached from the upstream's read buffer (see `respond`).
    let detach = parts.version == Version::HTTP_2;
    // Read before the hop-by-hop headers go; only HTTP/2 upstreams get it.
    let te_trailers = upstream.pool.protocol != UpstreamProtocol::Http1
        && parts
            .headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    // One header value for the id, shared (not copied) by request and response.
    let mut id_header =
        HeaderValue::from_str(id.as_str()).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    // Unique per request: HPACK sends it as a literal never indexed, rather
    // than inserting it into (and evicting from) the dynamic tables of
    // HTTP/2 clients and upstreams for nothing (RFC 7541 §6.2.3).
    id_header.set_sensitive(true);
    prepare_request(rt, conn, &mut parts, &id_header);
    if upstream.pool.protocol != UpstreamProtocol::Http1 {
        if upgrade.is_some() {
            return Err(GatewayError::new(
                Cause::HttpUpgradeFailed,
                format!(
                    "upstream {} speaks HTTP/2 ({}), which cannot carry an HTTP/1.1 Upgrade",
                    upstream.name,
                    upstream.pool.protocol.name()
                ),
            ));
        }
        for_h2(&mut parts, te_trailers, upstream.pool.tls.is_some());
    }
    if h2_websocket.is_some() {
        tunnel::connect_to_upgrade(&mut parts);
    }
    if let Some((offered, _)) = &upgrade {
        // Hop-by-hop, so removed above; asked again of the next hop.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, offered.clone());
    }
    let limit = listener.max_request_body_size;
    if let (Some(max), Some(len)) = (limit, body.size_hint().exact()) {
        if len > max {
            return Err(GatewayError::new(
                Cause::RequestBodyTooLarge,
                format!("Content-Length {len} is over max_request_body_size {max}"),
            ));
        }
    }
    let mut body = RequestBody::prepare(body, upstream, limit, finish).await?;
    let idempotent = is_idempotent(&parts.method);
    // Kept for the retry log: the last attempt of a request (and every one
    // of a non-idempotent request) hands the head itself to the connection.
    let method = parts.method.clone();
    let start = tokio::time::Instant::now();
    upstream.budget.deposit(waygate_upstream::ms_at(start));

    // Attempts.
    // Inline: a request is rarely tried on more than a few servers.
    let mut tried: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
    loop {
        // One clock read per attempt for the pick and the in-flight count
        // (the first attempt's is the retry budget's above).
        let now = if tried.is_empty() {
            start
        } else {
            tokio::time::Instant::now()
        };
        // Queued requests of a higher priority go first.
        let class = route.priority as usize;
        let queued = upstream.queue.as_ref().is_some_and(|q| q.ahead(class));
        // A pick reserves its in-flight slot atomically; one taken by a
        // concurrent request in between sends this one to the queue.
        let max = members.set.max_in_flight();
        let mut raced = false;
        let direct = (!queued)
            .then(|| {
                members
                    .set
                    .pick_at(key, &tried, waygate_upstream::ms_at(now))
            })
            .flatten()
            .and_then(|p| match p.server.try_start_at(max, now) {
                Some(f) => Some((p, f)),
                None => {
                    raced = true;
                    None
                }
            });
        let (pick, in_flight) = match direct {
            Some(x) => x,
            None if queued || raced || members.set.at_capacity() => {
                // Boxed, like the other rare paths below: their futures
                // would otherwise make every request's state larger.
                Box::pin(queue(upstream, &members.set, key, &tried, class)).await?
            }
            None => {
                return Err(GatewayError::new(
                    Cause::NoServerAvailable,
                    format!("no server of upstream {} is available", upstream.name),
                ))
            }
        };
        let index = pick.index;
        tried.push(index);
        target.server = Some(index);
        finish.rec.upstream_server = Some(pick.server.label.clone());
        // Another attempt after this one needs the request head again only
        // if the request may be retried once sent (an unsent request comes
        // back whole): a non-idempotent request skips the header clone.
        let more = idempotent && tried.len() < upstream.retry.max_attempts as usize;
        let pool = &members.pools[index];
        let sent_at = upstream.adaptive.is_some().then(tokio::time::Instant::now);
        let result = attempt::run(
            upstream,
            pool,
            &pick,
            &mut parts,
            &mut body,
            more,
            upgrade.is_some(),
            finish,
        )
        .await;
        in_flight.observe();
        match result {
            Ok((resp, pooled)) => {
                let status = resp.status().as_u16();
                let failed = status >= 500;
                if let (Some(a), Some(p), Some(sent_at), false) =
                    (&upstream.adaptive, &finish.adaptive, sent_at, failed)
                {
                    let rtt = sent_at.elapsed().as_micros() as u64;
                    a.record(p, rtt, waygate_upstream::now_ms() * 1000);
                }
                members.set.record(
                    &pick.server,
                    if failed {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    },
                );
                finish.rec.upstream_status = Some(status);
                if upstream.retry.on_statuses.contains(&status) {
                    let why = format!("status {status}");
                    match retry_decision(
                        upstream,
                        tried.len(),
                        true,
                        idempotent,
                        &body,
                        &why,
                        &method,
                    ) {
                        Ok(reason) => {
                            finish.rec.retry = Some(reason);
                            pooled.close();
                            backoff(upstream, tried.len()).await;
                            continue;
                        }
                        Err(reason) => finish.rec.retry = Some(reason),
                    }
                }
                finish.in_flight = Some(in_flight);
                if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    let to = Switch {
                        upgrade,
                        h2: h2_websocket.is_some(),
                        client: conn,
                        upstream: route.upstream,
                    };
                    return Box::pin(switch(
                        rt,
                        upstream,
                        &members.set,
                        resp,
                        pooled,
                        &id_header,
                        &pick,
                        to,
                    ))
                    .await;
                }
                let to = Hop {
                    id: &id_header,
                    pick: &pick,
                    detach,
                };
                return respond(rt, upstream, &members.set, resp, pooled, to).await;
            }
            Err(Failure { err, sent }) => {
                let outcome = match err.cause.side() {
                    Side::Downstream => Outcome::Neutral,
                    _ if err.cause == Cause::UpstreamLimitReached => Outcome::Neutral,
                    _ => Outcome::Failure,
                };
                members.set.record(&pick.server, outcome);
                if err.cause.side() == Side::Downstream || err.cause == Cause::UpstreamLimitReached
                {
                    return Err(err);
                }
                match retry_decision(
                    upstream,
                    tried.len(),
                    sent,
                    idempotent,
                    &body,
                    err.cause.name(),
                    &method,
                )
                .and_then(|ok| retryable_cause(err.cause, sent).map(|()| ok))
                {
                    Ok(reason) => {
                        tracing::debug!(server = %pick.server.label, cause = err.cause.name(), "{reason}");
                        finish.rec.retry = Some(reason);
                        backoff(upstream, tried.len()).await;
                    }
                    Err(reason) => {
                        finish.rec.retry = Some(reason);
                        return Err(err);
                    }
                }
            }
        }
    }
}

/// Waits in the upstream's bounded queue until a server is below its
/// in-flight limit; 503 `upstream_limit_reached` when the queue is full or
/// the wait runs out.
async fn queue(
    upstream: &Upstream,
    set: &ServerSet,
    key: Option<u64>,
    tried: &[usize],
    class: usize,
) -> Result<(Pick, waygate_upstream::InFlight), GatewayError> {
    use std::sync::atomic::Ordering;
    let limit = |why: String| {
        GatewayError::new(
            Cause::UpstreamLimitReached,
            format!("upstream {}: {why}", upstream.name),
        )
    };
    let Some(q) = &upstream.queue else {
        return Err(limit("every server is at max_in_flight_per_server".into()));
    };
    if q.len() >= q.max {
        return Err(limit(format!("queue full ({} waiting)", q.max)));
    }
    q.waiting[class].fetch_add(1, Ordering::Relaxed);
    struct Leave<'a>(&'a crate::runtime::Queue, usize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.waiting[self.1].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if self.1 < 2 {
                // Lower classes may have deferred to this request.
                self.0.notify.notify_waiters();
            }
        }
    }
    let _leave = Leave(q, class);
    let deadline = tokio::time::Instant::now() + q.timeout;
    loop {
        // Register before checking, so a slot freed in between is not missed.
        let freed = q.notify.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if !q.ahead(class) {
            if let Some(p) = set.pick(key, tried) {
                if let Some(f) = p.server.try_start(set.max_in_flight()) {
                    return Ok((p, f));
                }
            }
        }
        tokio::select! {
            _ = &mut freed => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(limit(format!("no server slot within queue_timeout {:?}", q.timeout)));
            }
        }
    }
}

/// Whether a failure with `cause` may be retried: anything that happened
/// before the request was sent; after that only failures that say nothing
/// about the request itself (reset, closed, timed out).
fn retryable_cause(cause: Cause, sent: bool) -> Result<(), String> {
    let ok = !sent
        || matches!(
            cause,
            Cause::UpstreamReset
                | Cause::UpstreamClosed
                | Cause::PooledConnectionClosed
                | Cause::ResponseTimeout
        );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not retried: {} is not retried once the request was sent",
            cause.name()
        ))
    }
}

/// Decides whether to try again, and says why either way.
fn retry_decision(
    upstream: &Upstream,
    attempts: usize,
    sent: bool,
    idempotent: bool,
    body: &RequestBody,
    what: &str,
    method: &Method,
) -> Result<String, String> {
    let max = upstream.retry.max_attempts as usize;
    if attempts >= max {
        return Err(format!(
            "not retried: {what} after {attempts} of max_attempts {max}"
        ));
    }
    if sent && !idempotent {
        return Err(format!(
            "not retried: {method} is not idempotent and the request was sent"
        ));
    }
    if !body.can_replay(sent) {
        return Err("not retried: request body already streamed".into());
    }
    if !upstream.budget.withdraw(waygate_upstream::now_ms()) {
        return Err("not retried: retry budget exhausted".into());
    }
    Ok(format!(
        "retried after {what} (attempt {} of {max})",
        attempts + 1
    ))
}

async fn backoff(upstream: &Upstream, attempts: usize) {
    let d = waygate_resilience::backoff(
        attempts as u32,
        upstream.retry.backoff_base,
        upstream.retry.backoff_max,
    );
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// The value the upstream's `hash_key` names, hashed; a request without it
/// (no such header or cookie) is balanced randomly.
fn hash_key(key: &HashKey, conn: &ConnInfo, req: &Request<Incoming>) -> u64 {
    let value: Option<&[u8]> = match key {
        HashKey::ClientIp => return ServerSet::hash_key(client_ip(conn, req).as_bytes()),
        HashKey::Path => Some(req.uri().path().as_bytes()),
        HashKey::Header(name) => req.headers().get(name.as_str()).map(HeaderValue::as_bytes),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes()),
    };
    match value {
        Some(v) => ServerSet::hash_key(v),
        None => fastrand::u64(..),
    }
}

/// The rate-limit key of a request: its parts hashed together.
fn rate_key(
    p: &crate::ratelimit::RatePolicy,
    conn: &ConnInfo,
    req: &Request<Incoming>,
    route: &str,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for part in &p.key {
        match part {
            waygate_config::RateKey::ClientIp => client_ip(conn, req).hash(&mut h),
            waygate_config::RateKey::Route => route.hash(&mut h),
            waygate_config::RateKey::Header(name) => req
                .headers()
                .get(name.as_str())
                .map(HeaderValue::as_bytes)
                .hash(&mut h),
        }
    }
    h.finish()
}

/// The client's IP, from a trusted proxy's `X-Forwarded-For` if present;
/// borrowed (the peer's text is made once per connection), not formatted
/// per request.
fn client_ip<'a>(conn: &'a ConnInfo, req: &'a Request<Incoming>) -> &'a str {
    if conn.trusted {
        if let Some(first) = req
            .headers()
            .get(&headers::X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            return first.trim();
        }
    }
    // An IP address's text is always a valid header value (`peer_value`).
    conn.peer_header.to_str().unwrap_or_default()
}

/// Rewrites the client's request for the upstream: origin-form target,
/// HTTP/1.1, hop-by-hop headers removed, forwarding headers and request id.
fn prepare_request(rt: &Runtime, conn: &ConnInfo, parts: &mut Parts, id: &HeaderValue) {
    // Room for what is added below (Host, the three X-Forwarded-*, Via,
    // X-Request-Id): one growth of the map at most, not one per insert
    // (a map decoded from HTTP/2 is sized to its fields exactly).
    parts.headers.reserve(6);
    // With an absolute-form target, its authority is the host (RFC 9112
    // §3.2.2), as it was for routing: the upstream must see the same.
    if let Some(auth) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(auth.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    headers::remove_hop_by_hop(&mut parts.headers);
    // hyper answers `Expect: 100-continue` to the client itself.
    parts.headers.remove(header::EXPECT);
    let host = parts.headers.get(header::HOST).cloned();
    headers::set_forwarding(
        &mut parts.headers,
        &conn.peer_header,
        conn.trusted,
        host.as_ref(),
        &rt.via,
        conn.tls,
    );
    parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        // The origin form: the path and query kept as they are, not parsed
        // again (every HTTP/2 request has an authority).
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = None;
        uri.authority = None;
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    }
    parts.version = Version::HTTP_11;
}

/// Makes an HTTP/1.1-shaped request an HTTP/2 one: the target in absolute
/// form (its authority becomes `:authority`, equal to Host, RFC 9113
/// §8.3.1), and `TE: trailers` kept if the client sent it (gRPC needs it).
fn for_h2(parts: &mut Parts, te_trailers: bool, tls: bool) {
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(authority);
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_2;
}

/// What a `101 Switching Protocols` answer needs to become a tunnel.
struct Switch<'a> {
    /// The protocols the client offered and its side of the switch.
    upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
    /// The client used HTTP/2's extended CONNECT: it gets a 200.
    h2: bool,
    client: &'a ConnInfo,
    upstream: usize,
}

/// How long the upstream connection may take to hand over its socket
/// after its 101 arrived (it is already read: this is never a wait on the
/// network).
const SWITCH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Passes a `101 Switching Protocols` on and starts the tunnel, if the
/// client asked for that protocol; otherwise 502 `http_upgrade_failed`.
#[allow(clippy::too_many_arguments)]
async fn switch(
    rt: &Runtime,
    upstream: &Upstream,
    set: &ServerSet,
    mut resp: Response<Incoming>,
    conn: PooledConn,
    id: &HeaderValue,
    pick: &Pick,
    to: Switch<'_>,
) -> Result<Ready, GatewayError> {
    let failed = |conn: PooledConn, detail: String| {
        conn.close();
        set.record(&pick.server, Outcome::Failure);
        Err(GatewayError::new(Cause::HttpUpgradeFailed, detail))
    };
    let Some((offered, client)) = to.upgrade else {
        return failed(
            conn,
            "the server answered 101 Switching Protocols to a request that asked for no upgrade"
                .into(),
        );
    };
    if !tunnel::switched_to_offered(&offered, resp.headers()) {
        let chosen = resp.headers().get(header::UPGRADE).cloned();
        return failed(
            conn,
            format!("the server switched to {chosen:?}; the client offered {offered:?}"),
        );
    }
    let chosen = resp.headers().get(header::UPGRADE).cloned();
    let server = match tokio::time::timeout(SWITCH_WAIT, hyper::upgrade::on(&mut resp)).await {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => return failed(conn, format!("taking over the switched connection: {e}")),
        Err(_) => {
            return failed(
                conn,
                "the switched connection was not handed over within 1s".into(),
            )
        }
    };
    // Its task has ended: the socket lives on in the tunnel. (The 101 was
    // already recorded as the server's success.)
    conn.close();
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    if to.h2 {
        // RFC 8441 §5: a 2xx opens the tunnel; no handshake headers.
        parts.status = http::StatusCode::OK;
        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
    } else {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(v) = chosen {
            parts.headers.insert(header::UPGRADE, v);
        }
    }
    headers::append_via(&mut parts.headers, &rt.via);
    parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
    parts.version = Version::HTTP_11;
    let holds = tunnel::Holds {
        busy: tunnel::Busy::new(to.client.shared.clone()),
        drain: to.client.drain.clone(),
        count: rt.metrics.tunnel(to.upstream),
    };
    tokio::spawn(tunnel::run(
        client,
        server,
        upstream.tunnel_idle_timeout,
        holds,
        pick.server.label.clone(),
    ));
    Ok(Ready {
        parts,
        body: Streaming {
            first: None,
            body,
            idle: None,
            idle_timeout: upstream.body_idle_timeout,
            conn: None,
            grpc: false,
            detach: false,
        },
    })
}

/// Who a response goes to.
struct Hop<'a> {
    /// The request id's header value.
    id: &'a HeaderValue,
    pick: &'a Pick,
    /// The client is on HTTP/2: the response is detached from the upstream
    /// connection's read buffer.
    detach: bool,
}

/// Turns the upstream's response head into ours, after checking that its
/// framing is unambiguous and holding for its first body bytes.
async fn respond(
    rt: &Runtime,
    upstream: &Upstream,
    set: &ServerSet,
    resp: Response<Incoming>,
    mut conn: PooledConn,
    Hop { id, pick, detach }: Hop<'_>,
) -> Result<Ready, GatewayError> {
    let (mut parts, mut body) = resp.into_parts();
    let grpc = crate::respond::is_grpc(&parts.headers);
    // RFC 9112 §6.3: both headers is a smuggling/splitting risk; refuse it.
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        conn.close();
        set.record(&pick.server, Outcome::Failure);
        return Err(GatewayError::new(
            Cause::ResponseFramingConflict,
            "response has both Content-Length and Transfer-Encoding",
        ));
    }
    conn.server_keepalive = parts
        .headers
        .get("keep-alive")
        .and_then(|v| pool::keepalive_timeout(v.as_bytes()));
    headers::remove_hop_by_hop(&mut parts.headers);
    if detach {
        // An HTTP/2 client's connection writes a response after the ones
        // queued before it; until then its head and body would keep the
        // upstream connection's read buffer (8 KiB, a new one per exchange,
        // since hyper reads again before the response is passed on). Under
        // h2load -c 64 -m 10 that is 17 % of the peak RSS (BENCHMARKS.md).
        headers::detach_values(&mut parts.headers);
    }
    headers::append_via(&mut parts.headers, &rt.via);
    parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
    parts.version = Version::HTTP_11;

    // Hold the head briefly for the first body bytes: a body broken from its
    // first byte can then still be answered with a truthful 502 instead of
    // a truncated success.
    let mut first = None;
    if !body.is_end_stream() {
        // A small body usually came with the head: no timer then.
        let polled = std::future::poll_fn(|cx| Poll::Ready(conn.poll_body(&mut body, cx))).await;
        let got = match polled {
            Poll::Ready(frame) => Ok(frame),
            Poll::Pending => {
                let frame = std::future::poll_fn(|cx| conn.poll_body(&mut body, cx));
                tokio::time::timeout(upstream.head_hold, frame).await
            }
        };
        match got {
            Ok(Some(Ok(frame))) => first = Some(frame),
            Ok(Some(Err(e))) => {
                conn.close();
                set.record(&pick.server, Outcome::Failure);
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
            idle: None,
            idle_timeout: upstream.body_idle_timeout,
            conn: Some(conn),
            grpc,
            detach,
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
