//! Upstream protocols: HTTP/2 in clear text (h2c) over one shared
//! connection, TLS to upstreams (HTTP/1.1 and h2 by ALPN) verified against a
//! configured CA, mutual TLS, and the two TLS failures told apart: a
//! certificate the gateway does not trust (502 `tls_certificate_error`) and
//! a server that does not speak TLS (502 `tls_protocol_error`).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use common::{get, route, upstream, TestGateway};

/// A CA and a server certificate for `localhost` / 127.0.0.1 it signed,
/// written into `dir` as `<stem>-ca.pem`, `<stem>.pem`, `<stem>.key`.
struct Pki {
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    ca: CertificateDer<'static>,
}

fn pki(dir: &Path, stem: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{stem} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(format!("{stem}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    Pki {
        chain: vec![cert.der().clone()],
        key_pem: key.serialize_pem(),
        ca: ca.der().clone(),
    }
}

/// What the test upstream reports about each request: the HTTP version,
/// the URI authority, the Host header, and whether a client certificate
/// was presented.
async fn describe(req: Request<Incoming>, client_cert: bool) -> Response<Full<Bytes>> {
    let text = format!(
        "version={:?} authority={} host={} te={} client_cert={client_cert}",
        req.version(),
        req.uri().authority().map_or("-", |a| a.as_str()),
        req.headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-"),
        req.headers()
            .get("te")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-"),
    );
    Response::new(Full::new(Bytes::from(text)))
}

/// A hyper upstream: HTTP/2 with prior knowledge when `h2c`, else TLS with
/// `tls` choosing HTTP/2 or HTTP/1.1 by ALPN. Counts accepted connections.
async fn hyper_upstream(
    tls: Option<Arc<rustls::ServerConfig>>,
    h2c: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => {
                        let svc = hyper::service::service_fn(|r| async move {
                            Ok::<_, hyper::Error>(describe(r, false).await)
                        });
                        if h2c {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                    Some(cfg) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await
                        else {
                            return;
                        };
                        let (_, session) = stream.get_ref();
                        let h2 = session.alpn_protocol() == Some(b"h2");
                        let client_cert = session.peer_certificates().is_some();
                        let svc = hyper::service::service_fn(move |r| async move {
                            Ok::<_, hyper::Error>(describe(r, client_cert).await)
                        });
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config for `pki`'s certificate, offering h2 and http/1.1;
/// requiring a client certificate signed by `client_ca` when given.
fn server_config(
    pki: &Pki,
    client_ca: Option<&CertificateDer<'static>>,
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut cfg = builder.with_single_cert(pki.chain.clone(), key).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[tokio::test]
async fn h2c_upstream_gets_http2_over_one_shared_connection() {
    let (addr, accepted) = hyper_upstream(None, true).await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        upstream("app", &[addr], "protocol = \"h2c\""),
        route("/", "app")
    ))
    .await;
    for _ in 0..5 {
        let r = get(gw.addr, "/x?y=1", &[("te", "trailers")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.text();
        assert!(body.contains("version=HTTP/2.0"), "{body}");
        // The client's Host became the :authority, and TE: trailers is kept.
        assert!(
            body.contains("authority=test.local host=test.local"),
            "{body}"
        );
        assert!(body.contains("te=trailers"), "{body}");
    }
    // Twenty requests at once still share the one connection.
    let mut all = Vec::new();
    for _ in 0..20 {
        all.push(tokio::spawn(get(gw.addr, "/", &[])));
    }
    for t in all {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tls_upstream_speaks_http1_or_h2_and_verifies_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), "up");
    let (addr, _) = hyper_upstream(Some(server_config(&pki, None)), false).await;
    let ca = path(dir.path(), "up-ca.pem");
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream(
            "one",
            &[addr],
            &format!("tls = true\ntls_ca = \"{ca}\"\ntls_server_name = \"localhost\"")
        ),
        upstream(
            "two",
            &[addr],
            &format!("protocol = \"h2\"\ntls_ca = \"{ca}\"")
        ),
        route("/one", "one"),
        route("/two", "two"),
    ))
    .await;
    let r = get(gw.addr, "/one", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("version=HTTP/1.1"), "{}", r.text());
    // No tls_server_name: the server's host (an IP here) is checked.
    let r = get(gw.addr, "/two", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("version=HTTP/2.0"), "{}", r.text());
}

#[tokio::test]
async fn untrusted_or_misnamed_certificates_are_502_tls_certificate_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki_up = pki(dir.path(), "up");
    let _other = pki(dir.path(), "other");
    let (addr, _) = hyper_upstream(Some(server_config(&pki_up, None)), false).await;
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream(
            "untrusted",
            &[addr],
            &format!(
                "tls = true\ntls_ca = \"{}\"",
                path(dir.path(), "other-ca.pem")
            )
        ),
        upstream(
            "misnamed",
            &[addr],
            &format!(
                "tls = true\ntls_ca = \"{}\"\ntls_server_name = \"api.example.com\"",
                path(dir.path(), "up-ca.pem")
            )
        ),
        route("/untrusted", "untrusted"),
        route("/misnamed", "misnamed"),
    ))
    .await;
    for p in ["/untrusted", "/misnamed"] {
        let r = get(gw.addr, p, &[]).await;
        assert_eq!(r.status, 502, "{p}: {}", r.text());
        assert_eq!(
            r.proxy_error().as_deref(),
            Some("tls_certificate_error"),
            "{p}"
        );
        let line = gw.log_line(&r.request_id()).await;
        assert_eq!(line["cause"], "tls_certificate_error", "{line}");
    }
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_502_tls_protocol_error() {
    // A plain HTTP server answers the TLS ClientHello with a 400.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = plain.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    });
    let gw = TestGateway::start(&format!(
        "{}{}",
        upstream(
            "app",
            &[addr],
            "tls = true\n[upstream.app.retry]\nmax_attempts = 1"
        ),
        route("/", "app")
    ))
    .await;
    let r = get(gw.addr, "/", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("tls_protocol_error"));
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = pki(dir.path(), "up");
    let client = pki(dir.path(), "client");
    let (addr, _) = hyper_upstream(Some(server_config(&server, Some(&client.ca))), false).await;
    let ca = path(dir.path(), "up-ca.pem");
    let gw = TestGateway::start(&format!(
        "{}{}{}{}",
        upstream(
            "mtls",
            &[addr],
            &format!(
                "tls = true\ntls_ca = \"{ca}\"\ntls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
                path(dir.path(), "client.pem"),
                path(dir.path(), "client.key")
            )
        ),
        upstream(
            "anonymous",
            &[addr],
            &format!("tls = true\ntls_ca = \"{ca}\"\n[upstream.anonymous.retry]\nmax_attempts = 1")
        ),
        route("/mtls", "mtls"),
        route("/anonymous", "anonymous"),
    ))
    .await;
    let r = get(gw.addr, "/mtls", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("client_cert=true"), "{}", r.text());
    // Without a client certificate the server refuses the connection.
    let r = get(gw.addr, "/anonymous", &[]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.proxy_error().as_deref(), Some("tls_certificate_error"));
    let line = gw.log_line(&r.request_id()).await;
    let detail = line["detail"].as_str().unwrap();
    assert!(detail.contains("client certificate"), "{detail}");
}

