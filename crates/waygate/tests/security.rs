//! Security boundaries: never an open proxy, the admin API never on the
//! public listener, no internal address in what clients see by default.
//! (Spoofed forwarding headers and request ids: `proxying.rs`; request
//! smuggling: `smuggling.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use waygate_test_util::{Behavior, Upstream};

#[tokio::test]
async fn never_an_open_proxy() {
    let app = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    // A server the client would like the gateway to reach for it.
    let target = Upstream::start(Behavior::Hello("target".into()))
        .await
        .unwrap();

    // Host-specific routes only: a request for another host is refused.
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nhost = \"app.example\"\nupstream = \"app\"\n",
        app.addr
    ))
    .await;
    let req = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: app.example\r\nconnection: close\r\n\r\n",
        target.addr
    );
    let r = common::send_raw(gw.addr, req.as_bytes()).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.proxy_error().as_deref(), Some("destination_not_found"));
    let r = common::send_raw(
        gw.addr,
        format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", target.addr).as_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);

    // A catch-all route: the request goes to the configured upstream, with
    // the absolute-form authority as its Host, never to the named server.
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        app.addr
    ))
    .await;
    let r = common::send_raw(gw.addr, req.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("hello from app"), "{}", r.text());
    assert_eq!(
        app.seen()[0].header("host"),
        Some(target.addr.to_string().as_str())
    );
    assert!(
        target.seen().is_empty(),
        "the gateway never connected to the named server"
    );
}

#[tokio::test]
async fn the_admin_api_is_not_on_the_public_listener() {
    let app = Upstream::start(Behavior::Status(404)).await.unwrap();
    let gw = common::TestGateway::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        app.addr
    ))
    .await;
    for path in [
        "/metrics",
        "/status",
        "/status.json",
        "/upstreams",
        "/errors",
        "/healthz",
    ] {
        let r = common::get(gw.addr, path, &[]).await;
        assert_eq!(
            r.status, 404,
            "{path} goes to the upstream, not the admin API"
        );
        assert!(!r.text().contains("waygate_"), "{path}");
    }
    let r = common::send_raw(
        gw.addr,
        b"POST /reload HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(app.seen().len(), 7, "every one reached the upstream");
    // The admin listener does answer, on its own address.
    let admin = common::get(gw.admin.unwrap(), "/healthz", &[]).await;
    assert_eq!(admin.status, 200);
}

#[tokio::test]
async fn error_responses_name_no_internal_address_by_default() {
    let dead = waygate_test_util::refused_addr();
    let gw = common::TestGateway::start(&format!(
        "[upstream.app]\nservers = [\"{dead}\"]\n\n[[route]]\nupstream = \"app\"\n"
    ))
    .await;
    let port = format!(":{}", dead.port());
    for accept in ["text/html", "application/json", "text/plain"] {
        let r = common::get(gw.addr, "/", &[("accept", accept)]).await;
        assert_eq!(r.status, 502);
        let everything = format!("{:?}{}", r.headers, r.text());
        assert!(!everything.contains(&port), "{accept}: {everything}");
        assert!(!everything.contains("127.0.0.1"), "{accept}: {everything}");
    }
}
