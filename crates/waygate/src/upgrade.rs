//! Zero-downtime binary upgrade: a new waygate process takes over the
//! listening sockets of the running one, which then stops accepting, drains
//! its in-flight requests and exits.
//!
//! The sockets themselves are handed over (file descriptors passed with
//! `SCM_RIGHTS` over a Unix socket, as Envoy's hot restart and HAProxy's
//! `expose-fd listeners` do), not re-bound: both processes accept from the
//! same kernel queue during the hand-over, so no connection is refused and
//! none waiting in the accept queue is lost (with `SO_REUSEPORT` and two
//! sockets, connections queued on the old socket are reset when it closes).
//!
//! The running process listens on the upgrade socket (`[gateway]
//! upgrade_socket`, by default a path in the temp directory derived from the
//! config file's path, mode 0600). One line starts an exchange:
//!
//! - `TAKEOVER` (from `waygate run --upgrade`): the old process answers with
//!   a JSON line naming the sockets, and the sockets; the new process starts
//!   serving them and says `READY <pid>`; the old one answers `BYE`, stops
//!   accepting and drains.
//! - `UPGRADE` (from `waygate upgrade`): the old process starts
//!   `waygate run --upgrade` from its binary's path (the new binary after a
//!   package upgrade) with its own arguments, waits for the take-over, and
//!   answers `OK <pid>` or `FAILED <why>`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use waygate_proxy::Gateway;

/// The admin listener's name among the handed-over sockets.
pub(crate) const ADMIN: &str = "@admin";
/// Longest wait for the new process to be serving.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Most sockets handed over.
const MAX_FDS: usize = 64;

/// The upgrade socket of the gateway run with `config`.
pub(crate) fn socket_path(config: &Path, configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_owned();
    }
    let full = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_owned());
    // FNV-1a: a stable short name for the path.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    std::env::temp_dir().join(format!("waygate-{h:016x}.sock"))
}

// === the new process ===

/// Sockets received from the running process, and the connection to tell
/// it when this process serves them.
pub(crate) struct Inherited {
    pub(crate) listeners: HashMap<String, std::net::TcpListener>,
    conn: UnixStream,
}

/// Asks the process on `path` for its sockets.
pub(crate) fn take_over(path: &Path) -> anyhow::Result<Inherited> {
    let mut conn = UnixStream::connect(path).with_context(|| {
        format!(
            "no running waygate answers on the upgrade socket {}",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(TAKEOVER_TIMEOUT))?;
    conn.write_all(b"TAKEOVER\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let n = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        recvmsg(&conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
            .context("receiving the sockets")?
            .bytes
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(list) = msg {
            fds.extend(list);
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()
        .and_then(|v| serde_json::from_value(v["listeners"].clone()).ok())
        .with_context(|| format!("unexpected hand-over message {text:?}"))?;
    if names.len() != fds.len() {
        bail!("{} socket names but {} sockets", names.len(), fds.len());
    }
    let listeners = names
        .into_iter()
        .zip(fds)
        .map(|(name, fd)| (name, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Inherited { listeners, conn })
}

impl Inherited {
    /// Tells the old process this one serves; it stops accepting and drains.
    pub(crate) fn ready(mut self) -> anyhow::Result<()> {
        writeln!(self.conn, "READY {}", std::process::id())?;
        let mut line = String::new();
        BufReader::new(&self.conn).read_line(&mut line)?;
        if line.trim() != "BYE" {
            bail!("the old process answered {line:?} to READY");
        }
        Ok(())
    }
}

// === the running process ===

/// What the running process needs to hand over.
pub(crate) struct Handover {
    pub(crate) gateway: Gateway,
    /// The admin listener, if any.
    pub(crate) admin: Option<OwnedFd>,
    /// Completed once a new process serves: time to drain and exit.
    pub(crate) done: Arc<tokio::sync::Notify>,
    /// This binary and the arguments it was started with.
    pub(crate) exe: PathBuf,
    pub(crate) args: Vec<String>,
    /// Outcome of the current take-over: the new pid.
    outcome: Mutex<Option<std::sync::mpsc::Sender<Result<u32, String>>>>,
    /// Set once a new process has taken over: the upgrade socket's path is
    /// then the new process's.
    handed_over: AtomicBool,
}

/// The upgrade socket's file: removed when the process ends, unless a new
/// process took over (it binds the same path) or the file is no longer the
/// one bound here.
pub(crate) struct SocketFile {
    path: PathBuf,
    /// Device and inode of the socket file bound here.
    id: Option<(u64, u64)>,
    handover: Arc<Handover>,
}

impl Handover {
    pub(crate) fn new(gateway: Gateway, admin: Option<OwnedFd>) -> Self {
        Self {
            gateway,
            admin,
            done: Arc::new(tokio::sync::Notify::new()),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("waygate")),
            args: std::env::args().skip(1).collect(),
            outcome: Mutex::new(None),
            handed_over: AtomicBool::new(false),
        }
    }
}

/// Binds the upgrade socket at `path` (replacing a stale one, or the one
/// of the process this one took over from) and serves hand-over requests
/// on a thread of its own.
pub(crate) fn listen(
    path: &Path,
    handover: Arc<Handover>,
    took_over: bool,
) -> anyhow::Result<SocketFile> {
    if !took_over && UnixStream::connect(path).is_ok() {
        bail!(
            "another waygate already listens on the upgrade socket {}; to replace it, run with --upgrade",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create the upgrade socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let file = SocketFile {
        path: path.to_owned(),
        id: file_id(path),
        handover: handover.clone(),
    };
    std::thread::Builder::new()
        .name("waygate-upgrade".into())
        .spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let h = handover.clone();
                std::thread::spawn(move || {
                    if let Err(e) = serve_one(conn, &h) {
                        tracing::warn!(error = %format!("{e:#}"), "binary upgrade failed; still serving");
                    }
                });
            }
        })?;
    Ok(file)
}

/// The device and inode of the file at `path`, if any.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.handover.handed_over.load(Ordering::Acquire) {
            return;
        }
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn serve_one(conn: UnixStream, h: &Handover) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(TAKEOVER_TIMEOUT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    match line.trim() {
        "TAKEOVER" => hand_over(conn, reader, h),
        "UPGRADE" => start_new(conn, h),
        other => bail!("unknown upgrade request {other:?}"),
    }
}

/// Sends the sockets to a new process and waits until it serves them.
fn hand_over(
    conn: UnixStream,
    mut reader: BufReader<UnixStream>,
    h: &Handover,
) -> anyhow::Result<()> {
    let mut sockets = h.gateway.listening_sockets()?;
    if let Some(admin) = &h.admin {
        sockets.push((ADMIN.to_owned(), admin.try_clone()?));
    }
    let names: Vec<&str> = sockets.iter().map(|(n, _)| n.as_str()).collect();
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let msg = format!(
        "{}\n",
        serde_json::json!({ "listeners": names, "pid": std::process::id() })
    );
    let result = (|| -> anyhow::Result<u32> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            bail!(
                "too many sockets to hand over ({}, at most {MAX_FDS})",
                fds.len()
            );
        }
        sendmsg(
            &conn,
            &[IoSlice::new(msg.as_bytes())],
            &mut control,
            SendFlags::empty(),
        )
        .context("sending the sockets")?;
        tracing::info!(sockets = ?names, "listening sockets sent to the new process");
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .context("waiting for the new process to serve")?;
        let pid = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the new process did not get ready (it said {line:?})"))?;
        // Before the new process hears BYE: it then binds the upgrade
        // socket's path, which this process must leave alone on exit.
        h.handed_over.store(true, Ordering::Release);
        if let Err(e) = (&conn).write_all(b"BYE\n") {
            h.handed_over.store(false, Ordering::Release);
            return Err(e.into());
        }
        Ok(pid)
    })();
    if let Some(tx) = h.outcome.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        let _ = tx.send(result.as_ref().map(|p| *p).map_err(|e| format!("{e:#}")));
    }
    let pid = result?;
    tracing::info!(new_pid = pid, "handed over to the new process; draining");
    h.done.notify_one();
    Ok(())
}

