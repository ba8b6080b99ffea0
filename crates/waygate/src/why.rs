//! `waygate why <request-id>`: asks the admin listener what happened to a
//! request the gateway answered with an error (or cut off), and explains it
//! in plain words with what to check.

use std::process::ExitCode;

use crate::admin_client::{admin_target, get, Target};

pub(crate) fn why(id: &str, target: Target) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waygate why: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(fetch(id, target)) {
        Ok((200, body)) => {
            print!("{}", explain(&body));
            ExitCode::SUCCESS
        }
        Ok((404, body)) => {
            let msg = body["error"].as_str().unwrap_or("not found");
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
        Ok((status, body)) => {
            eprintln!(
                "waygate why: the admin listener answered {status}: {}",
                body["error"].as_str().unwrap_or("")
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("waygate why: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn fetch(id: &str, t: Target) -> anyhow::Result<(u16, serde_json::Value)> {
    let (addr, token) = admin_target(t)?;
    let (status, mut body) = get(&addr, token.as_deref(), &format!("/errors/{id}")).await?;
    if status == 200 {
        // The upstream's servers as they are now, to tell whether it still fails.
        if let Ok((200, ups)) = get(&addr, token.as_deref(), "/upstreams").await {
            let name = body["record"]["upstream"].clone();
            if let Some(u) = ups["upstreams"]
                .as_array()
                .and_then(|a| a.iter().find(|u| u["name"] == name))
            {
                body["upstream_now"] = u.clone();
            }
        }
    }
    Ok((status, body))
}

/// The human explanation of an `/errors/<id>` answer.
pub(crate) fn explain(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let r = &v["record"];
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("-").to_owned();
    let mut out = String::new();
    let _ = writeln!(out, "Request {} at {}", s(&v["request_id"]), s(&r["time"]));
    let _ = writeln!(
        out,
        "  {} {}{} from {} on listener {}, route {} -> upstream {}",
        s(&r["method"]),
        s(&r["host"]),
        s(&r["path"]),
        s(&r["client"]),
        s(&r["listener"]),
        s(&r["route"]),
        s(&r["upstream"])
    );
    let who = match r["side"].as_str() {
        Some("gateway") => "the gateway answered",
        Some("downstream") => "the client caused",
        _ => "the upstream answered",
    };
    let aborted = if r["aborted"] == true {
        ", then the response was cut off"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  Outcome: {who} {}{aborted} - cause {} (Proxy-Status error={})",
        r["status"],
        s(&v["cause"]),
        s(&r["proxy_status"])
    );
    let _ = writeln!(out, "  What happened: {}", s(&v["explanation"]));
    if let Some(attempts) = r["attempts"].as_array().filter(|a| !a.is_empty()) {
        let _ = writeln!(out, "  Attempts:");
        for (i, a) in attempts.iter().enumerate() {
            let conn = if a["reused"] == true {
                "pooled connection"
            } else {
                "new connection"
            };
            let panic = if a["panic"] == true {
                ", panic mode"
            } else {
                ""
            };
            let mut times = String::new();
            if let Some(c) = a["connect_ms"].as_f64() {
                let _ = write!(times, ", connected in {c:.1} ms");
            }
            if let Some(f) = a["first_byte_ms"].as_f64() {
                let _ = write!(times, ", answered after {f:.1} ms");
            }
            let _ = writeln!(
                out,
                "    {}. {} (picked by {}{panic}, {conn}{times}): {}",
                i + 1,
                s(&a["server"]),
                s(&a["pick"]),
                s(&a["outcome"])
            );
        }
    }
    if let Some(retry) = r["retry"].as_str() {
        let _ = writeln!(out, "  Retry decision: {retry}");
    }
    if let Some(detail) = r["detail"].as_str() {
        let _ = writeln!(out, "  Detail: {detail}");
    }
    let _ = writeln!(out, "  Timings: total {} ms", r["duration_ms"]);
    if let Some(servers) = v["upstream_now"]["servers"].as_array() {
        let _ = writeln!(
            out,
            "  Servers of upstream {} now:",
            s(&v["upstream_now"]["name"])
        );
        for sv in servers {
            let state = if sv["available"] == true {
                "available"
            } else {
                "NOT available"
            };
            let _ = writeln!(
                out,
                "    {} {state} (health {}, {}): {}",
                s(&sv["address"]),
                s(&sv["health"]),
                s(&sv["admin"]),
                s(&sv["reason"])
            );
        }
    }
    if let Some(fixes) = v["fixes"].as_array() {
        let _ = writeln!(out, "  What to check:");
        for f in fixes {
            let _ = writeln!(out, "    - {}", s(f));
        }
    }
    out
}
