//! The `waygate` binary as a process: streaming large bodies both ways in
//! bounded memory, graceful shutdown with a request in flight, and
//! `waygate check` diagnostics.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waygate_test_util::{Behavior, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_waygate");

/// A gateway process; killed if still running when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// The config file it runs with.
    cfg: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Runs `waygate run` on a config made of a port-0 listener and `rest`,
    /// and waits for its "listening" log line to learn the port.
    fn start(rest: &str, workers: usize) -> Self {
        Self::start_with_log(rest, workers, "json")
    }

    fn start_with_log(rest: &str, workers: usize, format: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("waygate.toml");
        let log = dir.path().join("access.log");
        std::fs::write(
            &cfg,
            format!(
                "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[access_log]\ntarget = \"{}\"\nformat = \"{format}\"\n\n{rest}",
                log.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&cfg)
            .args(["--workers", &workers.to_string()])
            // The upgrade socket goes in the temp directory: this test's.
            .env("TMPDIR", dir.path())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn waygate");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("waygate starts and logs its address");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "listening" {
                break v["fields"]["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        Self {
            child,
            addr,
            cfg,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The upgrade sockets in this process's temp directory.
    fn upgrade_sockets(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self._dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect()
    }

    /// Replaces the config file: the same listener and access log, then `rest`.
    fn rewrite(&self, rest: &str) {
        let head = std::fs::read_to_string(&self.cfg).unwrap();
        let keep = &head[..head.find("\n\n[access_log]").unwrap()];
        let log = self._dir.path().join("access.log");
        std::fs::write(
            &self.cfg,
            format!(
                "{keep}\n\n[access_log]\ntarget = \"{}\"\n\n{rest}",
                log.display()
            ),
        )
        .unwrap();
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits up to `d` for the process to exit.
    fn wait_exit(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let step = Duration::from_millis(20);
        for _ in 0..=(d.as_millis() / step.as_millis()) {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(step);
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stream_bytes() -> u64 {
    std::env::var("WAYGATE_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let n = stream_bytes();
    let source = Upstream::start(Behavior::Source(n)).await.unwrap();
    let sink = Upstream::start(Behavior::Sink).await.unwrap();
    let gw = Proc::start(
        &format!(
            "[upstream.source]\nservers = [\"{}\"]\n\n[upstream.sink]\nservers = [\"{}\"]\n\n\
             [[route]]\npath_prefix = \"/down\"\nupstream = \"source\"\n\n[[route]]\npath_prefix = \"/up\"\nupstream = \"sink\"\n",
            source.addr, sink.addr
        ),
        2,
    );
    let baseline = gw.peak_rss_kib();

    // Download: count the bytes, never hold them.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /down HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let download = async {
        loop {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                break;
            }
            total += k as u64;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), download)
        .await
        .expect("download in time");
    let head_len = total - n;
    assert!(
        head_len < 1024,
        "the whole body arrived (got {total} bytes for a {n}-byte body)"
    );

    // Upload with Content-Length.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        format!("POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let block = vec![b'y'; 256 * 1024];
    let upload = async {
        let mut left = n;
        while left > 0 {
            let k = left.min(block.len() as u64) as usize;
            s.write_all(&block[..k]).await.unwrap();
            left -= k as u64;
        }
        common::read_response(&mut s).await
    };
    let r = tokio::time::timeout(Duration::from_secs(240), upload)
        .await
        .expect("upload in time");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        format!("{n}\n"),
        "the upstream received every byte"
    );

    let peak = gw.peak_rss_kib();
    eprintln!("streamed {n} bytes each way; gateway peak RSS {peak} KiB (baseline {baseline} KiB)");
    assert!(
        peak < baseline + 64 * 1024,
        "memory must stay bounded: peak {peak} KiB vs baseline {baseline} KiB after {n} bytes each way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let slow = Upstream::start(Behavior::SlowHead(Duration::from_millis(800)))
        .await
        .unwrap();
    let mut gw = Proc::start(
        &format!(
            "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
            slow.addr
        ),
        1,
    );
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { common::get(addr, "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.upgrade_sockets().len(), 1, "the upgrade socket is bound");
    gw.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections are accepted while draining"
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    assert_eq!(r.text(), "finally\n");
    let (status, gw) = tokio::task::spawn_blocking(move || {
        let st = gw.wait_exit(Duration::from_secs(10));
        (st, gw)
    })
    .await
    .unwrap();
    let status = status.expect("exited after draining");
    assert!(
        status.success(),
        "exit 0 after a graceful drain, got {status:?}"
    );
    assert_eq!(
        gw.upgrade_sockets(),
        Vec::<std::path::PathBuf>::new(),
        "the upgrade socket is removed at exit"
    );
}

#[test]
fn check_reports_line_and_column_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/waygate.toml"),
        &good,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("upstream = \"app\"", "upstream = \"ap\"");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:14:12: error: upstream `ap` referenced by route 2 is not defined; did you mean `app`?"),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .args(["check", "--format", "json", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 14);
    assert_eq!(v["errors"][0]["column"], 12);

    // `run` refuses an invalid config with the same message.
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `app`?"));

    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("waygate "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_log_format_and_reopen_on_sigusr1() {
    let up = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let gw = Proc::start_with_log(
        &format!(
            "[upstream.app]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"app\"\n",
            up.addr
        ),
        1,
        "combined",
    );
    let log = gw._dir.path().join("access.log");
    let r = common::get(gw.addr, "/first?x=1", &[]).await;
    assert_eq!(r.status, 200);
    let read_until = |path: std::path::PathBuf, needle: String| async move {
        for _ in 0..300 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(&needle) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{needle} never appeared in {}", path.display());
    };
    let text = read_until(log.clone(), r.request_id()).await;
    let line = text.lines().find(|l| l.contains(&r.request_id())).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /first?x=1 HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains(" side=upstream cause=- "), "{line}");

    // logrotate: move the file away, signal, and the next line goes to a new file.
    let rotated = gw._dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal("-USR1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r2 = common::get(gw.addr, "/second", &[]).await;
    let fresh = read_until(log.clone(), r2.request_id()).await;
    assert!(
        !fresh.contains(&r.request_id()),
        "the new file starts fresh"
    );
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains(&r.request_id()));
}

/// Runs `waygate <args> --config <cfg>` off the runtime's threads.
async fn waygate(args: &[&str], cfg: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--config").arg(cfg);
    // Where `Proc` put the upgrade socket.
    if let Some(dir) = cfg.parent() {
        cmd.env("TMPDIR", dir);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GETs `path` until the body starts with `want` (up to 5 s).
async fn until_body(addr: SocketAddr, path: &str, want: &str) -> bool {
    for _ in 0..250 {
        let r = common::get(addr, path, &[]).await;
        if r.status == 200 && r.text().starts_with(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_on_sighup_with_waygate_reload_and_on_file_change() {
    let a = Upstream::start(Behavior::Hello("a".into())).await.unwrap();
    let b = Upstream::start(Behavior::Hello("b".into())).await.unwrap();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{}\"\n\n", free_port());
    let base = format!(
        "{admin}[upstream.a]\nservers = [\"{}\"]\n\n[upstream.b]\nservers = [\"{}\"]\n\n[[route]]\nupstream = \"a\"\n",
        a.addr, b.addr
    );
    let p = Proc::start(&base, 1);
    assert!(until_body(p.addr, "/new", "hello from a").await);

    // SIGHUP.
    p.rewrite(&format!(
        "{base}\n[[route]]\nname = \"new\"\npath_prefix = \"/new\"\nupstream = \"b\"\n"
    ));
    p.signal("-HUP");
    assert!(
        until_body(p.addr, "/new", "hello from b").await,
        "SIGHUP applied the new route"
    );

    // `waygate reload` with an invalid config: rejected, exit 1, old config serves.
    p.rewrite(&format!("{base}\n[[route]]\nupstream = \"nope\"\n"));
    let out = waygate(&["reload"], &p.cfg).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("reload rejected (422)"), "{stderr}");
    assert!(
        stderr.contains("waygate.toml:") && stderr.contains("`nope`"),
        "{stderr}"
    );
    assert!(until_body(p.addr, "/new", "hello from b").await);

    // `waygate reload` with a valid one: what changed, exit 0.
    p.rewrite(&format!(
        "{base}\n[[route]]\nname = \"newer\"\npath_prefix = \"/newer\"\nupstream = \"b\"\n"
    ));
    let out = waygate(&["reload"], &p.cfg).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reloaded: generation"), "{stdout}");
    assert!(stdout.contains("routes added: newer"), "{stdout}");
    assert!(stdout.contains("routes removed: new"), "{stdout}");
    assert!(until_body(p.addr, "/newer", "hello from b").await);

    drop(p);

    // watch = true: a changed file is picked up without a signal.
    let watched = format!("[gateway]\nwatch = true\n\n{base}");
    let p = Proc::start(&watched, 1);
    assert!(until_body(p.addr, "/watched", "hello from a").await);
    p.rewrite(&format!(
        "{watched}\n[[route]]\nname = \"watched\"\npath_prefix = \"/watched\"\nupstream = \"b\"\n"
    ));
    assert!(
        until_body(p.addr, "/watched", "hello from b").await,
        "file change applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_classifies_each_kind_of_broken_server() {
    use std::sync::atomic::AtomicU16;
    use std::sync::Arc;
    let healthy = Upstream::start(Behavior::HelloWithHealth(
        "ok".into(),
        Arc::new(AtomicU16::new(200)),
    ))
    .await
    .unwrap();
    let failing = Upstream::start(Behavior::HelloWithHealth(
        "sick".into(),
        Arc::new(AtomicU16::new(500)),
    ))
    .await
    .unwrap();
    let garbage = Upstream::start(Behavior::GarbageStatusLine).await.unwrap();
    let hole = waygate_test_util::Blackhole::start().await.unwrap();
    let refused = waygate_test_util::refused_addr();
    let plain = Upstream::start(Behavior::Hello("plain".into()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("waygate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
             [upstream.checked]\nservers = [\"{}\", \"{}\", \"{}\", \"{}\", \"{}\"]\nconnect_timeout = \"300ms\"\n\
             [upstream.checked.health_check]\npath = \"/healthz\"\ntimeout = \"500ms\"\n\n\
             [upstream.plain]\nservers = [\"{}\", \"no-such-host.invalid:80\"]\n\n\
             [[route]]\nupstream = \"checked\"\n\n[[route]]\npath_prefix = \"/plain\"\nupstream = \"plain\"\n",
            healthy.addr, failing.addr, refused, hole.addr, garbage.addr, plain.addr
        ),
    )
    .unwrap();
    let run = |format: &'static str| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .args(["check", "--probe", "--format", format, "--config"])
                .arg(&cfg)
                .output()
                .unwrap()
        })
    };
    let out = run("json").await.unwrap();
    assert_eq!(out.status.code(), Some(1), "not every server is ready");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    let results: Vec<(String, String)> = v["probe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["server"].as_str().unwrap().to_owned(),
                p["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        (healthy.addr.to_string(), "healthy"),
        (failing.addr.to_string(), "unhealthy"),
        (refused.to_string(), "refused"),
        (hole.addr.to_string(), "timeout"),
        (garbage.addr.to_string(), "bad_http"),
        (plain.addr.to_string(), "reachable"),
        ("no-such-host.invalid:80".to_owned(), "dns_error"),
    ];
    let want: Vec<(String, String)> = want.into_iter().map(|(a, b)| (a, b.to_owned())).collect();
    assert_eq!(results, want);
    let first = &v["probe"][0];
    assert!(first["connect_ms"].as_f64().is_some() && first["response_ms"].as_f64().is_some());
    assert_eq!(
        v["probe"][1]["detail"],
        "GET /healthz answered 500 (expected 200-399)"
    );

    let out = run("text").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probe: upstream checked"), "{text}");
    assert!(
        text.contains("probe: 2 of 7 server addresses ready"),
        "{text}"
    );
}

/// Kills a process by pid when dropped (the upgraded process is not our child).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_upgrade_under_load_refuses_and_fails_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let fast = Upstream::start(Behavior::Hello("app".into()))
        .await
        .unwrap();
    let slow = Upstream::start(Behavior::SlowHead(Duration::from_millis(800)))
        .await
        .unwrap();
    let admin_port = free_port();
    let rest = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[upstream.app]\nservers = [\"{}\"]\n\n[upstream.slow]\nservers = [\"{}\"]\n\n\
         [[route]]\nupstream = \"app\"\n\n[[route]]\npath_prefix = \"/slow\"\nupstream = \"slow\"\n",
        fast.addr, slow.addr
    );
    let mut old = Proc::start(&rest, 1);
    let addr = old.addr;
    // Steady load: a new connection per request, so a refused connection shows.
    #[derive(Default)]
    struct Counts {
        ok: AtomicU64,
        failed: AtomicU64,
        refused: AtomicU64,
        stop: AtomicBool,
    }
    let counts = Arc::new(Counts::default());
    let mut load = Vec::new();
    for _ in 0..4 {
        let c = counts.clone();
        load.push(tokio::spawn(async move {
            while !c.stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let _ = s
                    .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
                let ok = buf.starts_with(b"HTTP/1.1 200") && buf.ends_with(b"/\n");
                let counter = if ok { &c.ok } else { &c.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // An upgrade to a config the new process rejects fails, and changes nothing.
    old.rewrite(&format!("{rest}\n[[route]]\nupstream = \"nope\"\n"));
    let out = waygate(&["upgrade"], &old.cfg).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("before taking over"), "{stderr}");
    old.rewrite(&rest);
    // A request in flight on the old process across the hand-over.
    let in_flight = tokio::spawn(async move { common::get(addr, "/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = waygate(&["upgrade"], &old.cfg).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_pid: u32 = stdout
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("the new pid in the output");
    let _new = KillOnDrop(new_pid);
    assert_ne!(new_pid, old.pid());
    // The old process finishes the in-flight request, then exits 0.
    let r = in_flight.await.unwrap();
    assert_eq!(
        r.status, 200,
        "the in-flight request finished on the old process"
    );
    let status = tokio::task::spawn_blocking(move || {
        let st = old.wait_exit(Duration::from_secs(10));
        (st, old)
    })
    .await
    .unwrap();
    assert!(
        status.0.is_some_and(|s| s.success()),
        "old exits 0 after draining: {:?}",
        status.0
    );
    // The upgrade socket's path now belongs to the new process: the old
    // one left it in place when it exited.
    assert_eq!(
        status.1.upgrade_sockets().len(),
        1,
        "the new process's upgrade socket is still there"
    );
    // Load goes on against the new process alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    counts.stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed, refused) = (
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
    );
    assert_eq!((failed, refused), (0, 0), "{ok} requests succeeded");
    assert!(ok > 50, "the load ran: {ok}");
    assert!(
        std::path::Path::new(&format!("/proc/{new_pid}")).exists(),
        "the new process serves"
    );
    // The admin listener moved over too.
    let m = common::get(
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
        "/healthz",
        &[],
    )
    .await;
    assert_eq!(m.status, 200);
}

#[test]
fn tells_systemd_it_is_ready_with_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let cfg = dir.path().join("waygate.toml");
    std::fs::write(
        &cfg,
        "[[listener]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[access_log]\ntarget = \"off\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--workers", "1", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify)
        .env("TMPDIR", dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let got = sock.recv(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let n = got.expect("a notification");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(text, format!("MAINPID={}\nREADY=1", child.id()));
}