/// Starts the new binary with `--upgrade` and reports its take-over.
fn start_new(mut conn: UnixStream, h: &Handover) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let mut slot = h.outcome.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            writeln!(conn, "FAILED an upgrade is already in progress")?;
            return Ok(());
        }
        *slot = Some(tx);
    }
    let mut args = h.args.clone();
    if !args.iter().any(|a| a == "--upgrade") {
        args.push("--upgrade".into());
    }
    tracing::info!(exe = %h.exe.display(), ?args, "binary upgrade: starting the new process");
    let child = std::process::Command::new(&h.exe)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .spawn();
    let outcome = match child {
        Err(e) => Err(format!("cannot start {}: {e}", h.exe.display())),
        Ok(mut child) => loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    // Reap the child if it exits later on, in a thread of its own.
                    std::thread::spawn(move || child.wait());
                    break r;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        break Err(format!(
                            "the new process exited ({status}) before taking over"
                        ));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break Err("the hand-over was abandoned".into());
                }
            }
        },
    };
    *h.outcome.lock().unwrap_or_else(|p| p.into_inner()) = None;
    match outcome {
        Ok(pid) => writeln!(conn, "OK {pid}")?,
        Err(why) => {
            tracing::warn!(%why, "binary upgrade failed; still serving");
            writeln!(conn, "FAILED {why}")?;
        }
    }
    Ok(())
}

// === `waygate upgrade` ===

/// Asks the running gateway to start its binary anew and hand over.
pub(crate) fn upgrade(config: &Path) -> ExitCode {
    let configured = waygate_config::load(config)
        .ok()
        .and_then(|l| l.config.gateway.upgrade_socket);
    let path = socket_path(config, configured.as_deref());
    let asked = (|| -> anyhow::Result<String> {
        let mut conn = UnixStream::connect(&path).with_context(|| {
            format!(
                "no running waygate answers on {} (is it running with --config {}?)",
                path.display(),
                config.display()
            )
        })?;
        conn.set_read_timeout(Some(TAKEOVER_TIMEOUT + Duration::from_secs(5)))?;
        conn.write_all(b"UPGRADE\n")?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })();
    match asked {
        Ok(line) if line.starts_with("OK ") => {
            println!(
                "upgraded: new process {} serves; the old one drains and exits",
                &line[3..]
            );
            ExitCode::SUCCESS
        }
        Ok(line) => {
            eprintln!(
                "upgrade failed: {}; the running process keeps serving",
                line.strip_prefix("FAILED ").unwrap_or(&line)
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("waygate upgrade: {e:#}");
            ExitCode::from(2)
        }
    }
}

// === systemd ===

/// Sends `state` to systemd's notify socket, if there is one
/// (`Type=notify`; `NotifyAccess=all` lets an upgraded process say
/// `MAINPID=`).
pub(crate) fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "systemd notification failed");
    }
}