#[tokio::test]
async fn health_checks_speak_the_upstreams_tls_and_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let up = pki(dir.path(), "up");
    let other = pki(dir.path(), "other");
    let (tls_addr, _) = hyper_upstream(Some(server_config(&up, None)), false).await;
    let (h2c_addr, _) = hyper_upstream(None, true).await;
    let spec = |tls: Option<waygate_upstream::TlsConnect>, h2: bool| waygate_upstream::ProbeSpec {
        request: Some(("/healthz".into(), "localhost".into())),
        expected: Some(vec![(200, 299)]),
        connect_timeout: std::time::Duration::from_secs(2),
        response_timeout: std::time::Duration::from_secs(2),
        is_health_check: true,
        host: "localhost".into(),
        transport: waygate_upstream::Transport { tls, h2 },
    };
    let connect = |ca: &Pki, protocol| {
        let tls = waygate_config::UpstreamTls {
            server_name: None,
            ca: Some(vec![ca.ca.clone()]),
            ca_path: None,
            client_cert: None,
        };
        waygate_upstream::TlsConnect::new(&tls, protocol).unwrap()
    };
    use waygate_config::UpstreamProtocol::{Http1, H2};
    use waygate_upstream::Verdict;
    for (protocol, h2) in [(Http1, false), (H2, true)] {
        let p =
            waygate_upstream::probe_addr(tls_addr, &spec(Some(connect(&up, protocol)), h2)).await;
        assert_eq!(p.verdict, Verdict::Healthy, "{}", p.detail);
    }
    let p =
        waygate_upstream::probe_addr(tls_addr, &spec(Some(connect(&other, Http1)), false)).await;
    assert_eq!(p.verdict, Verdict::TlsError, "{}", p.detail);
    assert!(p.detail.contains("certificate"), "{}", p.detail);
    let p = waygate_upstream::probe_addr(h2c_addr, &spec(None, true)).await;
    assert_eq!(p.verdict, Verdict::Healthy, "{}", p.detail);
    // An h2c-only server does not answer an HTTP/1.1 check.
    let p = waygate_upstream::probe_addr(h2c_addr, &spec(None, false)).await;
    assert_eq!(p.verdict, Verdict::BadHttp, "{}", p.detail);
}

