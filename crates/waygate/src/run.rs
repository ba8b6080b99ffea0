//! `waygate run`: load the config, build the gateway, serve until SIGTERM
//! or SIGINT, drain, exit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use waygate_config::{AccessLogFormat, AccessLogTarget, Config};
use waygate_proxy::Gateway;
use waygate_telemetry::{AccessLog, LogFormat};

pub(crate) fn run(path: &Path, workers: Option<usize>, upgrade: bool) -> ExitCode {
    let loaded = match waygate_config::load(path) {
        Ok(l) => l,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    match runtime(workers).and_then(|rt| rt.block_on(serve(path, loaded.config, upgrade))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("waygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime, without the multi-thread
    // scheduler's cross-thread machinery (measured in BENCHMARKS.md).
    let mut b = match workers {
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().context("cannot start the runtime")
}

pub(crate) fn access_log(config: &Config) -> anyhow::Result<AccessLog> {
    let format = match config.access_log_format {
        AccessLogFormat::Json => LogFormat::Json,
        AccessLogFormat::Combined => LogFormat::Combined,
    };
    Ok(match &config.access_log {
        AccessLogTarget::Stdout => {
            AccessLog::stdout_with(format).context("cannot start the access log")?
        }
        AccessLogTarget::Off => AccessLog::off(),
        AccessLogTarget::File(p) => AccessLog::file_with(p, format)
            .with_context(|| format!("cannot open access log {}", p.display()))?,
    })
}

async fn serve(path: &Path, config: Config, upgrade: bool) -> anyhow::Result<()> {
    let socket = crate::upgrade::socket_path(path, config.gateway.upgrade_socket.as_deref());
    // A binary upgrade: take the listening sockets of the running process.
    let mut inherited = if upgrade {
        let socket = socket.clone();
        Some(tokio::task::spawn_blocking(move || crate::upgrade::take_over(&socket)).await??)
    } else {
        None
    };
    let log = access_log(&config)?;
    reopen_on_sigusr1(log.clone());
    let gateway = Gateway::build(&config, log)?.with_config_path(path);
    reload_on_sighup(gateway.clone());
    // Runs always; it does nothing while `watch_tls = false`.
    tokio::spawn(gateway.clone().watch_tls_files(WATCH_EVERY));
    if config.gateway.watch {
        tokio::spawn(watch(path.to_owned(), gateway.clone()));
    }
    // The old admin socket, kept apart from the public ones.
    let old_admin = inherited
        .as_mut()
        .and_then(|i| i.listeners.remove(crate::upgrade::ADMIN));
    let bound = match &mut inherited {
        Some(i) => {
            gateway
                .bind_inherited(std::mem::take(&mut i.listeners))
                .await?
        }
        None => gateway.bind().await?,
    };
    for (l, addr) in config.listeners.iter().zip(bound.local_addrs()) {
        tracing::info!(listener = %l.name, %addr, "listening");
    }
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin_fd = None;
    if let Some(admin) = &config.admin {
        let listener = admin_listener(admin.listen, old_admin).await?;
        admin_fd = std::os::fd::AsFd::as_fd(&listener)
            .try_clone_to_owned()
            .ok();
        tracing::info!(addr = %admin.listen, "admin listening");
        let stopped = async move {
            let _ = admin_stopped.await;
        };
        tokio::spawn(waygate_admin::serve(
            listener,
            gateway.clone(),
            admin.token.clone(),
            stopped,
        ));
    }
    let handover = std::sync::Arc::new(crate::upgrade::Handover::new(gateway.clone(), admin_fd));
    let handed_over = handover.done.clone();
    let serving = tokio::spawn(gateway.serve(bound, async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = handed_over.notified() => {}
        }
    }));
    if let Some(i) = inherited {
        // Serving: the old process may stop accepting now. If it does not
        // answer, this process serves on anyway (it holds the sockets and
        // may have accepted connections already).
        match tokio::task::spawn_blocking(move || i.ready()).await {
            Ok(Ok(())) => tracing::info!("took over from the old process"),
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "the old process did not acknowledge the take-over")
            }
            Err(e) => {
                tracing::warn!(error = %e, "the old process did not acknowledge the take-over")
            }
        }
    }
    // Removed again when this function returns (see `SocketFile`).
    let _socket_file = match crate::upgrade::listen(&socket, handover, upgrade) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "binary upgrades are disabled");
            None
        }
    };
    let pid = std::process::id();
    crate::upgrade::notify_systemd(&format!("MAINPID={pid}\nREADY=1"));
    let _ = serving.await;
    let _ = stop_admin.send(());
    Ok(())
}

/// The admin listener: handed over by the old process if its address is
/// unchanged, bound otherwise.
async fn admin_listener(
    addr: std::net::SocketAddr,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<tokio::net::TcpListener> {
    let taken = inherited.filter(|l| l.local_addr().is_ok_and(|a| a == addr));
    if let Some(l) = taken {
        l.set_nonblocking(true)?;
        return Ok(tokio::net::TcpListener::from_std(l)?);
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (admin)"))
}

/// Reloads the config file on SIGHUP (the outcome is logged).
fn reload_on_sighup(gateway: Gateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received; reloading the config");
                    // Success and rejection are both logged by the reload.
                    let _ = gateway.reload().await;
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// How often `watch = true` looks at the config file.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Reloads when the config file's content changes. Polling the content
/// (not inotify) also sees editors that replace the file and
/// Kubernetes ConfigMaps that swap a symlink, and costs one small read a
/// second.
async fn watch(path: std::path::PathBuf, gateway: Gateway) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tick.tick().await;
        let now = std::fs::read(&path).ok();
        if now.is_some() && now != last {
            last = now;
            tracing::info!(config = %path.display(), "config file changed; reloading");
            let _ = gateway.reload().await;
        }
    }
}

/// Reopens the access-log file on SIGUSR1, for logrotate.
fn reopen_on_sigusr1(log: AccessLog) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    tracing::info!("SIGUSR1 received; reopening the access log");
                    log.reopen();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = log;
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
