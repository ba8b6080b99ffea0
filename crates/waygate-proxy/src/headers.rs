//! Header handling between client and upstream: hop-by-hop removal
//! (RFC 9110 §7.6.1) and the forwarding headers `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via` (RFC 9110 §7.6.3) and
//! `X-Request-Id`. Forwarding headers from a peer that is not a trusted
//! proxy are overwritten, so a client cannot spoof its address.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use waygate_core::{Cause, GatewayError};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static PROXY_STATUS: HeaderName = HeaderName::from_static("proxy-status");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Removes the headers that apply to one connection only: `Connection` and
/// every header it names, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Trailer`, `Transfer-Encoding` and `Upgrade`.
/// Refuses what hyper accepts but RFC 9112 does not, where the gateway and
/// an upstream could disagree about the request (request smuggling): both
/// Content-Length and Transfer-Encoding (§6.1: "ought to be handled as an
/// error"), a Transfer-Encoding other than a single `chunked` (we implement
/// no other coding; a repeated or obfuscated one is a smuggling vector),
/// and zero or several Host headers in HTTP/1.1 (§3.2: MUST answer 400);
/// and CONNECT (no tunnels: never an open proxy), except HTTP/2's
/// extended CONNECT for WebSocket (RFC 8441), which is routed like a GET.
pub(crate) fn check_request<B>(req: &http::Request<B>) -> Result<(), GatewayError> {
    let invalid = |why: String| Err(GatewayError::new(Cause::InvalidRequest, why));
    if req.method() == http::Method::CONNECT && crate::tunnel::requested_h2(req).is_none() {
        // Never an open proxy: no tunnels to arbitrary hosts.
        return invalid("CONNECT: this gateway is not a forward proxy".into());
    }
    let h = req.headers();
    let mut te = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if h.contains_key(header::CONTENT_LENGTH) {
            return invalid("both Content-Length and Transfer-Encoding (RFC 9112 §6.1)".into());
        }
        let single = te.next().is_none();
        let value = first.as_bytes();
        let trimmed = value.trim_ascii();
        if !single || !trimmed.eq_ignore_ascii_case(b"chunked") {
            return invalid(format!(
                "Transfer-Encoding `{}`: only a single `chunked` is accepted (RFC 9112 §6.1)",
                String::from_utf8_lossy(value).escape_debug()
            ));
        }
    }
    if matches!(
        req.version(),
        http::Version::HTTP_10 | http::Version::HTTP_11
    ) {
        let hosts = h.get_all(header::HOST).iter().count();
        if hosts > 1 {
            return invalid("more than one Host header (RFC 9112 §3.2)".into());
        }
        if hosts == 0 && req.version() == http::Version::HTTP_11 {
            return invalid("no Host header in an HTTP/1.1 request (RFC 9112 §3.2)".into());
        }
    }
    Ok(())
}

pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass of cheap name comparisons finds which are present (usually
    // none, or `Connection` alone), so no name is hashed for a lookup that
    // would find nothing (this was 6 % of a proxied request's instructions,
    // BENCHMARKS.md).
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| name == *h) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // `close` and `keep-alive`, the usual tokens, name nothing more to
        // remove: skipped before a name is made (and allocated) for them.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
}

/// The hop-by-hop headers removed whatever `Connection` names;
/// `Connection` itself first.
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
];

/// The `X-Forwarded-For` value naming a peer (computed once per connection).
pub(crate) fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.to_string()).expect("an IP address is a valid header value")
}