/// A gateway in front of one TLS upstream `app` at `addr` (its CA in
/// `dir`), with the admin listener.
async fn tls_app_with_admin(dir: &Path, addr: SocketAddr) -> TestGateway {
    let ca = path(dir, "up-ca.pem");
    TestGateway::start(&format!(
        "{}{}[admin]\nlisten = \"127.0.0.1:0\"\n",
        upstream(
            "app",
            &[addr],
            &format!("tls = true\ntls_ca = \"{ca}\"\ntls_server_name = \"localhost\"")
        ),
        route("/", "app"),
    ))
    .await
}

/// `waygate_upstream_connections_parked` of the upstream `app`.
async fn parked_gauge(admin: SocketAddr) -> i64 {
    common::upstream_gauge(admin, "waygate_upstream_connections_parked").await
}

/// Waits until one connection of `app` is parked, failing after `within`.
async fn parked_within(admin: SocketAddr, within: std::time::Duration) {
    let start = tokio::time::Instant::now();
    while parked_gauge(admin).await != 1 {
        assert!(
            start.elapsed() < within,
            "an idle TLS upstream connection was not parked within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_tls_upstream_connections_are_parked_and_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), "up");
    let (addr, accepted) = hyper_upstream(Some(server_config(&pki, None)), false).await;
    let gw = tls_app_with_admin(dir.path(), addr).await;
    let admin = gw.admin.unwrap();
    let r = get(gw.addr, "/one", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    parked_within(admin, std::time::Duration::from_secs(3)).await;
    // Its TLS session goes on under a new HTTP/1.1 connection.
    let r = get(gw.addr, "/two", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("version=HTTP/1.1"), "{}", r.text());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one TLS connection for both"
    );
    assert_eq!(parked_gauge(admin).await, 0);
}

#[tokio::test]
async fn a_parked_tls_connection_the_server_closed_is_not_used() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), "up");
    let mut cfg = (*server_config(&pki, None)).clone();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    // One response per connection, then a close_notify and a close once
    // it has been idle for 1.7 s: a server's own keep-alive timeout.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = tls.flush().await;
                tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let gw = tls_app_with_admin(dir.path(), addr).await;
    let admin = gw.admin.unwrap();
    assert_eq!(get(gw.addr, "/one", &[]).await.status, 200);
    // Before the server closes it.
    parked_within(admin, std::time::Duration::from_millis(1600)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1900)).await;
    let r = get(gw.addr, "/two", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(
        line["attempts"].as_array().map(Vec::len),
        Some(1),
        "no attempt on the closed connection: {line}"
    );
}
