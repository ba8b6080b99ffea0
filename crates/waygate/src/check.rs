//! `waygate check`: validate a config without starting anything, and with
//! `--probe`, connect to every upstream server (and its health path) and
//! say, per server, whether it is ready for traffic.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use waygate_config::UpstreamProtocol;
use waygate_config::{Config, Diagnostic};
use waygate_upstream::{Probe, ProbeSpec, TlsConnect, Transport, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Longest wait for a probed server's answer when it has no health check.
const PROBE_RESPONSE_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// One probed server address.
struct Probed {
    upstream: String,
    server: String,
    probe: Result<Probe, String>,
}

pub(crate) fn check(path: &Path, format: Format, probe: bool) -> ExitCode {
    let (config, errors, warnings) = match waygate_config::load(path) {
        Ok(loaded) => (Some(loaded.config), Vec::new(), loaded.warnings),
        Err(diags) => {
            let (e, w) = diags.into_iter().partition(Diagnostic::is_error);
            (None, e, w)
        }
    };
    let ok = config.is_some();
    let probed = match (&config, probe) {
        (Some(c), true) => Some(run_probes(c)),
        _ => None,
    };
    let probes_ok = probed.as_ref().is_none_or(|p| {
        p.iter()
            .all(|x| x.probe.as_ref().is_ok_and(|p| p.verdict.is_ok()))
    });
    match format {
        Format::Text => {
            if !errors.is_empty() {
                eprintln!("errors ({}):", errors.len());
                for e in &errors {
                    eprintln!("{e}");
                }
            }
            if !warnings.is_empty() {
                eprintln!("warnings ({}):", warnings.len());
                for w in &warnings {
                    eprintln!("{w}");
                }
            }
            if ok {
                println!(
                    "{}: valid ({} warning{})",
                    path.display(),
                    warnings.len(),
                    if warnings.len() == 1 { "" } else { "s" }
                );
            } else {
                eprintln!(
                    "{}: {} error(s), {} warning(s)",
                    path.display(),
                    errors.len(),
                    warnings.len()
                );
            }
            if let Some(probed) = &probed {
                print!("{}", probe_text(probed));
            }
        }
        Format::Json => {
            let list = |ds: &[Diagnostic]| -> Vec<serde_json::Value> {
                ds.iter()
                    .map(|d| {
                        serde_json::json!({
                            "file": d.file, "line": d.line, "column": d.column,
                            "message": d.message, "hint": d.hint,
                        })
                    })
                    .collect()
            };
            let mut out = serde_json::json!({
                "valid": ok,
                "errors": list(&errors),
                "warnings": list(&warnings),
            });
            if let Some(probed) = &probed {
                out["probe"] = probe_json(probed);
                out["probe_ok"] = probes_ok.into();
            }
            println!("{out}");
        }
    }
    if ok && probes_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Probes every address of every server, all at once.
fn run_probes(config: &Config) -> Vec<Probed> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return vec![Probed {
                upstream: "-".into(),
                server: "-".into(),
                probe: Err(format!("cannot start a runtime: {e}")),
            }]
        }
    };
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (order, (u, s)) in config
            .upstreams
            .iter()
            .flat_map(|u| u.servers.iter().map(move |s| (u, s)))
            .enumerate()
        {
            let transport = Transport {
                tls: u
                    .tls
                    .as_ref()
                    .and_then(|t| TlsConnect::new(t, u.protocol).ok()),
                h2: u.protocol != UpstreamProtocol::Http1,
            };
            let spec = match &u.health_check {
                Some(h) => ProbeSpec {
                    connect_timeout: u.connect_timeout,
                    ..ProbeSpec::from_check(&s.addr, h, transport)
                },
                None => ProbeSpec {
                    request: Some(("/".into(), s.addr.to_string())),
                    expected: None,
                    connect_timeout: u.connect_timeout,
                    response_timeout: u.response_timeout.min(PROBE_RESPONSE_MAX),
                    is_health_check: false,
                    host: s.addr.host.clone(),
                    transport,
                },
            };
            let (upstream, addr) = (u.name.clone(), s.addr.clone());
            tasks.spawn(async move {
                let server = addr.to_string();
                let found = match waygate_upstream::resolve(&addr).await {
                    Ok(targets) => {
                        let mut v = Vec::new();
                        for t in targets {
                            v.push(Ok(waygate_upstream::probe_addr(t, &spec).await));
                        }
                        v
                    }
                    Err(e) => vec![Err(e)],
                };
                (order, upstream, server, found)
            });
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(x) = done {
                all.push(x);
            }
        }
        all.sort_by_key(|(order, ..)| *order);
        all.into_iter()
            .flat_map(|(_, upstream, server, found)| {
                found.into_iter().map(move |probe| Probed {
                    upstream: upstream.clone(),
                    server: server.clone(),
                    probe,
                })
            })
            .collect()
    })
}

fn ms(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0)
}

fn probe_text(probed: &[Probed]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut last = "";
    for p in probed {
        if p.upstream != last {
            let _ = writeln!(out, "probe: upstream {}", p.upstream);
            last = &p.upstream;
        }
        match &p.probe {
            Ok(x) => {
                let mut timing = Vec::new();
                if let Some(c) = ms(x.connect) {
                    timing.push(format!("connect {c} ms"));
                }
                if let Some(r) = ms(x.response) {
                    timing.push(format!("response {r} ms"));
                }
                let shown = if x.address.to_string() == p.server {
                    p.server.clone()
                } else {
                    format!("{} ({})", p.server, x.address)
                };
                let _ = writeln!(
                    out,
                    "  {shown:<24} {:<14} {}{}",
                    x.verdict.name(),
                    x.detail,
                    if timing.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", timing.join(", "))
                    }
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "  {:<24} {:<14} {e}",
                    p.server,
                    Verdict::DnsError.name()
                );
            }
        }
    }
    let bad = probed
        .iter()
        .filter(|p| !p.probe.as_ref().is_ok_and(|x| x.verdict.is_ok()))
        .count();
    let _ = writeln!(
        out,
        "probe: {} of {} server addresses ready{}",
        probed.len() - bad,
        probed.len(),
        if bad > 0 {
            "; fix the others before deploying"
        } else {
            ""
        }
    );
    out
}

fn probe_json(probed: &[Probed]) -> serde_json::Value {
    probed
        .iter()
        .map(|p| match &p.probe {
            Ok(x) => serde_json::json!({
                "upstream": p.upstream, "server": p.server, "address": x.address.to_string(),
                "result": x.verdict.name(), "ok": x.verdict.is_ok(), "detail": x.detail,
                "connect_ms": ms(x.connect), "response_ms": ms(x.response),
            }),
            Err(e) => serde_json::json!({
                "upstream": p.upstream, "server": p.server, "address": null,
                "result": Verdict::DnsError.name(), "ok": false, "detail": e,
                "connect_ms": null, "response_ms": null,
            }),
        })
        .collect()
}
