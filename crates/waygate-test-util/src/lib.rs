//! Upstreams for tests and the demo, written on raw TCP so they can break
//! HTTP in every way a real application does: garbage status lines, resets,
//! early closes, truncated or invalid bodies, slow heads and bodies,
//! oversize headers, contradictory framing, refused ports.
//!
//! This deliberately does not use hyper: a misbehaving peer must be free to
//! write bytes no HTTP library would produce.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How an upstream answers each request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with body `hello from <name>\n` plus the request path; keep-alive.
    Hello(String),
    /// The given status with a short body: the upstream's own error.
    Status(u16),
    /// `HTTP/1.1 200 OK` with `n` bytes of body (streamed, not buffered).
    Source(u64),
    /// Reads the whole request body and answers 200 with its length in bytes.
    Sink,
    /// Not HTTP at all.
    GarbageStatusLine,
    /// Reads the request, then resets the connection (RST).
    ResetAfterRequest,
    /// Reads the request, then closes without a byte.
    CloseWithoutAnswer,
    /// Announces `Content-Length: 1000`, sends 10 bytes, closes.
    TruncatedBody,
    /// Waits this long before answering 200.
    SlowHead(Duration),
    /// Sends the head and the first body bytes, then waits this long before the rest.
    SlowBody(Duration),
    /// A response head of about this many bytes.
    OversizeHeaders(usize),
    /// `200` with `ok` and this many small header fields.
    ManyHeaders(usize),
    /// Both `Content-Length` and `Transfer-Encoding: chunked`.
    ContentLengthAndChunked,
    /// `Transfer-Encoding: chunked` with an invalid chunk size.
    InvalidChunk,
    /// Valid chunks, then a broken one after the head was surely forwarded.
    InvalidChunkLater(Duration),
    /// Reads the request head, then never reads the body; closes after this long.
    IgnoreBody(Duration),
    /// Answers 200 `ok` as soon as the request head is read, then reads and
    /// discards the body, keep-alive (nginx's `return 200` on an upload).
    AnswerEarly,
    /// Answers like `Hello` without announcing `Connection: close`, then
    /// closes the connection: a keep-alive connection the server drops.
    HelloThenClose(String),
    /// Like `Hello`, but `GET /healthz` answers with the status in the cell
    /// (change it to make the server fail its health checks).
    HelloWithHealth(String, Arc<AtomicU16>),
    /// Like `Hello`, after waiting this long: a slow but working server.
    DelayedHello(String, Duration),
    /// Like `Hello`, then closes the connection once it has been idle this
    /// long: a server's own keep-alive timeout.
    HelloIdleTimeout(String, Duration),
    /// Answers 200 once the test adds a permit to the semaphore (one per
    /// request): a server held busy for exactly as long as a test wants.
    Gated(Arc<tokio::sync::Semaphore>),
    /// Each request gets one of: a normal answer (57 %, a fifth of them then
    /// closing the keep-alive connection), a reset after reading it (15 %),
    /// a close without answer (12 %), a truncated body (8 %) or a 300 ms
    /// wait before answering (8 %), from a deterministic sequence counted
    /// in the cell.
    Chaos(Arc<std::sync::atomic::AtomicU64>),
    /// Serves at most the semaphore's permits at a time, each in this long;
    /// the others wait (queue) for a permit: latency grows with overload.
    Capacity(Arc<tokio::sync::Semaphore>, Duration),
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Header names lowercase, in order.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

/// A running upstream. It stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

// === impl Seen ===

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

// === impl Upstream ===

