//! One JSON line per request. Records are serialized on the request's task
//! and handed to a writer thread through a bounded channel, so a slow disk
//! or terminal never stalls the request path; when the channel is full the
//! line is dropped and counted.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};
use serde::Serialize;

/// Lines buffered between the request path and the writer thread.
const CHANNEL_CAPACITY: usize = 64 * 1024;

/// The access-log record of one request. It holds cheap values (shared
/// strings, the parsed method and URI, the peer address) and is formatted
/// into a JSON line only when it is written, so a request whose log is off
/// pays for no formatting.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub request_id: Arc<str>,
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: Method,
    /// The Host header, or the URI's authority.
    pub host: Option<HeaderValue>,
    /// Only its path is logged.
    pub uri: Uri,
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
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub upstream_server: Option<Arc<str>>,
    pub upstream_status: Option<u16>,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    /// Every attempt, in order.
    /// Inline for the usual single attempt: no allocation per request.
    pub attempts: smallvec::SmallVec<[AttemptRecord; 1]>,
    /// The retry decision after the last attempt, with its reason.
    pub retry: Option<String>,
    pub detail: Option<String>,
}

/// One try of a request on one server.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub server: Arc<str>,
    /// Why the balancer chose it (`ewma`, `round_robin`, `hash`, `hash_spill`, ...).
    pub pick: &'static str,
    /// Chosen in panic mode (too few servers available).
    pub panic: bool,
    /// The connection came from the pool.
    pub reused: bool,
    pub outcome: AttemptOutcome,
    pub connect_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
}

/// What became of an attempt; written as `status <code>`, a cause name, or a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Pending,
    Status(u16),
    Cause(&'static str),
    Note(&'static str),
}

// === impl AccessRecord ===

impl AccessRecord {
    pub fn new(
        time: SystemTime,
        request_id: Arc<str>,
        listener: Arc<str>,
        client: SocketAddr,
        method: Method,
        host: Option<HeaderValue>,
        uri: Uri,
    ) -> Self {
        Self {
            time,
            request_id,
            listener,
            client,
            method,
            host,
            uri,
            status: 0,
            side: "gateway",
            cause: None,
            proxy_status: None,
            aborted: false,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            route: None,
            upstream: None,
            upstream_server: None,
            upstream_status: None,
            connect_ms: None,
            first_byte_ms: None,
            attempts: smallvec::SmallVec::new(),
            retry: None,
            detail: None,
        }
    }

    /// The nginx-"combined"-like line (without the newline): what nginx
    /// writes (the referer and user agent are not recorded: `"-"`), then the
    /// request id, the side, the cause, the last upstream server and the
    /// total time in seconds.
    pub fn to_combined(&self) -> String {
        let t = crate::rfc3339_millis(self.time);
        // 2026-11-24T22:45:56.123Z -> 24/Nov/2026:22:45:56 +0000
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = t
            .get(5..7)
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(1);
        let stamp = format!(
            "{}/{}/{}:{} +0000",
            t.get(8..10).unwrap_or("01"),
            MONTHS[month.clamp(1, 12) - 1],
            t.get(0..4).unwrap_or("1970"),
            t.get(11..19).unwrap_or("00:00:00")
        );
        let target = self
            .uri
            .path_and_query()
            .map_or(self.uri.path(), |pq| pq.as_str());
        format!(
            "{} - - [{stamp}] \"{} {} HTTP/1.1\" {} {} \"-\" \"-\" rid={} side={} cause={} upstream={} rt={:.3}",
            self.client.ip(),
            self.method,
            target.replace('"', "%22"),
            self.status,
            self.bytes_out,
            self.request_id,
            self.side,
            self.cause.unwrap_or("-"),
            self.upstream_server.as_deref().unwrap_or("-"),
            self.duration_ms / 1000.0,
        )
    }

    /// The JSON line (without the newline).
    pub fn to_json(&self) -> serde_json::Result<String> {
        let mut out = Vec::with_capacity(LINE_CAPACITY);
        self.write_json(&mut out)?;
        String::from_utf8(out).map_err(serde::ser::Error::custom)
    }

    /// Appends the JSON line (without the newline) to `out`: the fields in
    /// a fixed order, `null` for what is absent. The keys are written as
    /// they are, a string that needs no escaping is copied in one piece,
    /// and serde_json escapes the others and writes the numbers; the
    /// timestamp and the client address are formatted without `format!`.
    /// (serde_json's derive escaped every key and value byte by byte: about
    /// a third of the line's cost, `bench/callgrind.sh FEATURES=1`.)
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let stamp = crate::time::Stamp::new(self.time);
        let slow_time;
        let time = match &stamp {
            Some(s) => s.as_str(),
            None => {
                slow_time = crate::rfc3339_millis(self.time);
                &slow_time
            }
        };
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        out.extend_from_slice(b"{\"time\":");
        json_str(out, time)?;
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, &self.request_id)?;
        out.extend_from_slice(b",\"listener\":");
        json_str(out, &self.listener)?;
        // An address's text never needs escaping.
        out.extend_from_slice(b",\"client\":\"");
        push_addr(out, self.client);
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str())?;
        out.extend_from_slice(b",\"host\":");
        json_str(out, host)?;
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.uri.path())?;
        out.extend_from_slice(b",\"status\":");
        json(out, &self.status)?;
        out.extend_from_slice(b",\"side\":");
        json_str(out, self.side)?;
        out.extend_from_slice(b",\"cause\":");
        json_opt_str(out, self.cause)?;
        out.extend_from_slice(b",\"proxy_status\":");
        json_opt_str(out, self.proxy_status)?;
        out.extend_from_slice(if self.aborted {
            b",\"aborted\":true,\"bytes_in\":"
        } else {
            b",\"aborted\":false,\"bytes_in\":"
        });
        json(out, &self.bytes_in)?;
        out.extend_from_slice(b",\"bytes_out\":");
        json(out, &self.bytes_out)?;
        out.extend_from_slice(b",\"duration_ms\":");
        json(out, &self.duration_ms)?;
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, self.route.as_deref())?;
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream.as_deref())?;
        out.extend_from_slice(b",\"upstream_server\":");
        json_opt_str(out, self.upstream_server.as_deref())?;
        out.extend_from_slice(b",\"upstream_status\":");
        json(out, &self.upstream_status)?;
        out.extend_from_slice(b",\"connect_ms\":");
        json(out, &self.connect_ms)?;
        out.extend_from_slice(b",\"first_byte_ms\":");
        json(out, &self.first_byte_ms)?;
        out.extend_from_slice(b",\"attempts\":[");
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            a.write_json(out)?;
        }
        out.push(b']');
        out.extend_from_slice(b",\"retry\":");
        json_opt_str(out, self.retry.as_deref())?;
        out.extend_from_slice(b",\"detail\":");
        json_opt_str(out, self.detail.as_deref())?;
        out.push(b'}');
        Ok(())
    }
}

