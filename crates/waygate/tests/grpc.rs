//! gRPC through the gateway with tonic on both ends (an h2c upstream): a
//! unary call, a bidirectional stream of 100 messages, an error status
//! carried in trailers, request and response trailers passed both ways,
//! and the gateway's own failures answered in gRPC's terms (UNAVAILABLE,
//! DEADLINE_EXCEEDED) with `Proxy-Status` and the request id.
//!
//! Messages are raw bytes with a pass-through codec, so no protobuf
//! compiler is needed.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::{Code, Request, Response, Status};
use waygate_test_util::refused_addr;

use common::{route, upstream, TestGateway};

/// Messages are their bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let out = src.chunk().to_vec();
        src.advance(out.len());
        Ok(Some(out))
    }
}

/// Unary: echoes the message upper-cased; "fail" gets NOT_FOUND, "slow"
/// answers after 2 s.
struct Unary;

impl tonic::server::UnaryService<Vec<u8>> for Unary {
    type Response = Vec<u8>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Vec<u8>>, Status>> + Send>,
    >;
    fn call(&mut self, req: Request<Vec<u8>>) -> Self::Future {
        Box::pin(async move {
            let msg = req.into_inner();
            match msg.as_slice() {
                b"fail" => Err(Status::not_found("no such thing")),
                b"slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(Response::new(msg))
                }
                _ => Ok(Response::new(msg.to_ascii_uppercase())),
            }
        })
    }
}

/// Bidirectional streaming: every message comes straight back.
struct Echo;

impl tonic::server::StreamingService<Vec<u8>> for Echo {
    type Response = Vec<u8>;
    type ResponseStream = Streaming<Vec<u8>>;
    type Future = std::future::Ready<Result<Response<Streaming<Vec<u8>>>, Status>>;
    fn call(&mut self, req: Request<Streaming<Vec<u8>>>) -> Self::Future {
        std::future::ready(Ok(Response::new(req.into_inner())))
    }
}

/// A tonic gRPC server over h2c. `/raw.Trailers/Check` is plain hyper: it
/// reports the request trailers it saw and sends a trailer of its own.
async fn grpc_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let resp = match req.uri().path() {
                        "/raw.Echo/Unary" => tonic::server::Grpc::new(Raw).unary(Unary, req).await,
                        "/raw.Echo/Stream" => {
                            tonic::server::Grpc::new(Raw).streaming(Echo, req).await
                        }
                        "/raw.Trailers/Check" => {
                            let collected = req.into_body().collect().await.unwrap();
                            let seen = collected
                                .trailers()
                                .and_then(|t| t.get("x-checksum"))
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("x-upstream-trailer", "yes".parse().unwrap());
                            trailers.insert("x-seen-checksum", seen.parse().unwrap());
                            let body =
                                http_body_util::StreamBody::new(futures_util::stream::iter(vec![
                                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                        Bytes::from_static(b"body"),
                                    )),
                                    Ok(hyper::body::Frame::trailers(trailers)),
                                ]));
                            http::Response::new(tonic::body::Body::new(body))
                        }
                        "/raw.Broken/Stream" => {
                            // One message, then the stream breaks.
                            let mut msg = vec![0u8, 0, 0, 0, 5];
                            msg.extend_from_slice(b"first");
                            let frames = futures_util::stream::unfold(0, move |step| {
                                let msg = msg.clone();
                                async move {
                                    match step {
                                        0 => Some((
                                            Ok(hyper::body::Frame::data(Bytes::from(msg))),
                                            1,
                                        )),
                                        1 => {
                                            // Well after the head was passed on.
                                            tokio::time::sleep(Duration::from_millis(200)).await;
                                            Some((
                                                Err(std::io::Error::other(
                                                    "server crashed mid-stream",
                                                )),
                                                2,
                                            ))
                                        }
                                        _ => None,
                                    }
                                }
                            });
                            let body = http_body_util::StreamBody::new(frames);
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(tonic::body::Body::new(body))
                                .unwrap()
                        }
                        _ => http::Response::builder()
                            .status(404)
                            .body(tonic::body::Body::empty())
                            .unwrap(),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    addr
}

