//! The live status page: `/status.json`, `/status` over HTTP, and `/status`
//! rendered by headless Chromium while an upstream fails (with a screenshot
//! saved as a test artifact in target/).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{get, route, upstream, TestGateway};
use waygate_test_util::{refused_addr, Behavior, Upstream};

async fn gateway_with_a_failing_upstream() -> (TestGateway, Upstream, std::net::SocketAddr) {
    let ok = Upstream::start(Behavior::Hello("ok".into())).await.unwrap();
    let dead = refused_addr();
    let cfg = format!(
        "{}{}[[route]]\npath_prefix = \"/shop\"\nupstream = \"shop\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        upstream("app", &[ok.addr], ""),
        upstream("shop", &[dead], "[upstream.shop.retry]\nmax_attempts = 1\n"),
    ) + &route("/", "app");
    let gw = TestGateway::start(&cfg).await;
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/", &[]).await.status, 200);
        assert_eq!(get(gw.addr, "/shop/cart", &[]).await.status, 502);
    }
    (gw, ok, dead)
}

#[tokio::test]
async fn status_json_and_html_show_the_failing_server_and_why() {
    let (gw, _ok, dead) = gateway_with_a_failing_upstream().await;
    let admin = gw.admin.unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&get(admin, "/status.json", &[]).await.text()).unwrap();
    let errors = v["recent_errors_by_cause"].as_array().unwrap();
    assert_eq!(errors[0]["cause"], "connection_refused");
    assert_eq!(errors[0]["count"], 3);
    assert!(errors[0]["explanation"]
        .as_str()
        .unwrap()
        .contains("refused"));
    assert!(errors[0]["fixes"][0].as_str().unwrap().contains("running"));
    let shop = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "shop")
        .unwrap();
    assert_eq!(shop["servers"][0]["address"], dead.to_string());
    assert!(shop["history"]["requests_per_second"].is_array());
    assert_eq!(shop["gateway_errors_5m"], 3);

    let r = get(admin, "/status", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    assert!(html.contains("http-equiv=\"refresh\""), "refreshes itself");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );
    assert!(html.contains("<svg"), "inline SVG charts");
    assert!(html.contains("The server behind this service refused the connection"));
    assert!(html.contains("Is the application running and listening on that port?"));
    assert!(html.contains(&dead.to_string()));
    assert!(
        html.contains("failing requests: 3 gateway errors in 5 min"),
        "an upstream whose requests fail is not shown as operational"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium must be installed in CI (.ci/run installs it)"
        );
        eprintln!("skipping: chromium is not installed");
        return;
    };
    let (gw, _ok, dead) = gateway_with_a_failing_upstream().await;
    let url = format!("http://{}/status", gw.admin.unwrap());
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let profile = tempfile::tempdir().unwrap();
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
    ];
    let run = |extra: Vec<String>| {
        let mut cmd = Command::new(chromium);
        cmd.args(flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra);
        cmd
    };
    let mut dump = run(vec!["--dump-dom".into(), url.clone()]);
    let mut screenshot = run(vec![format!("--screenshot={}", shot.display()), url]);
    let (dom, shot_ok) = tokio::task::spawn_blocking(move || {
        let dom = dump.output().unwrap();
        let s = screenshot.output().unwrap();
        (
            String::from_utf8_lossy(&dom.stdout).into_owned(),
            s.status.success(),
        )
    })
    .await
    .unwrap();
    assert!(
        dom.contains("waygate status"),
        "rendered: {}",
        &dom[..dom.len().min(500)]
    );
    assert!(
        dom.contains(&dead.to_string()),
        "the failing server is listed"
    );
    assert!(dom.contains("The server behind this service refused the connection"));
    assert!(dom.contains("upstream shop"));
    assert!(shot_ok && shot.exists(), "screenshot saved");
    eprintln!("status page screenshot: {}", shot.display());
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn public_status_page_is_sanitized_and_linked_from_error_pages() {
    let ok = Upstream::start(Behavior::Hello("ok".into())).await.unwrap();
    let dead = refused_addr();
    let toml = format!(
        "{}{}[[route]]\nname = \"Search\"\npath_prefix = \"/search\"\nupstream = \"search_backend\"\n\n[[route]]\nname = \"Shop\"\npath_prefix = \"/\"\nupstream = \"shop_backend\"\n",
        upstream("shop_backend", &[ok.addr], ""),
        upstream("search_backend", &[dead], "[upstream.search_backend.retry]\nmax_attempts = 1\n"),
    );
    // The listener needs `status_page`: build its config by hand.
    let dir = tempfile::tempdir().unwrap();
    let full = format!("[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\nstatus_page = \"/_status\"\n\n[access_log]\ntarget = \"off\"\n\n{toml}");
    let loaded = waygate_config::parse(&full, "t.toml", dir.path()).unwrap();
    let gw =
        waygate_proxy::Gateway::build(&loaded.config, waygate_telemetry::AccessLog::off()).unwrap();
    let bound = gw.bind().await.unwrap();
    let addr = bound.local_addrs()[0];
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(gw.serve(bound, async move {
        let _ = stopped.await;
    }));

    let r = get(addr, "/_status", &[]).await;
    assert_eq!(r.status, 200);
    let page = r.text();
    assert!(
        page.contains("<td>Shop</td><td class=\"ok\">Operational</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td>Search</td><td class=\"ok\">Operational</td>"),
        "{page}"
    );

    // Search fails: its error page links to the status page, which now says degraded.
    let e = get(addr, "/search?q=x", &[("accept", "text/html")]).await;
    assert_eq!(e.status, 502);
    assert!(e.text().contains("<a href=\"/_status\">/_status</a>"));
    let page = get(addr, "/_status", &[]).await.text();
    assert!(
        page.contains("<td>Search</td><td class=\"warn\">Degraded</td>"),
        "{page}"
    );
    assert!(page.contains("since "));
    for secret in [
        dead.to_string(),
        ok.addr.to_string(),
        "search_backend".into(),
        "shop_backend".into(),
    ] {
        assert!(!page.contains(&secret), "the public page leaks {secret}");
    }
}
