//! Every gateway error is explainable from its request id: `/errors/<id>` on
//! the admin listener and `waygate why <id>`.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{get, route, upstream, TestGateway};
use waygate_test_util::{refused_addr, Behavior, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_waygate");

/// Runs `waygate why <id> --admin <admin> --token <token>`.
async fn why(id: &str, admin: &str, token: &str) -> std::process::Output {
    let args: Vec<String> = ["why", id, "--admin", admin, "--token", token]
        .map(String::from)
        .into();
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_explains_gateway_errors_by_request_id() {
    let ok = Upstream::start(Behavior::Hello("ok".into())).await.unwrap();
    let garbage = Upstream::start(Behavior::GarbageStatusLine).await.unwrap();
    let cfg = format!(
        "{}{}{}[[route]]\npath_prefix = \"/refused\"\nupstream = \"refused\"\n\n[[route]]\npath_prefix = \"/garbage\"\nupstream = \"garbage\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0k\"\n",
        upstream("app", &[ok.addr], ""),
        upstream("refused", &[refused_addr()], "[upstream.refused.retry]\nmax_attempts = 1\n"),
        upstream("garbage", &[garbage.addr], ""),
    ) + &route("/", "app");
    let gw = TestGateway::start(&cfg).await;
    let admin = gw.admin.unwrap().to_string();

    let refused = get(gw.addr, "/refused/x", &[]).await;
    assert_eq!(refused.status, 502);
    let garbage_resp = get(gw.addr, "/garbage", &[]).await;
    assert_eq!(garbage_resp.status, 502);
    let fine = get(gw.addr, "/", &[]).await;
    assert_eq!(fine.status, 200);

    // The admin API: the record, what it means, what to check.
    let auth = ("authorization", "Bearer t0k");
    let r = get(
        gw.admin.unwrap(),
        &format!("/errors/{}", refused.request_id()),
        &[auth],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["cause"], "connection_refused");
    assert_eq!(v["record"]["status"], 502);
    assert_eq!(v["record"]["path"], "/refused/x");
    assert!(v["fixes"][0].as_str().unwrap().contains("running"));
    let list = get(gw.admin.unwrap(), "/errors", &[auth]).await;
    let list: serde_json::Value = serde_json::from_str(&list.text()).unwrap();
    assert_eq!(
        list["errors"].as_array().unwrap().len(),
        2,
        "only the two errors are kept"
    );
    assert_eq!(
        list["errors"][0]["cause"], "response_protocol_error",
        "newest first"
    );

    // The CLI, as an operator would run it.
    let out = why(&refused.request_id(), &admin, "t0k").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&refused.request_id()));
    assert!(text.contains("cause connection_refused"), "{text}");
    assert!(text.contains("refused the connection"), "{text}");
    assert!(text.contains("Is the application running"), "{text}");
    assert!(text.contains("GET test.local/refused/x"), "{text}");
    assert!(text.contains("Servers of upstream refused now:"), "{text}");
    assert!(
        text.contains("connected in") || text.contains("new connection"),
        "{text}"
    );

    let out = why(&garbage_resp.request_id(), &admin, "t0k").await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not valid HTTP"), "{text}");
    assert!(text.contains("Attempts:"), "{text}");

    // A request that succeeded has nothing to explain; a wrong token is refused.
    let out = why(&fine.request_id(), &admin, "t0k").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no gateway error recorded"));
    let out = why(&refused.request_id(), &admin, "wrong").await;
    assert_eq!(out.status.code(), Some(2));
}