impl Upstream {
    /// Starts an upstream on `127.0.0.1:0` with `behavior`.
    pub async fn start(behavior: Behavior) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid literal"), behavior).await
    }

    pub async fn start_on(addr: SocketAddr, behavior: Behavior) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen2, conns2, accepted2) = (seen.clone(), conns.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted2.fetch_add(1, Ordering::Relaxed);
                let behavior = behavior.clone();
                let seen = seen2.clone();
                let handle = tokio::spawn(async move {
                    let _ = serve(stream, behavior, seen).await;
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|h: &tokio::task::AbortHandle| !h.is_finished());
                    c.push(handle.abort_handle());
                }
            }
        });
        Ok(Self {
            addr,
            seen,
            task,
            conns,
            accepted,
        })
    }

    /// Stops the server at once, as a crash would: the port refuses new
    /// connections and every open connection is closed.
    pub fn kill(&self) {
        self.task.abort();
        if let Ok(c) = self.conns.lock() {
            for h in c.iter() {
                h.abort();
            }
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback listener that never accepts and whose accept queue is full,
/// so new connections to it hang in SYN_SENT until the client gives up:
/// a connect timeout on demand, without leaving loopback.
#[derive(Debug)]
pub struct Blackhole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _held: Vec<TcpStream>,
}

// === impl Blackhole ===

impl Blackhole {
    pub async fn start() -> io::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse().expect("valid literal"))?;
        let listener = socket.listen(1)?;
        let addr = listener.local_addr()?;
        let mut held = Vec::new();
        // Fill the accept queue: connects succeed until it is full, then hang.
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(Self {
            addr,
            _listener: listener,
            _held: held,
        })
    }
}

/// A loopback address where nothing listens (bound, then released).
pub fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound listener has an address")
}

async fn serve(
    mut stream: TcpStream,
    behavior: Behavior,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some(mut req) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        if let Behavior::IgnoreBody(d) = &behavior {
            tokio::time::sleep(*d).await;
            return Ok(());
        }
        if let Behavior::AnswerEarly = &behavior {
            write_response(&mut stream, 200, "OK", &[], b"ok\n").await?;
        }
        req.body_len = read_body(&mut stream, &mut buf, &req).await?;
        if let Ok(mut s) = seen.lock() {
            s.push(req.clone());
        }
        let chosen = match &behavior {
            Behavior::Chaos(n) => chaos_pick(n.fetch_add(1, Ordering::Relaxed)),
            other => other.clone(),
        };
        if !respond(&mut stream, &chosen, &req).await? {
            return Ok(());
        }
    }
}

/// The `Chaos` behavior of the `n`th request (splitmix64 of `n`).
fn chaos_pick(n: u64) -> Behavior {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    match (z ^ (z >> 31)) % 100 {
        0..=44 => Behavior::Hello("chaos".into()),
        45..=59 => Behavior::ResetAfterRequest,
        60..=71 => Behavior::CloseWithoutAnswer,
        72..=79 => Behavior::TruncatedBody,
        80..=87 => Behavior::SlowHead(Duration::from_millis(300)),
        _ => Behavior::HelloThenClose("chaos".into()),
    }
}