/// Whether `peer` is one of the trusted proxies.
pub(crate) fn is_trusted(trusted: &[IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

/// Sets the forwarding headers on a request going upstream.
pub(crate) fn set_forwarding(
    headers: &mut HeaderMap,
    peer_value: &HeaderValue,
    trusted: bool,
    host: Option<&HeaderValue>,
    via: &HeaderValue,
    https: bool,
) {
    let prior_xff = if trusted {
        joined(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    match prior_xff {
        Some(prior) => {
            let mut v = prior;
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer_value.as_bytes());
            match HeaderValue::from_bytes(&v) {
                Ok(v) => headers.insert(X_FORWARDED_FOR.clone(), v),
                Err(_) => headers.insert(X_FORWARDED_FOR.clone(), peer_value.clone()),
            };
        }
        None => {
            headers.insert(X_FORWARDED_FOR.clone(), peer_value.clone());
        }
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    if !trusted {
        headers.remove(&FORWARDED);
    }
    append_via(headers, via);
}

/// Appends our `Via` entry (RFC 9110 §7.6.3), keeping earlier ones.
pub(crate) fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    match joined(headers, &header::VIA) {
        None => {
            headers.insert(header::VIA, via.clone());
        }
        Some(mut v) => {
            v.extend_from_slice(b", ");
            v.extend_from_slice(via.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                headers.insert(header::VIA, v);
            }
        }
    }
}

/// All values of a header joined with ", ", or `None` if absent.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in headers.get_all(name) {
        match &mut out {
            None => out = Some(v.as_bytes().to_vec()),
            Some(o) => {
                o.extend_from_slice(b", ");
                o.extend_from_slice(v.as_bytes());
            }
        }
    }
    out
}

/// Moves an HTTP/1 request head's header values and origin-form target
/// out of hyper's read buffer into one block of their own.
///
/// hyper's HTTP/1 server reads again as soon as it has handed a request
/// over (to notice a client that goes away), and that read needs a fresh
/// 8 KiB buffer whenever the last one is still shared with the headers it
/// parsed, which is the case while the request is in flight. Detached, the
/// buffer is free again and hyper reuses it: one 8 KiB allocation less per
/// request, and one buffer per idle-or-busy connection instead of two.
pub(crate) fn detach_head<B>(req: &mut http::Request<B>) {
    let uri = req.uri();
    let origin_form = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => pq.as_str(),
        _ => "",
    };
    let Some(block) = copy_values(req.headers(), origin_form) else {
        return;
    };
    let at = repoint_values(req.headers_mut(), &block);
    if at < block.len() {
        if let Ok(copy) = http::Uri::from_maybe_shared(block.slice(at..)) {
            *req.uri_mut() = copy;
        }
    }
}

/// Moves a response head's header values out of the upstream connection's
/// read buffer into one block of their own (see [`detach_head`]).
pub(crate) fn detach_values(headers: &mut HeaderMap) {
    if let Some(block) = copy_values(headers, "") {
        repoint_values(headers, &block);
    }
}

/// Every header value, then `tail`, copied into one new block; `None` if
/// that is empty.
fn copy_values(headers: &HeaderMap, tail: &str) -> Option<Bytes> {
    let values: usize = headers.values().map(HeaderValue::len).sum();
    if values + tail.len() == 0 {
        return None;
    }
    let mut buf = bytes::BytesMut::with_capacity(values + tail.len());
    for v in headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    buf.extend_from_slice(tail.as_bytes());
    Some(buf.freeze())
}

