//! `waygate reload`: asks the running gateway (through its admin listener)
//! to read its config file again, and prints what changed or why the new
//! config was rejected.

use std::process::ExitCode;

use crate::admin_client::{admin_target, request, Target};

pub(crate) fn reload(target: Target) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waygate reload: {e}");
            return ExitCode::from(2);
        }
    };
    let asked = rt.block_on(async {
        let (addr, token) = admin_target(target)?;
        request(http::Method::POST, &addr, token.as_deref(), "/reload").await
    });
    match asked {
        Ok((200, body)) => {
            print!("{}", describe(&body));
            ExitCode::SUCCESS
        }
        Ok((status, body)) if body["result"] == "rejected" => {
            eprintln!("reload rejected ({status}): {}", str_of(&body["error"]));
            for line in body["errors"].as_array().into_iter().flatten() {
                eprintln!("  {}", str_of(line));
            }
            ExitCode::FAILURE
        }
        Ok((status, body)) => {
            eprintln!(
                "waygate reload: the admin listener answered {status}: {}",
                str_of(&body["error"])
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("waygate reload: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The report of a successful reload, one change per line.
fn describe(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "reloaded: generation {}", v["generation"]);
    let mut any = false;
    for kind in ["listeners", "routes", "upstreams", "servers", "rate_limits"] {
        for verb in ["added", "removed", "changed"] {
            let names: Vec<String> = v[kind][verb]
                .as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect();
            if !names.is_empty() {
                any = true;
                let _ = writeln!(out, "  {kind} {verb}: {}", names.join(", "));
            }
        }
    }
    if !any {
        let _ = writeln!(out, "  no change");
    }
    let _ = writeln!(
        out,
        "  client connections: {} kept, {} draining",
        v["connections"]["kept"], v["connections"]["draining"]
    );
    for s in v["restart_required"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  [{}] changed: takes effect on restart", str_of(s));
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  warning: {}", str_of(w));
    }
    out
}
