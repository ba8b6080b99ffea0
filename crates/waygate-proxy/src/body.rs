//! Bodies on both sides of the gateway, streamed frame by frame without
//! buffering:
//! - [`UpstreamBody`]: the client's request body on its way upstream,
//!   recording progress so timeouts can tell a slow client from a slow
//!   upstream;
//! - [`ProxyBody`]: the response to the client, either a generated error
//!   page or the upstream's body under the body idle timeout. It owns the
//!   request's [`Finish`], so the access-log line is written when the body
//!   ends, fails or is dropped, with what really happened.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use waygate_core::{Cause, GatewayError, Side};
use waygate_telemetry::{AccessRecord, AttemptOutcome};

use crate::runtime::Runtime;

use crate::classify;
use crate::pool::PooledConn;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// State shared by a client connection and its requests.
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    /// Requests whose response has not finished yet. The connection's
    /// keep-alive timer runs only while this is zero.
    pub(crate) in_flight: AtomicUsize,
    /// The connection's reader, woken when the last response finishes so
    /// it can start its keep-alive timer.
    pub(crate) idle_waker: atomic_waker::AtomicWaker,
    /// Requests received on this connection.
    pub(crate) requests: std::sync::atomic::AtomicU32,
    /// The latest request came with a body: when the connection closes,
    /// the client may still be sending it (see `client_io::linger`).
    pub(crate) with_body: std::sync::atomic::AtomicBool,
}

impl ConnShared {
    /// A request (or a tunnel) starts using the connection: its keep-alive
    /// timer stops.
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// It is done; the last one wakes the reader to start the keep-alive
    /// timer.
    pub(crate) fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_waker.wake();
        }
    }
}

/// Progress of a request body being sent upstream.
#[derive(Debug)]
pub(crate) struct Upload {
    start: Instant,
    bytes: AtomicU64,
    /// Microseconds after `start` of the last frame received from the client.
    last_progress_us: AtomicU64,
    /// Microseconds after `start` of the end of the body; `u64::MAX` before.
    done_us: AtomicU64,
    /// The last poll of the client's body was pending.
    waiting_on_client: AtomicBool,
    /// 0: fine, 1: the client's body was invalid, 2: the client went
    /// away, 3: the body is over the limit.
    client_error: AtomicU8,
    /// Most body bytes still allowed from the stream (the limit minus what
    /// was read before streaming started).
    pub(crate) limit: Option<u64>,
}

/// The request body sent upstream.
///
/// Both bodies are boxed: the request type sizes every slot of hyper's
/// channel into an upstream connection (32 per block, about 10 KB with
/// these inline), and most requests have no body at all.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    Empty,
    /// Received completely before sending: can be replayed on a retry.
    Full(Box<FullBody>),
    /// Streamed from the client.
    Stream(Box<StreamBody>),
}

/// A buffered body and its trailers, each taken once it is sent.
#[derive(Debug)]
pub(crate) struct FullBody {
    pub(crate) data: Option<Bytes>,
    pub(crate) trailers: Option<Box<http::HeaderMap>>,
}

/// A body streamed from the client; `prefix` holds what was read while
/// trying to buffer it for replay.
#[derive(Debug)]
pub(crate) struct StreamBody {
    pub(crate) prefix: VecDeque<Bytes>,
    pub(crate) body: Incoming,
    pub(crate) upload: Arc<Upload>,
}

/// How a request ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No response yet: if dropped now, the client went away (499).
    Waiting,
    /// The response head was sent; the body is streaming.
    Streaming,
    /// Finished or aborted and recorded.
    Done,
}

/// The access-log record of one request and the bookkeeping to close it.
/// It is written exactly once, when this is dropped.
#[derive(Debug)]
pub(crate) struct Finish {
    pub(crate) rec: AccessRecord,
    pub(crate) start: Instant,
    rt: Arc<Runtime>,
    pub(crate) listener: usize,
    pub(crate) route: Option<usize>,
    pub(crate) upstream: Option<usize>,
    conn: Arc<ConnShared>,
    pub(crate) upload: Option<Arc<Upload>>,
    /// Counts the request in flight on its server and its upstream until
    /// the response is over.
    pub(crate) in_flight: Option<waygate_upstream::InFlight>,
    pub(crate) permit: Option<waygate_resilience::RequestPermit>,
    pub(crate) adaptive: Option<waygate_resilience::AdaptivePermit>,
    state: State,
}

/// The body of every response the gateway sends.
#[derive(Debug)]
pub(crate) struct ProxyBody {
    inner: Inner,
    finish: Option<Box<Finish>>,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Upstream(Box<Streaming>),
}