/// A value as serde_json writes it.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> serde_json::Result<()> {
    serde_json::to_writer(out, v)
}

/// A JSON string: copied as it is unless a byte needs escaping (what
/// serde_json escapes: control characters, `"` and `\\`).
fn json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    // Not `any`: without the early exit the scan is vectorised.
    let escape = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if escape {
        return json(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) -> serde_json::Result<()> {
    match s {
        Some(s) => json_str(out, s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// Room for a usual JSON line, so it is written without regrowing.
const LINE_CAPACITY: usize = 640;

/// `addr` as `Display` writes it; IPv4 without the formatting machinery.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let SocketAddr::V4(v4) = addr else {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{addr}");
        return;
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_decimal(out, u32::from(octet));
    }
    out.push(b':');
    push_decimal(out, u32::from(v4.port()));
}

fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

// === impl AttemptRecord ===

impl AttemptRecord {
    /// Appends the attempt as its `Serialize` derive writes it, the way
    /// `AccessRecord::write_json` writes the line (the derive escaped every
    /// key, and `status 200` went through `format_args!`).
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"server\":");
        json_str(out, &self.server)?;
        out.extend_from_slice(b",\"pick\":");
        json_str(out, self.pick)?;
        out.extend_from_slice(match (self.panic, self.reused) {
            (false, false) => b",\"panic\":false,\"reused\":false,\"outcome\":",
            (false, true) => b",\"panic\":false,\"reused\":true,\"outcome\":",
            (true, false) => b",\"panic\":true,\"reused\":false,\"outcome\":",
            (true, true) => b",\"panic\":true,\"reused\":true,\"outcome\":",
        });
        match self.outcome {
            AttemptOutcome::Pending => out.extend_from_slice(b"\"pending\""),
            AttemptOutcome::Status(code) => {
                out.extend_from_slice(b"\"status ");
                push_decimal(out, u32::from(code));
                out.push(b'"');
            }
            AttemptOutcome::Cause(c) | AttemptOutcome::Note(c) => json_str(out, c)?,
        }
        out.extend_from_slice(b",\"connect_ms\":");
        json(out, &self.connect_ms)?;
        out.extend_from_slice(b",\"first_byte_ms\":");
        json(out, &self.first_byte_ms)?;
        out.push(b'}');
        Ok(())
    }
}

// === impl AttemptOutcome ===

