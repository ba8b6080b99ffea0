//! `/status` (a self-contained HTML page: no external assets, refreshes
//! itself) and `/status.json` (the same data).

use std::fmt::Write as _;

use waygate_proxy::{StatusView, UpstreamPoint};

pub(crate) fn json(v: &StatusView) -> serde_json::Value {
    let upstreams: Vec<serde_json::Value> = v
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let series = |f: &dyn Fn(&UpstreamPoint) -> serde_json::Value| -> Vec<serde_json::Value> {
                v.history.iter().map(|p| p.upstreams.get(i).map_or(serde_json::Value::Null, f)).collect()
            };
            serde_json::json!({
                "name": u.name, "balance": u.balance, "panic": u.panic, "in_flight": u.in_flight,
                "gateway_errors_5m": v.recent_errors.get(&u.name).copied().unwrap_or(0),
                "servers": u.servers.iter().map(|s| serde_json::json!({
                    "address": s.address, "available": s.available, "health": s.health, "admin": s.admin,
                    "ejected_for_ms": s.ejected_for_ms, "ejections": s.ejections, "in_flight": s.in_flight,
                    "ewma_ms": s.ewma_ms, "reason": s.reason,
                })).collect::<Vec<_>>(),
                "history": {
                    "time": v.history.iter().map(|p| p.time).collect::<Vec<_>>(),
                    "requests_per_second": series(&|p| serde_json::json!(p.rps)),
                    "error_rate": series(&|p| serde_json::json!(p.error_rate)),
                    "p50_ms": series(&|p| serde_json::json!(p.p50_ms)),
                    "p99_ms": series(&|p| serde_json::json!(p.p99_ms)),
                },
            })
        })
        .collect();
    let errors: Vec<serde_json::Value> = v
        .errors
        .iter()
        .map(|g| {
            serde_json::json!({
                "cause": g.cause.name(), "status": g.cause.status(), "proxy_status": g.cause.proxy_status(),
                "count": g.count, "title": g.cause.title(), "explanation": g.cause.explanation(),
                "fixes": g.cause.fixes(), "last_request_id": g.last_request_id, "last_time": g.last_time,
                "upstreams": g.upstreams,
            })
        })
        .collect();
    serde_json::json!({
        "generated_at": waygate_telemetry::rfc3339_millis(std::time::SystemTime::now()),
        "sample_every_seconds": v.sample_every.as_secs_f64(),
        "upstreams": upstreams,
        "recent_errors_by_cause": errors,
        "config": {
            "generation": v.reloads.generation,
            "reloads_succeeded": v.reloads.succeeded,
            "reloads_failed": v.reloads.failed,
            "last_reload": v.reloads.last.as_ref().map(|l| serde_json::json!({
                "time": waygate_telemetry::rfc3339_millis(l.time),
                "result": if l.ok { "reloaded" } else { "rejected" },
                "details": l.lines,
            })),
        },
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small inline SVG line chart of `values` (None = no data).
fn sparkline(values: &[Option<f64>], unit: &str, scale_max: Option<f64>) -> String {
    let (w, h) = (220.0, 44.0);
    let present: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let last = values.iter().rev().flatten().next().copied();
    let max = scale_max
        .unwrap_or_else(|| present.iter().copied().fold(0.0, f64::max))
        .max(1e-9);
    let n = values.len().max(2);
    let mut pts = String::new();
    for (i, v) in values.iter().enumerate() {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            let x = i as f64 * w / (n - 1) as f64;
            let y = h - 2.0 - (v / max).min(1.0) * (h - 4.0);
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
    }
    let label = match last {
        Some(v) if v.is_finite() => format!("{v:.2}{unit}"),
        Some(_) => format!("&gt; 10000{unit}"),
        None => "no data".into(),
    };
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><rect width=\"{w}\" height=\"{h}\" rx=\"4\" fill=\"#f3f5f8\"/><polyline fill=\"none\" stroke=\"#3567c9\" stroke-width=\"1.5\" points=\"{pts}\"/></svg><span class=\"last\">{label}</span>"
    )
}

pub(crate) fn html(v: &StatusView) -> String {
    let mut o = String::with_capacity(16 * 1024);
    let now = waygate_telemetry::rfc3339_millis(std::time::SystemTime::now());
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>waygate status</title>
<style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}}
header{{background:#1d2330;color:#fff;padding:.8rem 1.5rem}} header h1{{font-size:1.2rem;margin:0}} header small{{color:#aab}}
main{{padding:1rem 1.5rem;max-width:1200px}} section{{background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.08);padding:1rem;margin-bottom:1rem}}
h2{{font-size:1.05rem;margin:.2rem 0 .6rem}} table{{border-collapse:collapse;width:100%}} td,th{{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;vertical-align:top}}
.ok{{color:#1c7c35;font-weight:600}} .bad{{color:#b3261e;font-weight:600}} .warn{{color:#a15c00;font-weight:600}}
.badge{{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.8rem;background:#fde2e0;color:#b3261e}}
.charts{{display:flex;flex-wrap:wrap;gap:1rem;margin:.5rem 0}} .chart{{font-size:.8rem;color:#5a6375}} .last{{margin-left:.4rem;color:#1d2330;font-weight:600}}
.cause{{border-left:4px solid #b3261e;padding:.4rem .8rem;margin:.6rem 0;background:#fffafa}} code{{font-family:ui-monospace,monospace;font-size:.85em}}
</style></head><body><header><h1>waygate status</h1><small>{now} &middot; refreshes every 5 s &middot; <a style="color:#9bf" href="/status.json">status.json</a></small></header><main>"#
    );
    // Errors first: what is wrong right now, and what to do about it.
    let _ = write!(o, "<section><h2>Recent gateway errors by cause</h2>");
    if v.errors.is_empty() {
        let _ = write!(o, "<p class=\"ok\">No gateway errors recorded.</p>");
    }
    for g in &v.errors {
        let fixes: String = g
            .cause
            .fixes()
            .iter()
            .map(|f| format!("<li>{}</li>", esc(f)))
            .collect();
        let _ = write!(
            o,
            "<div class=\"cause\"><strong>{} &times; {}</strong> <span class=\"badge\">{} {}</span> <code>{}</code> on {}<br>{}<br>What to check:<ul>{}</ul>Latest: <code>{}</code> at {} &mdash; <code>waygate why {}</code></div>",
            g.count,
            esc(g.cause.title()),
            g.cause.status(),
            g.cause.proxy_status(),
            g.cause.name(),
            esc(&g.upstreams.join(", ")),
            esc(g.cause.explanation()),
            fixes,
            esc(&g.last_request_id),
            esc(&g.last_time),
            esc(&g.last_request_id),
        );
    }
    let _ = write!(o, "</section>");
    // Upstreams with trouble first.
    let mut order: Vec<usize> = (0..v.upstreams.len()).collect();
    order.sort_by_key(|&i| {
        let u = &v.upstreams[i];
        let available = u.servers.iter().filter(|s| s.available).count();
        let quiet = !v.recent_errors.contains_key(&u.name);
        (
            available == u.servers.len() && available > 0 && quiet,
            u.name.clone(),
        )
    });
    for i in order {
        let u = &v.upstreams[i];
        let available = u.servers.iter().filter(|s| s.available).count();
        let failing = v.recent_errors.get(&u.name).copied().unwrap_or(0);
        let state = if u.servers.is_empty() || available == 0 {
            "<span class=\"bad\">down</span>".to_owned()
        } else if available < u.servers.len() {
            "<span class=\"warn\">degraded</span>".to_owned()
        } else if failing > 0 {
            format!(
                "<span class=\"warn\">failing requests: {failing} gateway errors in 5 min</span>"
            )
        } else {
            "<span class=\"ok\">operational</span>".to_owned()
        };
        let panic = if u.panic {
            " <span class=\"badge\">panic mode</span>"
        } else {
            ""
        };
        let _ = write!(
            o,
            "<section><h2>upstream {} &mdash; {state}{panic}</h2><small>{} of {} servers available &middot; balance {} &middot; {} in flight</small>",
            esc(&u.name),
            available,
            u.servers.len(),
            u.balance,
            u.in_flight
        );
        let series = |f: &dyn Fn(&UpstreamPoint) -> Option<f64>| -> Vec<Option<f64>> {
            v.history
                .iter()
                .map(|p| p.upstreams.get(i).and_then(f))
                .collect()
        };
        let _ = write!(
            o,
            "<div class=\"charts\"><div class=\"chart\">requests/s (15 min)<br>{}</div><div class=\"chart\">error rate<br>{}</div><div class=\"chart\">p50 first byte<br>{}</div><div class=\"chart\">p99 first byte<br>{}</div></div>",
            sparkline(&series(&|p| Some(p.rps)), "/s", None),
            sparkline(&series(&|p| Some(p.error_rate * 100.0)), "%", Some(100.0)),
            sparkline(&series(&|p| p.p50_ms), " ms", None),
            sparkline(&series(&|p| p.p99_ms), " ms", None),
        );
        let _ = write!(o, "<table><tr><th>server</th><th>state</th><th>health</th><th>admin</th><th>in flight</th><th>latency (EWMA)</th><th>why</th></tr>");
        for s in &u.servers {
            let st = if s.available {
                "<span class=\"ok\">available</span>".to_owned()
            } else if s.ejected_for_ms > 0 {
                format!(
                    "<span class=\"bad\">ejected {} s</span>",
                    s.ejected_for_ms.div_ceil(1000)
                )
            } else {
                "<span class=\"bad\">unavailable</span>".to_owned()
            };
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{st}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{}</td></tr>",
                esc(&s.address),
                s.health,
                s.admin,
                s.in_flight,
                s.ewma_ms,
                esc(&s.reason)
            );
        }
        let _ = write!(o, "</table></section>");
    }
    let r = &v.reloads;
    let _ = write!(
        o,
        "<section><h2>Configuration</h2><small>generation {} &middot; {} reload(s) applied, {} rejected</small>",
        r.generation, r.succeeded, r.failed
    );
    if let Some(last) = &r.last {
        let (class, what) = if last.ok {
            ("ok", "applied")
        } else {
            ("bad", "rejected: the previous config keeps serving")
        };
        let _ = write!(
            o,
            "<p>Last reload at {}: <span class=\"{class}\">{what}</span></p><ul>",
            waygate_telemetry::rfc3339_millis(last.time)
        );
        for line in &last.lines {
            let _ = write!(o, "<li><code>{}</code></li>", esc(line));
        }
        let _ = write!(o, "</ul>");
    }
    let _ = write!(o, "</section>");
    let _ = writeln!(o, "</main></body></html>");
    o
}
