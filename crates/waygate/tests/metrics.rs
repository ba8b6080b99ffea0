//! `/metrics` on the admin listener: valid Prometheus text, counters that
//! move with requests, gateway errors by cause and side, server state.

#![allow(clippy::unwrap_used)]

mod common;

use common::{get, route, upstream, TestGateway};
use waygate_test_util::{refused_addr, Behavior, Upstream};

fn scrape(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text exposition")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let ok = Upstream::start(Behavior::Hello("ok".into())).await.unwrap();
    let own503 = Upstream::start(Behavior::Status(503)).await.unwrap();
    let cfg = format!(
        "{}{}{}[[route]]\nname = \"broken\"\npath_prefix = \"/broken\"\nupstream = \"refused\"\n\n[[route]]\nname = \"own\"\npath_prefix = \"/own\"\nupstream = \"own\"\n\n[[route]]\nname = \"main\"\npath_prefix = \"/app\"\nupstream = \"app\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        upstream("app", &[ok.addr], ""),
        upstream("refused", &[refused_addr()], "[upstream.refused.retry]\nmax_attempts = 1\n"),
        upstream("own", &[own503.addr], "[upstream.own.retry]\nmax_attempts = 1\n"),
    ) + &route("/zzz", "app");
    let gw = TestGateway::start(&cfg).await;
    let admin = gw.admin.unwrap();

    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/app/x", &[]).await.status, 200);
    }
    assert_eq!(get(gw.addr, "/broken", &[]).await.status, 502);
    assert_eq!(get(gw.addr, "/own", &[]).await.status, 503);
    assert_eq!(get(gw.addr, "/nothing", &[]).await.status, 404);

    let r = get(admin, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let s = scrape(&r.text());
    let ok_labels = [
        ("route", "main"),
        ("upstream", "app"),
        ("status_class", "2xx"),
        ("side", "upstream"),
    ];
    assert_eq!(value(&s, "waygate_requests_total", &ok_labels), 3.0);
    // A gateway 502 and an upstream's own 503 are never confused.
    assert_eq!(
        value(
            &s,
            "waygate_requests_total",
            &[
                ("route", "broken"),
                ("status_class", "5xx"),
                ("side", "gateway")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "waygate_requests_total",
            &[
                ("route", "own"),
                ("status_class", "5xx"),
                ("side", "upstream")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "waygate_requests_total",
            &[("route", "own"), ("side", "gateway")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "waygate_gateway_errors_total",
            &[
                ("cause", "connection_refused"),
                ("proxy_status", "connection_refused"),
                ("status", "502")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "waygate_gateway_errors_total",
            &[("cause", "no_route"), ("route", "")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "waygate_upstream_attempts_total",
            &[("upstream", "app")]
        ),
        3.0
    );
    assert_eq!(
        value(&s, "waygate_server_available", &[("upstream", "app")]),
        1.0
    );
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "waygate_request_duration_seconds_count"));
    assert!(s.samples.iter().any(|x| x.metric == "waygate_build_info"));
    // No raw paths or client addresses in labels.
    assert!(
        !r.text().contains("/app/x") && !r.text().contains("127.0.0.1:5"),
        "bounded labels only"
    );

    // The counters move.
    assert_eq!(get(gw.addr, "/app/y", &[]).await.status, 200);
    let s = scrape(&get(admin, "/metrics", &[]).await.text());
    assert_eq!(value(&s, "waygate_requests_total", &ok_labels), 4.0);
}
