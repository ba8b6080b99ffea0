//! Hot reload: under steady load, reloads that change routes and servers
//! fail no request and take effect at once; an invalid config is rejected
//! while the old one keeps serving; unchanged servers keep their state;
//! listeners come and go.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use waygate_test_util::{Behavior, Upstream};

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n\n";

/// Counts of a keep-alive load.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    /// What each failed request got, for the assertion message.
    why: std::sync::Mutex<Vec<String>>,
}

/// `clients` keep-alive connections each sending `GET /` back to back until
/// `load.stop`; any transport error or non-200 counts as failed. A client
/// connects again after a response with `Connection: close` (the gateway
/// closes a connection after `max_requests_per_connection`, 1000 by
/// default), as any HTTP/1.1 client does.
fn start_load(
    addr: SocketAddr,
    clients: usize,
    load: Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let load = load.clone();
            tokio::spawn(async move {
                let mut tx = connect(addr).await;
                while !load.stop.load(Ordering::Relaxed) {
                    let (outcome, close) = exchange(&mut tx).await;
                    let ok = outcome.is_ok();
                    if let Err(why) = outcome {
                        load.why.lock().unwrap().push(why);
                    }
                    let counter = if ok { &load.ok } else { &load.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        break;
                    }
                    if close {
                        tx = connect(addr).await;
                    }
                }
            })
        })
        .collect()
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

