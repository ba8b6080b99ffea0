//! Hot reload: read and validate the config file, build a new generation of
//! runtime state from it (carrying over whatever did not change, see
//! [`Runtime::new`]), then swap it in atomically. Requests in flight finish
//! on the generation they started with. A config that fails validation is
//! rejected: the running one keeps serving, and the rejection is logged,
//! counted and kept for the status page.
//!
//! Reloads are applied one at a time by the serve loop (it owns the
//! listeners); [`Gateway::reload`] sends it the validated config and waits
//! for the outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};
use waygate_config::{Config, Diagnostic};

use crate::runtime::{Gateway, Runtime};

/// Reloads waiting for the serve loop.
const PENDING: usize = 8;

/// A validated config on its way to the serve loop.
pub(crate) struct Cmd {
    pub(crate) config: Config,
    pub(crate) reply: oneshot::Sender<Result<ReloadReport, ReloadError>>,
}

#[derive(Debug)]
pub(crate) struct ReloadState {
    path: Mutex<Option<PathBuf>>,
    tx: mpsc::Sender<Cmd>,
    rx: Mutex<Option<mpsc::Receiver<Cmd>>>,
    /// One reload at a time, from reading the file to the swap.
    serial: tokio::sync::Mutex<()>,
    succeeded: AtomicU64,
    failed: AtomicU64,
    last: Mutex<Option<LastReload>>,
}

/// The outcome of the last reload, for the status page.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub time: SystemTime,
    pub ok: bool,
    /// What changed, or why it was rejected (one line each).
    pub lines: Vec<String>,
}

/// Reload counts and the last outcome.
#[derive(Debug, Clone, Default)]
pub struct ReloadStats {
    pub succeeded: u64,
    pub failed: u64,
    pub generation: u64,
    pub last: Option<LastReload>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config is invalid ({} error(s)); the running config keeps serving", .0.len())]
    Invalid(Vec<Diagnostic>),
    #[error("{0}; the running config keeps serving")]
    Apply(String),
    #[error("this gateway was not started from a config file")]
    NoConfigFile,
    #[error("the gateway is not serving")]
    NotServing,
}

/// Names added, removed and changed, of one kind of thing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// The new generation (1 is the config loaded at start).
    pub generation: u64,
    pub listeners: Changes,
    pub routes: Changes,
    pub upstreams: Changes,
    /// `upstream/address`.
    pub servers: Changes,
    pub rate_limits: Changes,
    /// Client connections on listeners that were kept.
    pub connections_kept: u64,
    /// Client connections of removed or moved listeners, finishing their
    /// requests (up to `drain_timeout`) before they close.
    pub connections_draining: u64,
    /// Sections that changed but only take effect on restart.
    pub restart_required: Vec<String>,
    pub warnings: Vec<String>,
}

// === impl ReloadState ===

impl Default for ReloadState {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(PENDING);
        Self {
            path: Mutex::new(None),
            tx,
            rx: Mutex::new(Some(rx)),
            serial: tokio::sync::Mutex::new(()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }
}

impl ReloadState {
    /// The receiving end, for the serve loop (once).
    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<Cmd>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Counts and remembers an outcome.
    pub(crate) fn finished(&self, outcome: &Result<ReloadReport, ReloadError>) {
        let (ok, lines) = match outcome {
            Ok(r) => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                (true, r.lines())
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                (false, error_lines(e))
            }
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastReload {
            time: SystemTime::now(),
            ok,
            lines,
        });
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The next reload, or never if there is no receiver.
pub(crate) async fn next(rx: &mut Option<mpsc::Receiver<Cmd>>) -> Option<Cmd> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn error_lines(e: &ReloadError) -> Vec<String> {
    match e {
        ReloadError::Invalid(diags) => diags.iter().map(|d| d.to_string()).collect(),
        other => vec![other.to_string()],
    }
}

// === impl Gateway ===

impl Gateway {
    /// The file `reload` reads.
    pub fn with_config_path(self, path: impl Into<PathBuf>) -> Self {
        *self
            .shared
            .reload
            .path
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(path.into());
        self
    }

    /// Reads the config file again and applies it (SIGHUP, `POST /reload`,
    /// `waygate reload`, file watching).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.shared.reload.serial.lock().await;
        let path = self
            .shared
            .reload
            .path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(path) = path else {
            return Err(ReloadError::NoConfigFile);
        };
        match waygate_config::load(&path) {
            Ok(loaded) => {
                let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
                let mut out = self.apply_config(loaded.config).await;
                if let Ok(report) = &mut out {
                    report.warnings = warnings;
                }
                out
            }
            Err(diags) => {
                let out = Err(ReloadError::Invalid(diags));
                if let Err(e) = &out {
                    for line in error_lines(e) {
                        error!(config = %path.display(), "reload rejected: {line}");
                    }
                }
                self.shared.reload.finished(&out);
                out
            }
        }
    }

    /// Reloads when a certificate, key or CA file of the running config
    /// changes (contents polled every `every`, while `watch_tls` is on).
    /// A reload that fails (say a new certificate written before its key)
    /// is tried again at the next change of the files.
    pub async fn watch_tls_files(self, every: std::time::Duration) {
        let mut last: Option<(Vec<PathBuf>, u64)> = None;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let config = self.rt().config.clone();
            if !config.gateway.watch_tls {
                last = None;
                continue;
            }
            let files = config.tls_files();
            let print = fingerprint(&files);
            if let Some((f, p)) = &last {
                if *f == files && *p != print {
                    tracing::info!("a certificate, key or CA file changed; reloading");
                    let _ = self.reload().await;
                }
            }
            last = Some((files, print));
        }
    }