/// Answers one request; returns whether the connection stays open.
async fn respond(stream: &mut TcpStream, behavior: &Behavior, req: &Seen) -> io::Result<bool> {
    match behavior {
        Behavior::Hello(name) => {
            let body = format!("hello from {name}: {} {}\n", req.method, req.target);
            write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
        }
        Behavior::HelloWithHealth(name, health) => {
            if req.target == "/healthz" {
                let code = health.load(Ordering::Relaxed);
                write_response(stream, code, "Health", &[], b"health\n").await?;
            } else {
                let body = format!("hello from {name}: {} {}\n", req.method, req.target);
                write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
            }
        }
        Behavior::DelayedHello(name, d) => {
            tokio::time::sleep(*d).await;
            let body = format!("hello from {name}: {} {}\n", req.method, req.target);
            write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
        }
        Behavior::HelloThenClose(name) => {
            let body = format!("hello from {name}: {} {}\n", req.method, req.target);
            write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
            return Ok(false);
        }
        Behavior::HelloIdleTimeout(name, idle) => {
            let body = format!("hello from {name}: {} {}\n", req.method, req.target);
            write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
            // Open while the next request comes within `idle`.
            let mut probe = [0u8; 1];
            return match tokio::time::timeout(*idle, stream.peek(&mut probe)).await {
                Ok(Ok(n)) => Ok(n > 0),
                _ => Ok(false),
            };
        }
        Behavior::IgnoreBody(_) => return Ok(false),
        // Answered before the body was read.
        Behavior::AnswerEarly => {}
        Behavior::Status(code) => {
            let body = format!("the application itself answered {code}\n");
            write_response(
                stream,
                *code,
                "Application Error",
                &[("x-app", "own-error")],
                body.as_bytes(),
            )
            .await?;
        }
        Behavior::Source(n) => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\ncontent-type: application/octet-stream\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; 256 * 1024];
            let mut left = *n;
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                stream.write_all(&block[..k]).await?;
                left -= k as u64;
            }
        }
        Behavior::Sink => {
            let body = format!("{}\n", req.body_len);
            write_response(stream, 200, "OK", &[], body.as_bytes()).await?;
        }
        Behavior::GarbageStatusLine => {
            stream
                .write_all(b"HTPT/1.1 2OO OK\r\n\r\nnot http\r\n")
                .await?;
            return Ok(false);
        }
        Behavior::ResetAfterRequest => {
            stream.set_zero_linger()?;
            return Ok(false);
        }
        Behavior::CloseWithoutAnswer => return Ok(false),
        Behavior::TruncatedBody => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(false);
        }
        // Resolved per request by `chaos_pick` before this is called.
        Behavior::Chaos(_) => {
            write_response(stream, 200, "OK", &[], b"chaos\n").await?;
        }
        Behavior::Capacity(slots, service) => {
            let _slot = slots.acquire().await;
            tokio::time::sleep(*service).await;
            write_response(stream, 200, "OK", &[], b"served\n").await?;
        }
        Behavior::Gated(gate) => {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            write_response(stream, 200, "OK", &[], b"let through\n").await?;
        }
        Behavior::SlowHead(d) => {
            tokio::time::sleep(*d).await;
            write_response(stream, 200, "OK", &[], b"finally\n").await?;
        }
        Behavior::SlowBody(d) => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nfirst part|")
                .await?;
            tokio::time::sleep(*d).await;
            stream.write_all(b"second...").await?;
        }
        Behavior::OversizeHeaders(n) => {
            let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            let mut i = 0;
            while head.len() < *n {
                head.push_str(&format!("x-filler-{i}: {}\r\n", "a".repeat(100)));
                i += 1;
            }
            head.push_str("\r\nok");
            let _ = stream.write_all(head.as_bytes()).await;
            return Ok(false);
        }
        Behavior::ManyHeaders(n) => {
            let mut head = String::from("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n");
            for i in 2..*n {
                head.push_str(&format!("x-h-{i}: {i}\r\n"));
            }
            head.push_str("\r\nok");
            stream.write_all(head.as_bytes()).await?;
            return Ok(true);
        }
        Behavior::ContentLengthAndChunked => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .await?;
            return Ok(false);
        }
        Behavior::InvalidChunk => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
                .await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(false);
        }
        Behavior::InvalidChunkLater(d) => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello\n\r\n")
                .await?;
            tokio::time::sleep(*d).await;
            stream.write_all(b"zz\r\nbroken\r\n0\r\n\r\n").await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Ok(false);
        }
    }
    Ok(!req
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close")))
}

async fn write_response(
    stream: &mut TcpStream,
    code: u16,
    reason: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n",
        body.len()
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await
}

/// Reads one request head; `None` on a clean EOF between requests.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Seen>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Ok(Some(parse_head(&head)));
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        if fill(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn parse_head(head: &str) -> Seen {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Seen {
        method,
        target,
        headers,
        body_len: 0,
    }
}

/// Reads and discards the request body, returning its length.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, req: &Seen) -> io::Result<u64> {
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut total = 0u64;
        loop {
            let line = read_line(stream, buf).await?;
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_str, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !read_line(stream, buf).await?.is_empty() {}
                return Ok(total);
            }
            skip(stream, buf, size + 2).await?;
            total += size;
        }
    }
    let len: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    skip(stream, buf, len).await?;
    Ok(len)
}

async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<String> {
    loop {
        if let Some(end) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            return Ok(line);
        }
        if fill(stream, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn skip(stream: &mut TcpStream, buf: &mut Vec<u8>, mut n: u64) -> io::Result<()> {
    let take = (buf.len() as u64).min(n) as usize;
    buf.drain(..take);
    n -= take as u64;
    let mut scratch = vec![0u8; 256 * 1024];
    while n > 0 {
        let want = (scratch.len() as u64).min(n) as usize;
        let k = stream.read(&mut scratch[..want]).await?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n -= k as u64;
    }
    Ok(())
}

async fn fill(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut tmp = [0u8; 8192];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