/// An upstream response body on its way to the client.
#[derive(Debug)]
pub(crate) struct Streaming {
    /// The first frame, read before the head was committed.
    pub(crate) first: Option<Frame<Bytes>>,
    pub(crate) body: Incoming,
    /// Armed at the first wait for the upstream (most small bodies never
    /// wait), reset after every frame.
    pub(crate) idle: Option<Pin<Box<Sleep>>>,
    pub(crate) idle_timeout: Duration,
    /// Returned to the pool when the body ends cleanly.
    pub(crate) conn: Option<PooledConn>,
    /// A gRPC response: a failure ends it with gRPC trailers (status 14 or
    /// 4) instead of a reset stream.
    pub(crate) grpc: bool,
    /// Small data frames are copied out of the upstream connection's read
    /// buffer (see [`detach_small`]): the client is on HTTP/2.
    pub(crate) detach: bool,
}

/// Why the response to the client was cut off.
#[derive(Debug)]
struct Aborted(GatewayError);

// === impl Upload ===

impl Upload {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            start,
            bytes: AtomicU64::new(0),
            last_progress_us: AtomicU64::new(0),
            done_us: AtomicU64::new(u64::MAX),
            waiting_on_client: AtomicBool::new(false),
            client_error: AtomicU8::new(0),
            limit: None,
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// When the last client frame arrived.
    pub(crate) fn last_progress(&self) -> Instant {
        self.start + Duration::from_micros(self.last_progress_us.load(Ordering::Relaxed))
    }

    /// When the body was completely received from the client, if it was.
    pub(crate) fn done_at(&self) -> Option<Instant> {
        match self.done_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(self.start + Duration::from_micros(us)),
        }
    }

    pub(crate) fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// The client's fault, if the upload failed because of the client.
    pub(crate) fn client_fault(&self) -> Option<Cause> {
        match self.client_error.load(Ordering::Relaxed) {
            1 => Some(Cause::ClientBodyError),
            2 => Some(Cause::ClientClosed),
            3 => Some(Cause::RequestBodyTooLarge),
            _ => None,
        }
    }

    fn mark_done(&self) {
        self.done_us.store(self.now_us(), Ordering::Relaxed);
    }
}

// === impl UpstreamBody ===

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (body, upload) = match self.get_mut() {
            UpstreamBody::Empty => return Poll::Ready(None),
            UpstreamBody::Full(full) => {
                let frame = match full.data.take() {
                    Some(d) => Frame::data(d),
                    None => match full.trailers.take() {
                        Some(t) => Frame::trailers(*t),
                        None => return Poll::Ready(None),
                    },
                };
                return Poll::Ready(Some(Ok(frame)));
            }
            UpstreamBody::Stream(s) => {
                if let Some(chunk) = s.prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                (&mut s.body, &s.upload)
            }
        };
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => {
                upload.waiting_on_client.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                upload.waiting_on_client.store(false, Ordering::Relaxed);
                if let Some(data) = frame.data_ref() {
                    let total = upload.bytes.fetch_add(data.len() as u64, Ordering::Relaxed)
                        + data.len() as u64;
                    if upload.limit.is_some_and(|max| total > max) {
                        upload.client_error.store(3, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(
                            "request body exceeds max_request_body_size".into(),
                        )));
                    }
                }
                upload
                    .last_progress_us
                    .store(upload.now_us(), Ordering::Relaxed);
                if body.is_end_stream() {
                    upload.mark_done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                upload.waiting_on_client.store(false, Ordering::Relaxed);
                let code = if e.is_incomplete_message() || e.is_canceled() {
                    2
                } else {
                    1
                };
                upload.client_error.store(code, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                upload.waiting_on_client.store(false, Ordering::Relaxed);
                upload.mark_done();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Full(f) => f.data.is_none() && f.trailers.is_none(),
            UpstreamBody::Stream(s) => s.prefix.is_empty() && s.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Full(f) => {
                SizeHint::with_exact(f.data.as_ref().map_or(0, |d| d.len() as u64))
            }
            UpstreamBody::Stream(s) => {
                let first: u64 = s.prefix.iter().map(|b| b.len() as u64).sum();
                hint_plus(s.body.size_hint(), first)
            }
        }
    }
}

// === impl Finish ===

impl Finish {
    pub(crate) fn new(
        rec: AccessRecord,
        start: Instant,
        rt: Arc<Runtime>,
        listener: usize,
        conn: Arc<ConnShared>,
    ) -> Self {
        conn.begin();
        Self {
            rec,
            start,
            rt,
            listener,
            route: None,
            upstream: None,
            conn,
            upload: None,
            in_flight: None,
            permit: None,
            adaptive: None,
            state: State::Waiting,
        }
    }