/// One `GET /` on `tx`: whether it succeeded (or what went wrong), and
/// whether the gateway closes the connection after it.
async fn exchange(
    tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> (Result<(), String>, bool) {
    if let Err(e) = tx.ready().await {
        return (Err(format!("connection not ready: {e:?}")), true);
    }
    let req = http::Request::get("/")
        .header("host", "test.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = match tx.send_request(req).await {
        Ok(resp) => resp,
        Err(e) => return (Err(format!("transport error {e:?}")), true),
    };
    let status = resp.status();
    let close = resp
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let proxy_status = resp
        .headers()
        .get("proxy-status")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let outcome = match resp.into_body().collect().await {
        Ok(_) if status == 200 => Ok(()),
        Ok(body) => Err(format!("{status} {proxy_status:?} {:?}", body.to_bytes())),
        Err(e) => Err(format!("{status}, then body error {e}")),
    };
    (outcome, close)
}

async fn post(admin: SocketAddr, path: &str) -> common::RawResponse {
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    common::send_raw(admin, req.as_bytes()).await
}

fn json(r: &common::RawResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_nothing_and_apply_at_once() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let c = Upstream::start(Behavior::Hello("c".into())).await.unwrap();
    let d = Upstream::start(Behavior::Hello("d".into())).await.unwrap();
    let e = Upstream::start(Behavior::Hello("e".into())).await.unwrap();
    // Generation i: the default route on `main` (two of a, b, c, rotating),
    // plus a route /v<i> to upstream `side` (d or e).
    let config = |i: usize| {
        let servers = [&a.addr, &b.addr, &c.addr];
        let main: Vec<String> = (0..2)
            .map(|k| format!("\"{}\"", servers[(i + k) % 3]))
            .collect();
        let side = if i.is_multiple_of(2) { d.addr } else { e.addr };
        format!(
            "{ADMIN}[upstream.main]\nservers = [{}]\n\n[upstream.side]\nservers = [\"{side}\"]\n\n\
             [[route]]\nname = \"default\"\nupstream = \"main\"\n\n\
             [[route]]\nname = \"v{i}\"\npath_prefix = \"/v{i}\"\nupstream = \"side\"\n",
            main.join(", ")
        )
    };
    let gw = common::TestGateway::start(&config(0)).await;
    let admin = gw.admin.unwrap();
    let load = Arc::new(Load::default());
    let clients = start_load(gw.addr, 4, load.clone());
    for i in 1..=20 {
        gw.rewrite("", &config(i));
        let r = post(admin, "/reload").await;
        assert_eq!(r.status, 200, "reload {i}: {}", r.text());
        let report = json(&r);
        assert_eq!(report["result"], "reloaded");
        assert_eq!(report["generation"], i as u64 + 1);
        assert_eq!(report["routes"]["added"][0], format!("v{i}"));
        assert_eq!(report["routes"]["removed"][0], format!("v{}", i - 1));
        assert!(report["upstreams"]["changed"]
            .as_array()
            .unwrap()
            .contains(&"main".into()));
        // The new route answers right after the reload, from the new server.
        let want = if i.is_multiple_of(2) {
            "hello from d"
        } else {
            "hello from e"
        };
        let r = common::get(gw.addr, &format!("/v{i}/x"), &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with(want), "{}", r.text());
        // The previous generation's route is gone: the default route serves it.
        let old = common::get(gw.addr, &format!("/v{}/x", i - 1), &[]).await;
        assert_eq!(old.status, 200);
        let text = old.text();
        assert!(
            !text.starts_with("hello from d") && !text.starts_with("hello from e"),
            "{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    assert_eq!(
        failed,
        0,
        "failed requests across 20 reloads ({ok} succeeded): {:?}",
        load.why.lock().unwrap()
    );
    assert!(ok > 100, "the load ran: {ok} requests");
    let m = common::get(admin, "/metrics", &[]).await.text();
    assert!(
        m.contains("waygate_config_reloads_total{result=\"success\"} 20"),
        "{m}"
    );
    assert!(m.contains("waygate_config_generation 21"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_rejected_and_the_old_one_keeps_serving() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let good = format!(
        "{ADMIN}[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        a.addr
    );
    let gw = common::TestGateway::start(&good).await;
    let admin = gw.admin.unwrap();
    let load = Arc::new(Load::default());
    let clients = start_load(gw.addr, 2, load.clone());
    // A route to an upstream that does not exist.
    gw.rewrite(
        "",
        &format!("{good}\n[[route]]\npath_prefix = \"/x\"\nupstream = \"ap\"\n"),
    );
    let r = post(admin, "/reload").await;
    assert_eq!(r.status, 422, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["result"], "rejected");
    let errors = v["errors"].to_string();
    assert!(
        errors.contains("waygate.toml:19:12"),
        "file:line:column in {errors}"
    );
    assert!(errors.contains("did you mean `app`"), "{errors}");
    // The old config still serves, and the failure is counted and shown.
    assert_eq!(common::get(gw.addr, "/x", &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(load.failed.load(Ordering::Relaxed), 0);
    let m = common::get(admin, "/metrics", &[]).await.text();
    assert!(
        m.contains("waygate_config_reloads_total{result=\"failure\"} 1"),
        "{m}"
    );
    assert!(m.contains("waygate_config_generation 1"), "{m}");
    let status = json(&common::get(admin, "/status.json", &[]).await);
    assert_eq!(status["config"]["last_reload"]["result"], "rejected");
    assert!(status["config"]["last_reload"]["details"][0]
        .as_str()
        .unwrap()
        .contains("is not defined"));
    let html = common::get(admin, "/status", &[]).await.text();
    assert!(html.contains("rejected: the previous config keeps serving"));
}

#[tokio::test]
async fn unchanged_servers_keep_their_state_and_counters() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let c = Upstream::start(Behavior::Hello("c".into())).await.unwrap();
    let cfg = |servers: &[SocketAddr], extra: &str| {
        let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "{ADMIN}[upstream.app]\nservers = [{}]\nbalance = \"round_robin\"\n{extra}\n[[route]]\nname = \"all\"\nupstream = \"app\"\n",
            list.join(", ")
        )
    };
    let gw = common::TestGateway::start(&cfg(&[a.addr, b.addr], "")).await;
    let admin = gw.admin.unwrap();
    for _ in 0..4 {
        assert_eq!(common::get(gw.addr, "/", &[]).await.status, 200);
    }
    // Take b out of rotation, then change the upstream (add c, change a timeout).
    let r = post(admin, &format!("/upstreams/app/servers/{}/disable", b.addr)).await;
    assert_eq!(r.status, 200);
    gw.rewrite(
        "",
        &cfg(&[a.addr, b.addr, c.addr], "response_timeout = \"5s\"\n"),
    );
    let report = gw.gateway.reload().await.unwrap();
    assert_eq!(report.servers.added, [format!("app/{}", c.addr)]);
    assert_eq!(report.upstreams.changed, ["app"]);
    // b is still disabled: only a and c are used.
    let before = b.seen().len();
    for _ in 0..6 {
        assert_eq!(common::get(gw.addr, "/", &[]).await.status, 200);
    }
    assert_eq!(b.seen().len(), before, "a disabled server stays disabled");
    assert_eq!(c.seen().len(), 3);
    let ups = json(&common::get(admin, "/upstreams", &[]).await);
    let servers = ups["upstreams"][0]["servers"].as_array().unwrap();
    let bv = servers
        .iter()
        .find(|s| s["address"] == b.addr.to_string())
        .unwrap();
    assert_eq!(bv["admin"], "disabled");
    // The route's request counter went on from 4, it did not restart.
    let m = common::get(admin, "/metrics", &[]).await.text();
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("waygate_requests_total{")
                && l.contains("route=\"all\"")
                && l.contains("status_class=\"2xx\"")
        })
        .unwrap();
    assert!(line.ends_with(" 10"), "{line}");
}

#[tokio::test]
async fn listeners_are_added_and_removed_without_touching_the_others() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let rest = format!(
        "{ADMIN}[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
        a.addr
    );
    let gw = common::TestGateway::start(&rest).await;
    // A keep-alive connection on the first listener, open across reloads.
    let mut kept = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let ask = b"GET /k HTTP/1.1\r\nhost: x\r\n\r\n";
    one_keep_alive(&mut kept, ask).await;
    // A free port for the second listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let second =
        format!("[[listener]]\nname = \"second\"\nlisten = \"127.0.0.1:{port}\"\n\n{rest}");
    gw.rewrite("", &second);
    let report = gw.gateway.reload().await.unwrap();
    assert_eq!(report.listeners.added, ["second"]);
    assert_eq!(report.connections_kept, 1);
    let addr2: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(common::get(addr2, "/", &[]).await.status, 200);
    one_keep_alive(&mut kept, ask).await;
    // Remove it again: its port closes, the first listener's connection lives on.
    gw.rewrite("", &rest);
    let report = gw.gateway.reload().await.unwrap();
    assert_eq!(report.listeners.removed, ["second"]);
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr2).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the removed listener's port is closed");
    one_keep_alive(&mut kept, ask).await;
}

