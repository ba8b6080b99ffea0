//! `waygate run`: load the config, build the gateway, serve until SIGTERM
//! or SIGINT, drain, exit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use waygate_config::{AccessLogFormat, AccessLogTarget, Config};
use waygate_proxy::Gateway;
use waygate_telemetry::{AccessLog, LogFormat};

pub(crate) fn run(path: &Path, workers: Option<usize>) -> ExitCode {
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
    match runtime(workers).and_then(|rt| rt.block_on(serve(path, loaded.config))) {
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

async fn serve(path: &Path, config: Config) -> anyhow::Result<()> {
    let log = access_log(&config)?;
    reopen_on_sigusr1(log.clone());
    let gateway = Gateway::build(&config, log)?.with_config_path(path);
    reload_on_sighup(gateway.clone());
    if config.gateway.watch {
        tokio::spawn(watch(path.to_owned(), gateway.clone()));
    }
    let bound = gateway.bind().await?;
    for (l, addr) in config.listeners.iter().zip(bound.local_addrs()) {
        tracing::info!(listener = %l.name, %addr, "listening");
    }
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(admin) = &config.admin {
        let listener = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?;
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
    gateway.serve(bound, shutdown_signal()).await;
    let _ = stop_admin.send(());
    Ok(())
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