/// Points every header value at its copy in `block` (made by
/// [`copy_values`], sensitivity kept); returns where the values end.
fn repoint_values(headers: &mut HeaderMap, block: &Bytes) -> usize {
    let mut at = 0;
    for v in headers.values_mut() {
        let n = v.len();
        // The same bytes, already checked: this cannot fail.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(block.slice(at..at + n)) {
            copy.set_sensitive(v.is_sensitive());
            *v = copy;
        }
        at += n;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn without_hop_by_hop_headers_nothing_is_removed() {
        let mut h = map(&[("host", "a"), ("x-kept", "yes"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        // Each hop-by-hop name alone is still found and removed.
        for name in [
            "connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut h = map(&[("x-kept", "yes"), (name, "x")]);
            remove_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }

    #[test]
    fn untrusted_forwarding_headers_are_overwritten() {
        let via = HeaderValue::from_static("1.1 waygate");
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let host = HeaderValue::from_static("example.com");
        set_forwarding(
            &mut h,
            &peer_value("10.1.2.3".parse().unwrap()),
            false,
            Some(&host),
            &via,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert!(!h.contains_key("forwarded"));
        assert_eq!(h["via"], "1.1 waygate");
    }

    #[test]
    fn trusted_forwarding_headers_are_kept_and_appended() {
        let via = HeaderValue::from_static("1.1 waygate");
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "front.example"),
            ("via", "1.1 edge"),
        ]);
        set_forwarding(
            &mut h,
            &peer_value("10.0.0.1".parse().unwrap()),
            true,
            None,
            &via,
            false,
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "front.example");
        assert_eq!(h["via"], "1.1 edge, 1.1 waygate");
    }

    #[test]
    fn trust_matches_cidrs_and_mapped_v4() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_trusted(&trusted, "10.9.9.9".parse().unwrap()));
        assert!(is_trusted(&trusted, "::ffff:10.0.0.1".parse().unwrap()));
        assert!(is_trusted(&trusted, "::1".parse().unwrap()));
        assert!(!is_trusted(&trusted, "11.0.0.1".parse().unwrap()));
    }

    /// A request as hyper's HTTP/1 server makes it: every header value and
    /// the target are slices of one buffer.
    fn parsed(head: &str, target: &str) -> (http::Request<()>, bytes::Bytes) {
        let buf = bytes::Bytes::from(format!("{target}{head}"));
        let mut req = http::Request::new(());
        *req.uri_mut() = http::Uri::from_maybe_shared(buf.slice(..target.len())).unwrap();
        let mut at = target.len();
        for (i, v) in head.split('|').enumerate() {
            let value = HeaderValue::from_maybe_shared(buf.slice(at..at + v.len())).unwrap();
            let name = HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
            req.headers_mut().append(name, value);
            at += v.len() + 1;
        }
        (req, buf)
    }

    #[test]
    fn a_detached_head_keeps_its_bytes_and_frees_the_read_buffer() {
        let (mut req, buf) = parsed("example.test|curl/8|secret|a, b", "/p/q?x=1&y=%20");
        req.headers_mut()
            .get_mut("x-h2")
            .unwrap()
            .set_sensitive(true);
        let before = req.headers().clone();
        detach_head(&mut req);
        assert_eq!(req.headers(), &before);
        assert!(req.headers()["x-h2"].is_sensitive());
        assert!(!req.headers()["x-h0"].is_sensitive());
        assert_eq!(req.uri(), "/p/q?x=1&y=%20");
        assert_eq!(req.uri().query(), Some("x=1&y=%20"));
        drop(before);
        // Nothing refers to the parse buffer any more: hyper can reuse it.
        assert!(buf.is_unique());
    }

    #[test]
    fn detached_response_values_keep_their_bytes_and_free_the_read_buffer() {
        let (req, buf) = parsed("Sat, 05 Dec 2026 21:00:00 GMT|text/plain|6|", "/");
        // The target (also a slice of the buffer) goes with the rest.
        let mut headers = req.into_parts().0.headers;
        headers.get_mut("x-h1").unwrap().set_sensitive(true);
        let before = headers.clone();
        detach_values(&mut headers);
        assert_eq!(headers, before);
        assert_eq!(headers["x-h3"], "");
        assert!(headers["x-h1"].is_sensitive());
        assert!(!headers["x-h0"].is_sensitive());
        drop(before);
        assert!(buf.is_unique());
    }

    #[test]
    fn an_absolute_target_is_kept_as_it_was() {
        let (mut req, buf) = parsed("example.test", "http://example.test/a?b");
        detach_head(&mut req);
        assert_eq!(req.uri(), "http://example.test/a?b");
        assert_eq!(req.headers()["x-h0"], "example.test");
        // The target still shares the buffer; the headers no longer do.
        assert!(!buf.is_unique());
        *req.uri_mut() = http::Uri::from_static("/");
        assert!(buf.is_unique());
    }
}