/// Sends one request on a kept-alive connection and reads a 200 response.
async fn one_keep_alive(s: &mut tokio::net::TcpStream, req: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req).await.unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    // Hello bodies are short and sent with Content-Length: read the head and body.
    while !String::from_utf8_lossy(&buf).contains("hello from") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the connection is still open");
        buf.extend_from_slice(&tmp[..n]);
    }
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    // The rest of the line.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = tokio::time::timeout(Duration::from_millis(20), s.read(&mut tmp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_survives_reloads_that_replace_its_upstream() {
    let slow = Upstream::start(Behavior::SlowBody(Duration::from_millis(600)))
        .await
        .unwrap();
    let other = Upstream::start(Behavior::Hello("other".into()))
        .await
        .unwrap();
    let cfg = |servers: &str| {
        format!("[upstream.app]\nservers = [{servers}]\n\n[[route]]\nupstream = \"app\"\n")
    };
    let gw = common::TestGateway::start(&cfg(&format!("\"{}\"", slow.addr))).await;
    let addr = gw.addr;
    let streaming = tokio::spawn(async move { common::get(addr, "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The upstream's only server is replaced twice while the body streams.
    gw.rewrite("", &cfg(&format!("\"{}\"", other.addr)));
    let report = gw.gateway.reload().await.unwrap();
    assert_eq!(report.servers.removed, [format!("app/{}", slow.addr)]);
    gw.rewrite("", &cfg(&format!("\"{}\", \"{}\"", other.addr, slow.addr)));
    gw.gateway.reload().await.unwrap();
    let r = streaming.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "first part|second...", "the body arrived whole");
    assert!(common::get(addr, "/", &[]).await.text().len() > 1);
}
