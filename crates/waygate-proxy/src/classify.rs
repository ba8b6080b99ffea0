//! Classification: each failure gets its [`Cause`] once, where it is first
//! seen, by walking the error's source chain (as linkerd's `is_caused_by`).

use std::error::Error as StdError;
use std::io;

use waygate_core::Cause;

/// The first `io::Error` in an error's source chain.
fn io_kind(e: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// A TLS failure (from rustls) somewhere in `e`'s sources.
pub(crate) fn tls(e: &(dyn StdError + 'static)) -> Option<waygate_upstream::TlsFailure> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err
            .downcast_ref::<io::Error>()
            .and_then(waygate_upstream::tls_failure)
        {
            return Some(f);
        }
        cur = err.source();
    }
    None
}

/// The cause for a TLS failure: the certificate, or anything else.
pub(crate) fn tls_cause(f: &waygate_upstream::TlsFailure) -> Cause {
    if f.certificate {
        Cause::TlsCertificateError
    } else {
        Cause::TlsProtocolError
    }
}

/// The cause of a failed `send_request` (before a response head arrived).
pub(crate) fn send_error(e: &hyper::Error) -> Cause {
    if let Some(f) = tls(e) {
        return tls_cause(&f);
    }
    if e.is_parse_too_large() {
        return Cause::ResponseHeadersTooLarge;
    }
    if e.is_parse() || e.is_parse_status() {
        return Cause::ResponseProtocolError;
    }
    match io_kind(e) {
        Some(io::ErrorKind::ConnectionReset)
        | Some(io::ErrorKind::BrokenPipe)
        | Some(io::ErrorKind::ConnectionAborted) => return Cause::UpstreamReset,
        Some(io::ErrorKind::InvalidData) | Some(io::ErrorKind::InvalidInput) => {
            return Cause::ResponseProtocolError
        }
        _ => {}
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return Cause::UpstreamClosed;
    }
    if e.is_timeout() {
        return Cause::ResponseTimeout;
    }
    if e.is_user() {
        return Cause::InternalError;
    }
    Cause::UpstreamClosed
}

/// The cause of an error while reading the upstream's response body.
pub(crate) fn body_error(e: &hyper::Error) -> Cause {
    match io_kind(e) {
        Some(io::ErrorKind::InvalidData) | Some(io::ErrorKind::InvalidInput) => {
            Cause::ResponseBodyInvalid
        }
        Some(io::ErrorKind::TimedOut) => Cause::ResponseBodyTimeout,
        _ if e.is_parse() => Cause::ResponseBodyInvalid,
        _ => Cause::ResponseBodyTruncated,
    }
}

/// The cause of a failed TCP connect.
pub(crate) fn connect_error(e: &io::Error) -> Cause {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectionRefused,
        io::ErrorKind::TimedOut => Cause::ConnectTimeout,
        _ => Cause::ConnectFailed,
    }
}