impl Serialize for AttemptOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AttemptOutcome::Pending => s.serialize_str("pending"),
            AttemptOutcome::Status(code) => s.collect_str(&format_args!("status {code}")),
            AttemptOutcome::Cause(c) | AttemptOutcome::Note(c) => s.serialize_str(c),
        }
    }
}

/// Where access-log lines go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    tx: Option<SyncSender<Vec<u8>>>,
    dropped: AtomicU64,
    writer: Option<std::thread::JoinHandle<()>>,
    format: LogFormat,
    /// Set by `reopen`, cleared by the writer once it reopened the file.
    reopen: Arc<AtomicBool>,
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    /// nginx's "combined" format, then `rid=`, `side=`, `cause=`,
    /// `upstream=` and `rt=` (seconds).
    Combined,
}

// === impl AccessLog ===

impl AccessLog {
    /// An access log that writes nothing.
    pub fn off() -> Self {
        Self { inner: None }
    }

    pub fn stdout() -> io::Result<Self> {
        Self::stdout_with(LogFormat::Json)
    }

    pub fn stdout_with(format: LogFormat) -> io::Result<Self> {
        Self::spawn(Box::new(io::stdout()), None, format)
    }

    /// Appends to `path`, creating it if needed.
    pub fn file(path: &Path) -> io::Result<Self> {
        Self::file_with(path, LogFormat::Json)
    }

    /// Appends to `path` in `format`; [`AccessLog::reopen`] reopens it (for logrotate).
    pub fn file_with(path: &Path, format: LogFormat) -> io::Result<Self> {
        let f = open_append(path)?;
        Self::spawn(Box::new(f), Some(path.to_path_buf()), format)
    }