    /// Records bytes of the request body received before sending it.
    pub(crate) fn add_bytes_in(&mut self, n: u64) {
        self.rec.bytes_in += n;
    }

    /// Records the response head about to be sent.
    pub(crate) fn responding(&mut self, status: u16, side: Side) {
        self.rec.status = status;
        self.rec.side = side.name();
        self.state = State::Streaming;
    }

    /// Records a gateway-generated response for `err`.
    pub(crate) fn generated(&mut self, err: &GatewayError) {
        self.rec.cause = Some(err.cause.name());
        self.rec.proxy_status = Some(err.cause.proxy_status());
        self.rec.detail = Some(err.detail.clone());
        let side = match err.cause.side() {
            Side::Downstream => Side::Downstream,
            _ => Side::Gateway,
        };
        self.responding(err.cause.status(), side);
    }

    fn complete(&mut self) {
        self.state = State::Done;
    }

    fn abort(&mut self, err: &GatewayError) {
        self.rec.aborted = true;
        self.rec.cause = Some(err.cause.name());
        self.rec.proxy_status = Some(err.cause.proxy_status());
        self.rec.detail = Some(err.detail.clone());
        self.state = State::Done;
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        match self.state {
            State::Waiting => {
                self.rec.status = Cause::ClientClosed.status();
                self.rec.side = Side::Downstream.name();
                self.rec.cause = Some(Cause::ClientClosed.name());
                self.rec.detail = Some("client closed the connection before the response".into());
            }
            State::Streaming => {
                self.rec.aborted = true;
                self.rec.cause = Some(Cause::ClientClosed.name());
                self.rec.detail =
                    Some("client closed the connection during the response body".into());
            }
            State::Done => {}
        }
        if let Some(u) = &self.upload {
            self.rec.bytes_in += u.bytes();
        }
        let took = self.start.elapsed();
        self.rec.duration_ms = ms(took);
        let log = self.rt.access_log.is_enabled();
        if log || self.rec.cause.is_some() {
            // When the request started, by the wall clock: read only for a
            // record that is written or kept (one clock read less for every
            // other request).
            self.rec.time = SystemTime::now().checked_sub(took).unwrap_or(self.rec.time);
        }
        if log {
            self.rt.access_log.log(&self.rec);
        }
        if self.rec.cause.is_some() {
            self.rt.errors.push(&self.rec);
        }
        let side = match self.rec.side {
            "downstream" => Side::Downstream,
            "upstream" => Side::Upstream,
            _ => Side::Gateway,
        };
        self.rt.metrics.record(&crate::metrics::Sample {
            listener: self.listener,
            route: self.route,
            upstream: self.upstream,
            status: self.rec.status,
            side,
            cause: self.rec.cause.and_then(Cause::from_name),
            aborted: self.rec.aborted,
            seconds: self.rec.duration_ms / 1000.0,
            first_byte_seconds: self.rec.first_byte_ms.map(|ms| ms / 1000.0),
            attempts: self.rec.attempts.len(),
            stale: self
                .rec
                .attempts
                .iter()
                .filter(|a| matches!(a.outcome, AttemptOutcome::Note(_)))
                .count(),
        });
        self.conn.end();
    }
}

/// `hint` plus `n` bytes already taken out of the body.
fn hint_plus(hint: SizeHint, n: u64) -> SizeHint {
    let mut out = SizeHint::new();
    out.set_lower(hint.lower() + n);
    if let Some(upper) = hint.upper() {
        out.set_upper(upper + n);
    }
    out
}

/// Milliseconds with microsecond precision, for logs.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