    /// Applies an already validated config.
    pub async fn apply_config(&self, config: Config) -> Result<ReloadReport, ReloadError> {
        let (reply, outcome) = oneshot::channel();
        self.shared
            .reload
            .tx
            .send(Cmd { config, reply })
            .await
            .map_err(|_| ReloadError::NotServing)?;
        let out = outcome.await.map_err(|_| ReloadError::NotServing)?;
        if let Err(e) = &out {
            warn!(error = %e, "reload failed");
        }
        out
    }

    /// Reload counts, the current generation and the last outcome.
    pub fn reloads(&self) -> ReloadStats {
        let (succeeded, failed) = self.shared.reload.counts();
        ReloadStats {
            succeeded,
            failed,
            generation: self.rt().generation,
            last: self
                .shared
                .reload
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

// === impl ReloadReport ===

impl ReloadReport {
    /// One line per change, for logs and the status page.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, c) in [
            ("listener", &self.listeners),
            ("route", &self.routes),
            ("upstream", &self.upstreams),
            ("server", &self.servers),
            ("rate limit", &self.rate_limits),
        ] {
            for (verb, names) in [
                ("added", &c.added),
                ("removed", &c.removed),
                ("changed", &c.changed),
            ] {
                if !names.is_empty() {
                    out.push(format!("{what}s {verb}: {}", names.join(", ")));
                }
            }
        }
        if out.is_empty() {
            out.push("no change".into());
        }
        out.push(format!(
            "client connections: {} kept, {} draining",
            self.connections_kept, self.connections_draining
        ));
        for s in &self.restart_required {
            out.push(format!("[{s}] changed: takes effect on restart"));
        }
        out
    }

    /// The changes on one line.
    pub fn summary(&self) -> String {
        self.lines().join("; ")
    }

    pub fn to_json(&self) -> Value {
        let c = |c: &Changes| json!({"added": c.added, "removed": c.removed, "changed": c.changed});
        json!({
            "result": "reloaded",
            "generation": self.generation,
            "listeners": c(&self.listeners),
            "routes": c(&self.routes),
            "upstreams": c(&self.upstreams),
            "servers": c(&self.servers),
            "rate_limits": c(&self.rate_limits),
            "connections": {"kept": self.connections_kept, "draining": self.connections_draining},
            "restart_required": self.restart_required,
            "warnings": self.warnings,
        })
    }
}

impl ReloadError {
    pub fn to_json(&self) -> Value {
        json!({
            "result": "rejected",
            "error": self.to_string(),
            "errors": error_lines(self),
        })
    }
}

/// What changed from `old` to `new` (connection counts are filled in by
/// the caller).
pub(crate) fn diff(old: &Runtime, new: &Runtime) -> ReloadReport {
    let (a, b) = (&*old.config, &*new.config);
    let named = |l: &waygate_config::ListenerConfig| (l.name.clone(), l.clone());
    let listeners = changes(
        a.listeners.iter().map(named).collect(),
        b.listeners.iter().map(named).collect(),
    );
    // Routes refer to other things by index: compare them by names.
    let routes = |c: &Config| -> Vec<_> {
        c.routes
            .iter()
            .map(|r| {
                let what = (
                    r.host.clone(),
                    r.path_prefix.clone(),
                    r.listener.map(|i| c.listeners[i].name.clone()),
                    c.upstreams[r.upstream].name.clone(),
                    r.rate_limit.map(|i| c.rate_limits[i].name.clone()),
                    r.priority,
                );
                (r.name.clone(), what)
            })
            .collect()
    };
    let routes = changes(routes(a), routes(b));
    let upstream = |u: &waygate_config::UpstreamConfig| (u.name.clone(), u.clone());
    let upstreams = changes(
        a.upstreams.iter().map(upstream).collect(),
        b.upstreams.iter().map(upstream).collect(),
    );
    let servers = |c: &Config| -> Vec<(String, u32)> {
        c.upstreams
            .iter()
            .flat_map(|u| {
                u.servers
                    .iter()
                    .map(move |s| (format!("{}/{}", u.name, s.addr), s.weight))
            })
            .collect()
    };
    let servers = changes(servers(a), servers(b));
    let policy = |r: &waygate_config::RateLimitConfig| (r.name.clone(), r.clone());
    let rate_limits = changes(
        a.rate_limits.iter().map(policy).collect(),
        b.rate_limits.iter().map(policy).collect(),
    );
    let mut restart_required = Vec::new();
    if a.access_log != b.access_log {
        restart_required.push("access_log".to_owned());
    }
    if a.admin != b.admin {
        restart_required.push("admin".to_owned());
    }
    if a.gateway.watch != b.gateway.watch {
        restart_required.push("gateway.watch".to_owned());
    }
    ReloadReport {
        generation: new.generation,
        listeners,
        routes,
        upstreams,
        servers,
        rate_limits,
        restart_required,
        ..ReloadReport::default()
    }
}

/// Added, removed and changed names between two (name, value) lists.
fn changes<T: PartialEq>(old: Vec<(String, T)>, new: Vec<(String, T)>) -> Changes {
    let mut c = Changes::default();
    for (name, value) in &new {
        match old.iter().find(|(n, _)| n == name) {
            None => c.added.push(name.clone()),
            Some((_, v)) if v != value => c.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    for (name, _) in &old {
        if !new.iter().any(|(n, _)| n == name) {
            c.removed.push(name.clone());
        }
    }
    c
}

/// A hash of the files' contents (a missing file counts as empty).
fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for f in files {
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}