async fn client(gw: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{gw}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn unary(gw: SocketAddr, path: &'static str, msg: &[u8]) -> Result<Vec<u8>, Status> {
    let mut c = client(gw).await;
    c.ready().await.unwrap();
    c.unary(
        Request::new(msg.to_vec()),
        PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(Response::into_inner)
}

fn config(server: SocketAddr, extra: &str) -> String {
    format!(
        "{}{}{}{}{}",
        upstream("grpc", &[server], &format!("protocol = \"h2c\"\n{extra}")),
        upstream(
            "gone",
            &[refused_addr()],
            "protocol = \"h2c\"\n[upstream.gone.retry]\nmax_attempts = 1"
        ),
        route("/raw.", "grpc"),
        route("/gone.", "gone"),
        "",
    )
}

#[tokio::test]
async fn unary_and_streaming_calls_pass_with_their_statuses() {
    let server = grpc_server().await;
    let gw = TestGateway::start(&config(server, "")).await;
    assert_eq!(
        unary(gw.addr, "/raw.Echo/Unary", b"hello").await.unwrap(),
        b"HELLO"
    );
    // A status from the server travels in its trailers.
    let e = unary(gw.addr, "/raw.Echo/Unary", b"fail")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(e.message(), "no such thing");

    let mut c = client(gw.addr).await;
    c.ready().await.unwrap();
    let out: Vec<Vec<u8>> = (0..100u32)
        .map(|i| format!("msg {i}").into_bytes())
        .collect();
    let resp = c
        .streaming(
            Request::new(futures_util::stream::iter(out.clone())),
            PathAndQuery::from_static("/raw.Echo/Stream"),
            Raw,
        )
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    let mut back = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        back.push(m);
    }
    assert_eq!(back, out);
    // The stream's final status (OK) came in trailers.
    assert!(stream.trailers().await.unwrap().is_some());
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let server = grpc_server().await;
    // With retries the small request body is buffered for replay; without,
    // it streams: both keep its trailers.
    for extra in ["", "[upstream.grpc.retry]\nmax_attempts = 1"] {
        let gw = TestGateway::start(&config(server, extra)).await;
        check_trailers(gw.addr).await;
    }
}

async fn check_trailers(gw: SocketAddr) {
    let tcp = tokio::net::TcpStream::connect(gw).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{gw}/raw.Trailers/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut send) = h2.send_request(req, false).unwrap();
    send.send_data(Bytes::from_static(b"payload"), false)
        .unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    send.send_trailers(trailers).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let t = body.trailers().await.unwrap().expect("response trailers");
    assert_eq!(t["x-upstream-trailer"], "yes");
    assert_eq!(t["x-seen-checksum"], "abc123");
}

#[tokio::test]
async fn gateway_failures_are_answered_in_grpc_terms() {
    let server = grpc_server().await;
    let gw = TestGateway::start(&config(server, "response_timeout = \"300ms\"")).await;
    // Nothing listens behind `gone`: UNAVAILABLE.
    let e = unary(gw.addr, "/gone.Svc/Call", b"x").await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("connection_refused"),
        "{}",
        e.message()
    );
    let id = e.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert!(e.message().contains(id), "{}", e.message());
    let ps = e.metadata().get("proxy-status").unwrap().to_str().unwrap();
    assert!(ps.contains("error=connection_refused"), "{ps}");
    let line = gw.log_line(id).await;
    assert_eq!(line["cause"], "connection_refused");

    // The server takes 2 s, the response timeout is 300 ms: DEADLINE_EXCEEDED.
    let e = unary(gw.addr, "/raw.Echo/Unary", b"slow")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    let ps = e.metadata().get("proxy-status").unwrap().to_str().unwrap();
    assert!(ps.contains("error=http_response_timeout"), "{ps}");

    // No route: UNIMPLEMENTED.
    let e = unary(gw.addr, "/other.Svc/Call", b"x").await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
}

#[tokio::test]
async fn a_stream_broken_by_the_upstream_ends_with_grpc_trailers() {
    let server = grpc_server().await;
    let gw = TestGateway::start(&config(server, "")).await;
    let mut c = client(gw.addr).await;
    c.ready().await.unwrap();
    let resp = c
        .server_streaming(
            Request::new(b"go".to_vec()),
            PathAndQuery::from_static("/raw.Broken/Stream"),
            Raw,
        )
        .await
        .unwrap();
    let mut stream = resp.into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap(), b"first");
    // Not a bare reset: a status the client can act on, naming the cause.
    let e = stream.message().await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("waygate response_body_truncated"),
        "{}",
        e.message()
    );
    let id = e.metadata().get("x-request-id").unwrap().to_str().unwrap();
    let line = gw.log_line(id).await;
    assert_eq!(line["cause"], "response_body_truncated");
    assert_eq!(line["aborted"], true);
}
