//! HTTP/2 downstream: h2c with prior knowledge and h2 over TLS (ALPN), with
//! curl and a bounded h2load run; HTTP/1.1 on the same listener still works.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use waygate_test_util::{Behavior, Upstream};

fn app(up: &Upstream) -> String {
    format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        up.addr
    )
}

/// Runs a command off the runtime and returns (stdout, stderr).
async fn run(mut cmd: Command) -> (String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_and_http1_on_the_same_listener() {
    let up = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let url = format!("http://{}/over-h2?x=1", gw.addr);
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    let (out, err) = run(cmd).await;
    assert_eq!(out, "hello from app: GET /over-h2?x=1\n\n2", "{err}");
    // The upstream got HTTP/1.1 with a Host and the forwarding headers.
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("host"), Some(gw.addr.to_string().as_str()));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    // HTTP/1.1 on the same port.
    let r = common::get(gw.addr, "/over-h1", &[]).await;
    assert_eq!(r.status, 200);
    // A bounded load: 2,000 requests on 4 connections, 10 streams each.
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-n",
        "2000",
        "-c",
        "4",
        "-m",
        "10",
        &format!("http://{}/", gw.addr),
    ]);
    let (out, err) = run(cmd).await;
    assert!(
        out.contains("2000 succeeded, 0 failed, 0 errored"),
        "{out}{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_over_h2_keeps_its_status_and_proxy_status() {
    let dead = waygate_test_util::refused_addr();
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{dead}\"]\n\n[[route]]\nupstream = \"app\"\n"
    ))
    .await;
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--http2-prior-knowledge",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{}/", gw.addr),
    ]);
    let (out, err) = run(cmd).await;
    assert!(out.starts_with("HTTP/2 502"), "{out}{err}");
    assert!(
        out.contains("proxy-status: waygate; error=connection_refused"),
        "{out}"
    );
    assert!(out.contains("x-request-id: "), "{out}");
}

/// CVE-2023-44487: a client opening streams and resetting them at once, as
/// fast as it can. The gateway closes that connection (GOAWAY) and keeps
/// serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_is_cut_off_and_others_are_still_served() {
    let up = Upstream::start(Behavior::SlowHead(std::time::Duration::from_millis(200)))
        .await
        .unwrap();
    let gw = common::TestGateway::start(&app(&up)).await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..5000 {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let req = http::Request::get(format!("http://{}/flood", gw.addr))
            .body(())
            .unwrap();
        match client.send_request(req, true) {
            Ok((resp, _)) => drop(resp), // dropping the response resets the stream
            Err(_) => break,
        }
        sent += 1;
    }
    // The gateway ended the attacker's connection...
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
    assert!(
        ended.is_ok(),
        "the flooding connection was closed ({sent} streams sent)"
    );
    assert!(
        sent < 5000,
        "cut off before the flood ended: {sent} streams"
    );
    // ...while a normal client is served.
    let r = common::get(gw.addr, "/normal", &[]).await;
    assert_eq!(r.status, 200);
}
