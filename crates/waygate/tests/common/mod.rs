//! Helpers for end-to-end tests: an in-process gateway on `127.0.0.1:0`
//! built from TOML text, a raw HTTP/1.1 client that can tell a complete
//! response from a truncated one, and access-log lookup by request id.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use waygate_proxy::Gateway;
use waygate_telemetry::AccessLog;

/// A gateway running in this process. Stops when dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// Every listener's address, in config order (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    pub log_path: PathBuf,
    /// The config file, which `rewrite` changes and a reload reads.
    pub config_path: PathBuf,
    pub gateway: Gateway,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TestGateway {
    /// Starts a gateway whose config is `[[listener]]` on 127.0.0.1:0 plus `rest`.
    pub async fn start(rest: &str) -> Self {
        Self::start_with("", rest).await
    }

    /// Like `start`, with `listener` lines added to the `[[listener]]` table.
    pub async fn start_with(listener: &str, rest: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("access.log");
        let config_path = dir.path().join("waygate.toml");
        let toml = config_text(&log_path, listener, rest);
        std::fs::write(&config_path, &toml).expect("write config");
        let loaded = waygate_config::load(&config_path)
            .unwrap_or_else(|d| panic!("invalid test config: {d:#?}\n{toml}"));
        let log = AccessLog::file(&log_path).expect("open access log");
        let gateway = Gateway::build(&loaded.config, log)
            .expect("build")
            .with_config_path(&config_path);
        let bound = gateway.bind().await.expect("bind");
        let addrs = bound.local_addrs();
        let addr = addrs[0];
        let (stop, stopped) = oneshot::channel::<()>();
        let mut admin = None;
        if let Some(a) = &loaded.config.admin {
            let l = tokio::net::TcpListener::bind(a.listen)
                .await
                .expect("bind admin");
            admin = Some(l.local_addr().expect("admin address"));
            tokio::spawn(waygate_admin::serve(
                l,
                gateway.clone(),
                a.token.clone(),
                std::future::pending(),
            ));
        }
        tokio::spawn(gateway.clone().serve(bound, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            addrs,
            admin,
            log_path,
            config_path,
            gateway,
            _dir: dir,
            _stop: stop,
        }
    }

    /// Writes a new config file made like the first one (`listener` lines
    /// and `rest`); a reload then reads it.
    pub fn rewrite(&self, listener: &str, rest: &str) {
        std::fs::write(
            &self.config_path,
            config_text(&self.log_path, listener, rest),
        )
        .expect("write config");
    }

    /// The access-log line of `request_id`, waiting up to 5 s for it.
    pub async fn log_line(&self, request_id: &str) -> serde_json::Value {
        for _ in 0..500 {
            if let Ok(text) = std::fs::read_to_string(&self.log_path) {
                for line in text.lines() {
                    let v: serde_json::Value =
                        serde_json::from_str(line).expect("log line is JSON");
                    if v["request_id"] == request_id {
                        return v;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no access-log line for request {request_id}");
    }

    /// All access-log lines so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }
}

/// An upstream section for `name` with `servers`.
pub fn upstream(name: &str, servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[upstream.{name}]\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
}

pub fn route(prefix: &str, upstream: &str) -> String {
    format!("[[route]]\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\n\n")
}

/// A response as read off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (all Content-Length bytes, or the
    /// terminating chunk); false means the response was cut off.
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id on every response")
            .to_owned()
    }

    /// The RFC 9209 error type in Proxy-Status.
    pub fn proxy_error(&self) -> Option<String> {
        let ps = self.header("proxy-status")?;
        ps.split(';')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("error="))
            .map(str::to_owned)
    }
}

/// A port-0 `[[listener]]` named "public" with `listener` lines, the access
/// log to `log`, and `rest`.
fn config_text(log: &std::path::Path, listener: &str, rest: &str) -> String {
    format!(
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n{listener}\n[access_log]\ntarget = \"{}\"\n\n{rest}",
        log.display()
    )
}

/// The value of a per-upstream gauge `name` for the upstream `app`, read
/// from `/metrics` on the admin listener.
pub async fn upstream_gauge(admin: SocketAddr, name: &str) -> i64 {
    let text = get(admin, "/metrics", &[]).await.text();
    let prefix = format!("{name}{{upstream=\"app\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| panic!("{name} on /metrics"))
}

/// Sends `GET path` with extra header lines and `Connection: close`, reads
/// the whole response (bounded by 20 s).
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: test.local\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    send_raw(addr, req.as_bytes()).await
}

pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.expect("connect to gateway");
    s.write_all(request).await.expect("write request");
    read_response(&mut s).await
}

/// Reads one response and then to EOF.
pub async fn read_response(s: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let read = async {
        let mut tmp = vec![0u8; 65536];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("response within 20 s");
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let (body, complete) = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else if let Some(cl) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        (rest[..rest.len().min(cl)].to_vec(), rest.len() >= cl)
    } else {
        (rest.to_vec(), true)
    };
    RawResponse {
        status,
        headers,
        body,
        complete,
    }
}

fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size_str = String::from_utf8_lossy(&rest[..line_end]);
        let Ok(size) = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (body, false);
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..rest.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Whether the external program `name` (curl, h2load) can run. Outside CI
/// a missing one skips the test that needs it, with a message; in CI
/// (`CI` set, as `.ci/run` does after installing them) it is a failure.
pub fn have(name: &str) -> bool {
    let ok = std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} must be installed in CI (.ci/run installs it)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    ok
}
