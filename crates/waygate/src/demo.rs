//! `waygate demo`: the gateway in front of built-in upstreams on loopback,
//! some healthy and some broken in each way the gateway explains, with the
//! curl lines to try. Its config is generated as TOML and goes through the
//! same validation as a user's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use waygate_proxy::Gateway;
use waygate_telemetry::AccessLog;
use waygate_test_util::{refused_addr, Behavior, Blackhole, Upstream};

/// (path, upstream name, behavior, what it shows)
fn broken() -> Vec<(&'static str, &'static str, Behavior, &'static str)> {
    use Behavior::*;
    vec![
        (
            "/app-error",
            "app_error",
            Status(503),
            "the application's own 503, passed through unchanged (no Proxy-Status)",
        ),
        (
            "/garbage",
            "garbage",
            GarbageStatusLine,
            "502 http_protocol_error: the upstream does not speak HTTP",
        ),
        (
            "/reset",
            "reset",
            ResetAfterRequest,
            "502 connection_terminated: reset before answering",
        ),
        (
            "/close",
            "close",
            CloseWithoutAnswer,
            "502 http_response_incomplete: closed before answering",
        ),
        (
            "/slow",
            "slow",
            SlowHead(Duration::from_secs(30)),
            "504 http_response_timeout after 2s",
        ),
        (
            "/huge-headers",
            "huge",
            OversizeHeaders(100 * 1024),
            "502 http_response_header_section_size",
        ),
        (
            "/ambiguous",
            "ambiguous",
            ContentLengthAndChunked,
            "502 http_protocol_error: Content-Length and Transfer-Encoding",
        ),
        (
            "/bad-chunk",
            "bad_chunk",
            InvalidChunk,
            "502 http_protocol_error: invalid chunk",
        ),
        (
            "/truncated",
            "truncated",
            TruncatedBody,
            "200 whose body is cut off: curl reports a transfer error, never a fake success",
        ),
        (
            "/slow-body",
            "slow_body",
            SlowBody(Duration::from_secs(30)),
            "200 whose body stalls: aborted after the 2s body idle timeout",
        ),
    ]
}

pub(crate) fn demo(listen: SocketAddr) -> ExitCode {
    let rt = match crate::run::runtime(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("waygate demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waygate demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let app1 = Upstream::start(Behavior::Hello("app-1".into())).await?;
    let app2 = Upstream::start(Behavior::Hello("app-2".into())).await?;
    let blackhole = Blackhole::start().await?;
    let mut keep = vec![app1, app2];

    let mut toml = format!(
        "[[listener]]\nname = \"demo\"\nlisten = \"{listen}\"\n\n\
         [upstream.app]\nservers = [\"{}\", \"{}\"]\nbalance = \"round_robin\"\n\n\
         [upstream.refused]\nservers = [\"{}\"]\n[upstream.refused.retry]\nmax_attempts = 1\n\n\
         [upstream.dns]\nservers = [\"no-such-host.invalid:80\"]\n[upstream.dns.retry]\nmax_attempts = 1\n\n\
         [upstream.blackhole]\nservers = [\"{}\"]\nconnect_timeout = \"1s\"\n[upstream.blackhole.retry]\nmax_attempts = 1\n\n\
         [upstream.empty]\nservers = []\n\n",
        keep[0].addr,
        keep[1].addr,
        refused_addr(),
        blackhole.addr
    );
    let mut routes = String::from("[[route]]\npath_prefix = \"/\"\nupstream = \"app\"\n\n");
    for (path, name, _, _) in [
        ("/refused", "refused", (), ()),
        ("/dns", "dns", (), ()),
        ("/connect-timeout", "blackhole", (), ()),
        ("/no-server", "empty", (), ()),
    ] {
        let _ = write!(
            routes,
            "[[route]]\npath_prefix = \"{path}\"\nupstream = \"{name}\"\n\n"
        );
    }
    for (path, name, behavior, _) in broken() {
        let up = Upstream::start(behavior).await?;
        let _ = write!(
            toml,
            "[upstream.{name}]\nservers = [\"{}\"]\nresponse_timeout = \"2s\"\nbody_idle_timeout = \"2s\"\n\n[upstream.{name}.retry]\nmax_attempts = 1\n\n",
            up.addr
        );
        let _ = write!(
            routes,
            "[[route]]\npath_prefix = \"{path}\"\nupstream = \"{name}\"\n\n"
        );
        keep.push(up);
    }
    toml.push_str(&routes);
    toml.push_str("[access_log]\ntarget = \"stdout\"\n");

    let loaded = waygate_config::parse(&toml, "<demo>", Path::new("."))
        .map_err(|d| anyhow::anyhow!("demo config is invalid: {:?}", d))?;
    let gateway = Gateway::build(&loaded.config, AccessLog::stdout()?)?
        .with_sample_interval(Duration::from_secs(2));
    let bound = gateway.bind().await?;
    // The admin listener on a free loopback port, for `waygate why`.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin_addr = admin.local_addr()?;
    tokio::spawn(waygate_admin::serve(
        admin,
        gateway.clone(),
        None,
        std::future::pending(),
    ));
    print_guide(listen, admin_addr);
    gateway.serve(bound, crate::run::shutdown_signal()).await;
    drop(keep);
    drop(blackhole);
    Ok(())
}

fn print_guide(listen: SocketAddr, admin: SocketAddr) {
    let base = format!("http://{listen}");
    let mut lines: Vec<(String, &str)> = vec![
        (
            format!("curl -i {base}/"),
            "200 from app-1, then app-2 (round robin); note X-Request-Id and Via",
        ),
        (
            format!("curl -i {base}/refused"),
            "502 connection_refused: nothing listens on that port",
        ),
        (
            format!("curl -i {base}/dns"),
            "502 dns_error: the upstream's host name does not resolve",
        ),
        (
            format!("curl -i {base}/connect-timeout"),
            "504 connection_timeout after 1s",
        ),
        (
            format!("curl -i {base}/no-server"),
            "503 destination_unavailable with Retry-After",
        ),
    ];
    for (path, _, _, what) in broken() {
        lines.push((format!("curl -i {base}{path}"), what));
    }
    let mut out = String::new();
    let _ = writeln!(out, "\nwaygate demo: the gateway listens on {base}, in front of built-in upstreams on loopback.");
    let _ = writeln!(out, "Every failure below is answered truthfully: the right status, a Proxy-Status header naming the cause, a request id.\n");
    for (cmd, what) in &lines {
        let _ = writeln!(out, "  {cmd:<52} # {what}");
    }
    let _ = writeln!(
        out,
        "\nThe same error as a browser sees it:  curl -H 'Accept: text/html' {base}/refused"
    );
    let _ = writeln!(
        out,
        "And as an API client sees it:         curl -H 'Accept: application/json' {base}/refused"
    );
    let _ = writeln!(
        out,
        "\nWhy did a request fail? Take its X-Request-Id and ask:"
    );
    let _ = writeln!(
        out,
        "  cargo run --release -- why <request-id> --admin {admin}"
    );
    let _ = writeln!(
        out,
        "Servers and their state: curl http://{admin}/upstreams"
    );
    let _ = writeln!(out, "Recent gateway errors:   curl http://{admin}/errors");
    let _ = writeln!(
        out,
        "One JSON access-log line per request follows on stdout. Ctrl-C stops the demo.\n"
    );
    eprint!("{out}");
}