// === impl ProxyBody ===

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes, finish: Box<Finish>) -> Self {
        Self {
            inner: Inner::Full(Some(bytes)),
            finish: Some(finish),
        }
    }

    pub(crate) fn upstream(s: Streaming, finish: Box<Finish>) -> Self {
        let mut this = Self {
            inner: Inner::Upstream(Box::new(s)),
            finish: Some(finish),
        };
        if this.is_end_stream() {
            this.end();
        }
        this
    }

    fn end(&mut self) {
        if let Inner::Upstream(s) = &mut self.inner {
            if let Some(conn) = s.conn.take() {
                conn.release();
            }
        }
        if let Some(f) = &mut self.finish {
            f.complete();
        }
    }

    fn count(&mut self, n: usize) {
        if let Some(f) = &mut self.finish {
            f.rec.bytes_out += n as u64;
        }
    }

    /// Aborts the response; a gRPC response instead ends with trailers
    /// that give the status, as a gRPC client expects.
    fn fail_or_trailers(&mut self, err: GatewayError) -> Result<Frame<Bytes>, BoxError> {
        let grpc = matches!(&self.inner, Inner::Upstream(s) if s.grpc);
        let Some(f) = self.finish.as_mut().filter(|_| grpc) else {
            return Err(self.fail(err));
        };
        let rt = f.rt.clone();
        let id = f.rec.request_id.clone();
        f.abort(&err);
        tracing::debug!(cause = err.cause.name(), detail = %err.detail, "ending gRPC response with trailers");
        let detail = if rt.expose_addresses {
            err.detail.clone()
        } else {
            err.cause.name().to_owned()
        };
        // Nothing more from this body.
        self.inner = Inner::Full(None);
        Ok(Frame::trailers(
            rt.responder.grpc_trailers(err.cause, &detail, &id),
        ))
    }

    fn fail(&mut self, err: GatewayError) -> BoxError {
        if let Some(f) = &mut self.finish {
            f.abort(&err);
        }
        tracing::debug!(cause = err.cause.name(), detail = %err.detail, "aborting response");
        Box::new(Aborted(err))
    }
}

/// Data frames smaller than this are copied out of the upstream
/// connection's read buffer (see [`detach_small`]).
const DETACH_BELOW: usize = 4096;

/// A small data frame copied out of the upstream connection's read buffer,
/// which it would otherwise keep (8 KiB or more) for as long as it waits to
/// be written. A large one is most of its buffer: it is passed on as is.
fn detach_small(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_data() {
        Ok(d) if d.len() < DETACH_BELOW => Frame::data(Bytes::copy_from_slice(&d)),
        Ok(d) => Frame::data(d),
        Err(frame) => frame,
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let s = match &mut this.inner {
            Inner::Full(data) => {
                let out = data.take();
                if let Some(d) = &out {
                    let n = d.len();
                    this.count(n);
                }
                this.end();
                return Poll::Ready(out.map(|d| Ok(Frame::data(d))));
            }
            Inner::Upstream(s) => s,
        };
        if let Some(frame) = s.first.take() {
            let frame = if s.detach { detach_small(frame) } else { frame };
            let n = frame.data_ref().map_or(0, Bytes::len);
            let end = s.body.is_end_stream();
            this.count(n);
            if end {
                this.end();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let polled = match &mut s.conn {
            Some(conn) => conn.poll_body(&mut s.body, cx),
            None => Pin::new(&mut s.body).poll_frame(cx),
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = &mut s.idle {
                    idle.as_mut().reset(Instant::now() + s.idle_timeout);
                }
                let frame = if s.detach { detach_small(frame) } else { frame };
                let n = frame.data_ref().map_or(0, Bytes::len);
                let end = s.body.is_end_stream();
                this.count(n);
                if end {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let cause = classify::body_error(&e);
                let err = GatewayError::new(cause, format!("upstream response body failed: {e}"));
                Poll::Ready(Some(this.fail_or_trailers(err)))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let timeout = s.idle_timeout;
                let idle = s
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    let err = GatewayError::new(
                        Cause::ResponseBodyTimeout,
                        format!("upstream sent no body bytes for {:?}", s.idle_timeout),
                    );
                    return Poll::Ready(Some(this.fail_or_trailers(err)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(d) => d.is_none(),
            Inner::Upstream(s) => s.first.is_none() && s.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upstream(s) => {
                let first = s
                    .first
                    .as_ref()
                    .and_then(Frame::data_ref)
                    .map_or(0, |d| d.len() as u64);
                hint_plus(s.body.size_hint(), first)
            }
        }
    }
}

// === impl Aborted ===

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "response aborted: {}", self.0)
    }
}

impl StdError for Aborted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_copied_out_of_their_buffer_and_large_ones_passed_on() {
        let buf = Bytes::from(vec![7u8; 3 * DETACH_BELOW]);
        let small = detach_small(Frame::data(buf.slice(..6)));
        assert_eq!(small.data_ref().unwrap(), &buf[..6]);
        assert!(buf.is_unique(), "the small frame still shares the buffer");
        let large = detach_small(Frame::data(buf.slice(..DETACH_BELOW)));
        assert_eq!(large.data_ref().unwrap().len(), DETACH_BELOW);
        assert!(!buf.is_unique(), "the large frame was copied");
        drop(large);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let t = detach_small(Frame::trailers(trailers.clone()));
        assert_eq!(t.trailers_ref(), Some(&trailers));
    }
}
