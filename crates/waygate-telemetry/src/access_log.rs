//! One JSON line per request. Records are serialized on the request's task
//! and handed to a writer thread through a bounded channel, so a slow disk
//! or terminal never stalls the request path; when the channel is full the
//! line is dropped and counted.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use serde::Serialize;

/// Lines buffered between the request path and the writer thread.
const CHANNEL_CAPACITY: usize = 64 * 1024;

/// The access-log record of one request.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AccessRecord {
    pub time: String,
    pub request_id: String,
    pub listener: String,
    pub client: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The status sent to the client (499 if it went away first).
    pub status: u16,
    /// `gateway`, `upstream` or `downstream`: who produced the outcome.
    pub side: &'static str,
    /// The stable cause name, when the gateway generated or aborted the response.
    pub cause: Option<&'static str>,
    /// The RFC 9209 error type sent in `Proxy-Status`, if any.
    pub proxy_status: Option<&'static str>,
    /// The response was cut off after its head was sent.
    pub aborted: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub upstream_server: Option<String>,
    pub upstream_status: Option<u16>,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The retry decision after the last attempt, with its reason.
    pub retry: Option<String>,
    pub detail: Option<String>,
}

/// One try of a request on one server.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AttemptRecord {
    pub server: String,
    /// Why the balancer chose it (`ewma`, `round_robin`, `hash`, `hash_spill`, ...).
    pub pick: &'static str,
    /// Chosen in panic mode (too few servers available).
    pub panic: bool,
    /// The connection came from the pool.
    pub reused: bool,
    /// `status <code>` for a response, or the cause name of the failure.
    pub outcome: String,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
}

/// Where access-log lines go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

// === impl AccessLog ===

impl AccessLog {
    /// An access log that writes nothing.
    pub fn off() -> Self {
        Self { inner: None }
    }

    pub fn stdout() -> io::Result<Self> {
        Self::spawn(Box::new(io::stdout()))
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Self::spawn(Box::new(f))
    }

    fn spawn(out: Box<dyn Write + Send>) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx,
                dropped: AtomicU64::new(0),
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn log(&self, record: &AccessRecord) {
        let Some(inner) = &self.inner else { return };
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize access-log record");
                return;
            }
        };
        match inner.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }
}

/// Writes lines as they come and flushes whenever the channel runs dry, so
/// a line is visible promptly without a flush per line under load.
fn write_loop(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            if out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                return;
            }
            match rx.try_recv() {
                Ok(l) => next = Some(l),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => break,
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}