    fn spawn(
        out: Box<dyn Write + Send>,
        path: Option<PathBuf>,
        format: LogFormat,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(rx, out, path, flag))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tx: Some(tx),
                dropped: AtomicU64::new(0),
                writer: Some(writer),
                format,
                reopen,
            })),
        })
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(inner) = &self.inner {
            inner.reopen.store(true, Ordering::Relaxed);
        }
    }

    /// Whether records are written at all (`target = "off"` writes none).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn log(&self, record: &AccessRecord) {
        let Some(inner) = &self.inner else { return };
        let line = match inner.format {
            LogFormat::Combined => Ok(record.to_combined().into_bytes()),
            LogFormat::Json => {
                let mut out = Vec::with_capacity(LINE_CAPACITY);
                record.write_json(&mut out).map(|()| out)
            }
        };
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize access-log record");
                return;
            }
        };
        let Some(tx) = &inner.tx else { return };
        match tx.try_send(line) {
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

/// How often the writer wakes up to drain the channel. The writer never
/// blocks on the channel, so a request never pays for waking it (a futex
/// wake per line cost more than the line itself); lines appear within this
/// delay.
const DRAIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Drains the channel every `DRAIN_INTERVAL`, writing and flushing in
/// batches; on shutdown (all senders gone) writes what is left and flushes.
fn write_loop(
    rx: Receiver<Vec<u8>>,
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    loop {
        if reopen.swap(false, Ordering::Relaxed) {
            if let Some(p) = &path {
                let _ = out.flush();
                match open_append(p) {
                    Ok(f) => out = BufWriter::with_capacity(64 * 1024, Box::new(f)),
                    Err(e) => {
                        tracing::error!(path = %p.display(), error = %e, "cannot reopen the access log; keeping the old file")
                    }
                }
            }
        }
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    if out
                        .write_all(&line)
                        .and_then(|()| out.write_all(b"\n"))
                        .is_err()
                    {
                        return;
                    }
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote && out.flush().is_err() {
            return;
        }
        std::thread::sleep(DRAIN_INTERVAL);
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Drop for Inner {
    /// The last handle is gone: let the writer drain, flush and stop, so no
    /// line is lost at shutdown.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The line as serde's derive writes it: what `write_json` must match.
    #[derive(Serialize)]
    struct Line<'a> {
        time: &'a str,
        request_id: &'a str,
        listener: &'a str,
        client: &'a str,
        method: &'a str,
        host: &'a str,
        path: &'a str,
        status: u16,
        side: &'static str,
        cause: Option<&'static str>,
        proxy_status: Option<&'static str>,
        aborted: bool,
        bytes_in: u64,
        bytes_out: u64,
        duration_ms: f64,
        route: Option<&'a str>,
        upstream: Option<&'a str>,
        upstream_server: Option<&'a str>,
        upstream_status: Option<u16>,
        connect_ms: Option<f64>,
        first_byte_ms: Option<f64>,
        attempts: &'a [AttemptRecord],
        retry: Option<&'a str>,
        detail: Option<&'a str>,
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.9.80.7:443",
            "[::1]:8080",
            "[2001:db8::17]:65535",
        ] {
            let addr: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
            let mut out = Vec::new();
            push_addr(&mut out, addr);
            assert_eq!(String::from_utf8_lossy(&out), addr.to_string());
        }
    }

    #[test]
    fn json_line_has_the_record_fields() {
        let mut r = AccessRecord::new(
            UNIX_EPOCH + Duration::from_millis(1_795_560_356_123),
            "rid-1".into(),
            "public".into(),
            "192.0.2.7:51000".parse().unwrap_or_else(|e| panic!("{e}")),
            Method::GET,
            Some(HeaderValue::from_static("example.com")),
            Uri::from_static("/a%22b?q=1"),
        );
        r.status = 200;
        let line = r.to_json().unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["time"], "2026-11-24T22:45:56.123Z");
        assert_eq!(v["client"], "192.0.2.7:51000");
        assert_eq!(v["request_id"], "rid-1");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["status"], 200);
        assert!(!line.contains('\n'));
    }

    /// The line through serde's derive, as it was written before.
    fn reference(r: &AccessRecord) -> String {
        let time = crate::rfc3339_millis(r.time);
        let client = r.client.to_string();
        let line = Line {
            time: &time,
            request_id: &r.request_id,
            listener: &r.listener,
            client: &client,
            method: r.method.as_str(),
            host: r
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .or_else(|| r.uri.authority().map(|a| a.as_str()))
                .unwrap_or(""),
            path: r.uri.path(),
            status: r.status,
            side: r.side,
            cause: r.cause,
            proxy_status: r.proxy_status,
            aborted: r.aborted,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            duration_ms: r.duration_ms,
            route: r.route.as_deref(),
            upstream: r.upstream.as_deref(),
            upstream_server: r.upstream_server.as_deref(),
            upstream_status: r.upstream_status,
            connect_ms: r.connect_ms,
            first_byte_ms: r.first_byte_ms,
            attempts: &r.attempts,
            retry: r.retry.as_deref(),
            detail: r.detail.as_deref(),
        };
        serde_json::to_string(&line).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn json_line_is_byte_for_byte_what_the_derive_wrote() {
        let plain = AccessRecord::new(
            UNIX_EPOCH + Duration::from_millis(1_795_560_356_123),
            "01JDX6".into(),
            "public".into(),
            "192.0.2.7:51000".parse().unwrap_or_else(|e| panic!("{e}")),
            Method::GET,
            None,
            Uri::from_static("http://example.com:8080/x"),
        );
        let mut full = plain.clone();
        full.client = "[2001:db8::1]:443"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        full.method = Method::from_bytes(b"PURGE").unwrap_or_else(|e| panic!("{e}"));
        full.host = Some(HeaderValue::from_static("h\"o\\st"));
        full.status = 502;
        full.side = "gateway";
        full.cause = Some("connection_refused");
        full.proxy_status = Some("connection_refused");
        full.aborted = true;
        full.bytes_in = u64::MAX;
        full.bytes_out = 0;
        full.duration_ms = 12.345_678;
        full.route = Some("r\u{1}oute".into());
        full.upstream = Some("é ünïcode \u{7f}".into());
        full.upstream_server = Some("10.0.0.1:80".into());
        full.upstream_status = Some(503);
        full.connect_ms = Some(f64::NAN);
        full.first_byte_ms = Some(0.0);
        let attempt = AttemptRecord {
            server: "10.0.0.1:80".into(),
            pick: "round_robin",
            panic: false,
            reused: true,
            outcome: AttemptOutcome::Status(503),
            connect_ms: None,
            first_byte_ms: Some(1.5),
        };
        full.attempts.push(attempt.clone());
        full.attempts.push(AttemptRecord {
            outcome: AttemptOutcome::Cause("connect_timeout"),
            panic: true,
            reused: false,
            ..attempt.clone()
        });
        full.attempts.push(AttemptRecord {
            server: "we\"ird\\name\u{2}".into(),
            outcome: AttemptOutcome::Note("budget \"exhausted\""),
            panic: true,
            connect_ms: Some(f64::INFINITY),
            ..attempt.clone()
        });
        full.attempts.push(AttemptRecord {
            outcome: AttemptOutcome::Pending,
            reused: false,
            connect_ms: Some(3.25),
            first_byte_ms: None,
            ..attempt
        });
        full.retry = Some("retried: status 503\nnext".into());
        full.detail = Some("tab\there \"quoted\" back\\slash".into());
        for r in [&plain, &full] {
            let ours = r.to_json().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(ours, reference(r));
            serde_json::from_str::<serde_json::Value>(&ours)
                .unwrap_or_else(|e| panic!("{e}: {ours}"));
        }
    }
}
