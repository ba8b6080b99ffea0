//! TLS termination: certificates chosen by SNI (exact, wildcard, default),
//! HTTPS requests proxied with `X-Forwarded-Proto: https`, curl over TLS
//! (HTTP/2 by ALPN),
//! a certificate replaced on disk served after a reload, and `waygate
//! check` on bad key pairs and soon-expiring certificates.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waygate_test_util::{Behavior, Upstream};

/// A self-signed certificate for `names`, written as `<stem>.pem` and
/// `<stem>.key` in `dir`; returns its DER.
fn cert(dir: &Path, stem: &str, names: &[&str], days: Option<i64>) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    if let Some(d) = days {
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(d);
    }
    let c = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), c.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    c.der().clone()
}

/// A TLS client trusting exactly `roots`.
fn connector(roots: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects with TLS using `sni`, trusting `roots`; returns the
/// certificate the server chose and the response to `GET /`.
async fn https_get(
    addr: std::net::SocketAddr,
    sni: &str,
    roots: &[CertificateDer<'static>],
) -> (CertificateDer<'static>, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(roots)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let chosen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    (chosen, String::from_utf8_lossy(&out).into_owned())
}

fn tls_listener(dir: &Path, stems: &[&str]) -> String {
    stems
        .iter()
        .map(|s| {
            format!(
                "\n[[listener.tls]]\ncert = \"{}\"\nkey = \"{}\"\n",
                dir.join(format!("{s}.pem")).display(),
                dir.join(format!("{s}.key")).display()
            )
        })
        .collect()
}

#[tokio::test]
async fn certificates_are_chosen_by_sni_and_requests_are_marked_https() {
    let dir = tempfile::tempdir().unwrap();
    let a = cert(dir.path(), "a", &["a.test"], None);
    let b = cert(dir.path(), "b", &["*.b.test"], None);
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start_with(
        &tls_listener(dir.path(), &["a", "b"]),
        &format!(
            "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
            up.addr
        ),
    )
    .await;
    let roots = [a.clone(), b.clone()];
    let (chosen, resp) = https_get(gw.addr, "a.test", &roots).await;
    assert_eq!(chosen, a);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("hello from app"), "{resp}");
    let (chosen, _) = https_get(gw.addr, "x.b.test", &roots).await;
    assert_eq!(chosen, b, "the wildcard certificate");
    // An unknown name gets the default (first) certificate.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let err = connector(std::slice::from_ref(&a))
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only valid for DnsName(\"a.test\")"),
        "{err}"
    );
    // The upstream learns the request came over HTTPS.
    assert_eq!(up.seen()[0].header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn curl_over_tls_and_a_renewed_certificate_after_reload() {
    if !common::have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let old = cert(dir.path(), "site", &["site.test"], None);
    let _other = cert(dir.path(), "other", &["other.test"], None);
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start_with(
        &tls_listener(dir.path(), &["site", "other"]),
        &format!(
            "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
            up.addr
        ),
    )
    .await;
    let port = gw.addr.port();
    let curl_name = move |name: &str, ca: &Path| {
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "-w", "\n%{http_version}", "--cacert"])
            .arg(ca)
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .arg(format!("https://{name}:{port}/hello"))
            .output()
            .unwrap()
    };
    let curl = move |ca: &Path| curl_name("site.test", ca);
    // SNI for a second name: curl trusts only that name's certificate, so
    // success means the gateway chose it.
    let ca_other = dir.path().join("other.pem");
    let out = tokio::task::spawn_blocking(move || curl_name("other.test", &ca_other))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("hello from app: GET /hello"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca_old = dir.path().join("ca-old.pem");
    std::fs::copy(dir.path().join("site.pem"), &ca_old).unwrap();
    let out = tokio::task::spawn_blocking({
        let ca = ca_old.clone();
        move || curl(&ca)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("hello from app: GET /hello"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.ends_with("\n2"),
        "HTTP/2 negotiated by ALPN: {stdout}"
    );
    // A keep-alive TLS connection opened before the renewal.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut kept = connector(std::slice::from_ref(&old))
        .connect(ServerName::try_from("site.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut ask = async |tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
                         n: usize| {
        tls.write_all(b"GET /kept HTTP/1.1\r\nhost: site.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen)
            .matches("hello from app")
            .count()
            < n
        {
            let k = tls.read(&mut buf).await.unwrap();
            assert!(k > 0, "the old connection is still open");
            seen.extend_from_slice(&buf[..k]);
        }
    };
    ask(&mut kept, 1).await;
    // Renew the certificate on disk, reload: new connections get the new one.
    let new = cert(dir.path(), "site", &["site.test"], None);
    assert_ne!(old, new);
    gw.gateway.reload().await.unwrap();
    // ...and the connection from before goes on.
    ask(&mut kept, 2).await;
    let (chosen, resp) = https_get(gw.addr, "site.test", std::slice::from_ref(&new)).await;
    assert_eq!(chosen, new);
    assert!(resp.starts_with("HTTP/1.1 200"));
}

#[test]
fn check_reports_a_key_that_does_not_match_and_a_certificate_about_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path(), "one", &["one.test"], None);
    cert(dir.path(), "two", &["two.test"], None);
    cert(dir.path(), "soon", &["soon.test"], Some(5));
    let cfg = dir.path().join("waygate.toml");
    let write = |tls: &str| {
        std::fs::write(
            &cfg,
            format!("[[listener]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n{tls}"),
        )
        .unwrap();
    };
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_waygate"))
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    // The key of another certificate.
    write("\n[[listener.tls]]\ncert = \"one.pem\"\nkey = \"two.key\"\n");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("waygate.toml:7:7: error: private key"),
        "{stderr}"
    );
    assert!(stderr.contains("does not go with certificate"), "{stderr}");
    // Expiring in 5 days: valid, with a warning.
    write("\n[[listener.tls]]\ncert = \"soon.pem\"\nkey = \"soon.key\"\n");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("expires in 4 day(s)") || stderr.contains("expires in 5 day(s)"),
        "{stderr}"
    );
    // A missing file.
    write("\n[[listener.tls]]\ncert = \"nope.pem\"\nkey = \"soon.key\"\n");
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("waygate.toml:6:8: error: cannot read certificate"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_redirect_listener_sends_every_request_to_https() {
    let app = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let rest = common::upstream("app", &[app.addr], "") + &common::route("/", "app");
    let gw =
        common::TestGateway::start_with("redirect_https = true\nhttps_port = 8443", &rest).await;
    let r = common::send_raw(
        gw.addr,
        b"POST /a/b?c=d HTTP/1.1\r\nhost: Example.com:80\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("https://example.com:8443/a/b?c=d")
    );
    let line = gw.log_line(&r.request_id()).await;
    assert_eq!(line["status"], 308);
    assert_eq!(line["side"], "gateway");
    // Nothing reached the upstream.
    assert!(app.seen().is_empty());

    let gw = common::TestGateway::start_with("redirect_https = true", &rest).await;
    let r = common::get(gw.addr, "/x", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://test.local/x"));
    // A Host that is not a plain host name is not echoed into Location.
    let r = common::send_raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nhost: evil.example@test.local\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
}

#[tokio::test]
async fn a_certificate_renewed_on_disk_is_picked_up_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let old = cert(dir.path(), "site", &["site.test"], None);
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start_with(
        &tls_listener(dir.path(), &["site"]),
        &(common::upstream("app", &[up.addr], "") + &common::route("/", "app")),
    )
    .await;
    // What `waygate run` starts, polling faster for the test.
    tokio::spawn(
        gw.gateway
            .clone()
            .watch_tls_files(std::time::Duration::from_millis(50)),
    );
    let (chosen, body) = https_get(gw.addr, "site.test", std::slice::from_ref(&old)).await;
    assert_eq!(chosen, old);
    assert!(body.contains("hello from app"), "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // A renewal writes the certificate, then the key; no reload command.
    let new = cert(dir.path(), "site", &["site.test"], None);
    let roots = [new.clone(), old.clone()];
    let mut served = None;
    for _ in 0..100 {
        let (chosen, _) = https_get(gw.addr, "site.test", &roots).await;
        if chosen == new {
            served = Some(chosen);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(served, Some(new), "the renewed certificate is served");
    assert!(gw.gateway.reloads().succeeded >= 1);
}
