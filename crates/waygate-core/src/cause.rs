//! [`Cause`]: the single source of truth for every response the gateway
//! generates itself, and [`Side`]: who produced a response.
//!
//! Each question about a cause is answered by one `match` below: its stable
//! name, the status it produces, its RFC 9209 `Proxy-Status` error type, a
//! one-line explanation for a person and likely fixes for an operator.
//! `docs/causes.md` is rendered from this file and checked by a test.

use std::fmt;

/// Why the gateway generated a response (or aborted one) instead of passing
/// on an upstream's answer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No route matches the request's host and path.
    NoRoute,
    /// The upstream has no server that can take the request.
    NoServerAvailable,
    /// The upstream's limits (requests in flight, connections, pending) are reached.
    UpstreamLimitReached,
    /// The server's host name could not be resolved.
    DnsError,
    /// Resolving the server's host name took longer than the connect timeout.
    DnsTimeout,
    /// The server actively refused the TCP connection (nothing listens there).
    ConnectionRefused,
    /// The TCP connection was not established within the connect timeout.
    ConnectTimeout,
    /// The TCP connection failed for another reason (unreachable network or host).
    ConnectFailed,
    /// The TLS handshake with the server failed for a reason other than
    /// its certificate (no common protocol version or cipher, not TLS at all).
    TlsProtocolError,
    /// The server's TLS certificate was not accepted (unknown issuer,
    /// expired, wrong name).
    TlsCertificateError,
    /// The server reset the connection before a complete response head.
    UpstreamReset,
    /// A reused keep-alive connection was closed by the server while the
    /// request was being sent (the keep-alive race).
    PooledConnectionClosed,
    /// The server closed the connection before a complete response head.
    UpstreamClosed,
    /// No response head within the response timeout.
    ResponseTimeout,
    /// The response is not valid HTTP/1.x.
    ResponseProtocolError,
    /// The response head is larger than the configured limit.
    ResponseHeadersTooLarge,
    /// The response has both `Content-Length` and `Transfer-Encoding`
    /// (RFC 9112 §6.3: a request-smuggling and response-splitting risk).
    ResponseFramingConflict,
    /// The response body's chunked encoding is invalid.
    ResponseBodyInvalid,
    /// The server closed the connection before the end of the response body.
    ResponseBodyTruncated,
    /// The server stopped sending the response body for longer than the body idle timeout.
    ResponseBodyTimeout,
    /// The client asked to switch protocols (WebSocket) and the server's
    /// answer could not be tunnelled: it switched to another protocol, or
    /// to none that was asked for.
    HttpUpgradeFailed,
    /// The upstream stopped reading the request body for longer than the body idle timeout.
    UpstreamWriteTimeout,
    /// The client's request body could not be read (invalid chunked encoding).
    ClientBodyError,
    /// The request is not valid HTTP/1.1 in a way that could make the
    /// gateway and the upstream disagree about it (RFC 9112: both
    /// Content-Length and Transfer-Encoding, an unknown transfer coding,
    /// no Host or several): refused, never forwarded.
    InvalidRequest,
    /// The request body is larger than the listener's `max_request_body_size`.
    RequestBodyTooLarge,
    /// The client is over a rate-limit policy of the route.
    RateLimited,
    /// The client stopped sending its request body for longer than the body idle timeout.
    ClientBodyTimeout,
    /// The client went away before the response was complete.
    ClientClosed,
    /// A bug in the gateway.
    InternalError,
}

/// Which side produced a response: a gateway 503 is never confused with an
/// upstream's own 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client: it went away or sent something unreadable.
    Downstream,
    /// The gateway generated the response itself.
    Gateway,
    /// The upstream server's own response, passed on.
    Upstream,
}

// === impl Cause ===

impl Cause {
    /// Every cause, in documentation order.
    pub const ALL: &'static [Cause] = &[
        Cause::NoRoute,
        Cause::NoServerAvailable,
        Cause::UpstreamLimitReached,
        Cause::DnsError,
        Cause::DnsTimeout,
        Cause::ConnectionRefused,
        Cause::ConnectTimeout,
        Cause::ConnectFailed,
        Cause::TlsProtocolError,
        Cause::TlsCertificateError,
        Cause::UpstreamReset,
        Cause::PooledConnectionClosed,
        Cause::UpstreamClosed,
        Cause::ResponseTimeout,
        Cause::ResponseProtocolError,
        Cause::ResponseHeadersTooLarge,
        Cause::ResponseFramingConflict,
        Cause::ResponseBodyInvalid,
        Cause::ResponseBodyTruncated,
        Cause::ResponseBodyTimeout,
        Cause::HttpUpgradeFailed,
        Cause::UpstreamWriteTimeout,
        Cause::ClientBodyError,
        Cause::InvalidRequest,
        Cause::RequestBodyTooLarge,
        Cause::RateLimited,
        Cause::ClientBodyTimeout,
        Cause::ClientClosed,
        Cause::InternalError,
    ];

    /// The stable snake_case name used in logs, metrics and `waygate why`.
    pub fn name(self) -> &'static str {
        match self {
            Cause::NoRoute => "no_route",
            Cause::NoServerAvailable => "no_server_available",
            Cause::UpstreamLimitReached => "upstream_limit_reached",
            Cause::DnsError => "dns_error",
            Cause::DnsTimeout => "dns_timeout",
            Cause::ConnectionRefused => "connection_refused",
            Cause::ConnectTimeout => "connect_timeout",
            Cause::ConnectFailed => "connect_failed",
            Cause::TlsProtocolError => "tls_protocol_error",
            Cause::TlsCertificateError => "tls_certificate_error",
            Cause::HttpUpgradeFailed => "http_upgrade_failed",
            Cause::UpstreamReset => "upstream_reset",
            Cause::PooledConnectionClosed => "pooled_connection_closed",
            Cause::UpstreamClosed => "upstream_closed",
            Cause::ResponseTimeout => "response_timeout",
            Cause::ResponseProtocolError => "response_protocol_error",
            Cause::ResponseHeadersTooLarge => "response_headers_too_large",
            Cause::ResponseFramingConflict => "response_framing_conflict",
            Cause::ResponseBodyInvalid => "response_body_invalid",
            Cause::ResponseBodyTruncated => "response_body_truncated",
            Cause::ResponseBodyTimeout => "response_body_timeout",
            Cause::UpstreamWriteTimeout => "upstream_write_timeout",
            Cause::ClientBodyError => "client_body_error",
            Cause::InvalidRequest => "invalid_request",
            Cause::RequestBodyTooLarge => "request_body_too_large",
            Cause::RateLimited => "rate_limited",
            Cause::ClientBodyTimeout => "client_body_timeout",
            Cause::ClientClosed => "client_closed",
            Cause::InternalError => "internal_error",
        }
    }

    /// The status the gateway answers with. 499 (client closed) is only
    /// logged: nobody is left to receive it.
    pub fn status(self) -> u16 {
        match self {
            Cause::NoRoute => 404,
            Cause::NoServerAvailable | Cause::UpstreamLimitReached => 503,
            Cause::DnsError
            | Cause::ConnectionRefused
            | Cause::ConnectFailed
            | Cause::TlsProtocolError
            | Cause::TlsCertificateError
            | Cause::HttpUpgradeFailed
            | Cause::UpstreamReset
            | Cause::PooledConnectionClosed
            | Cause::UpstreamClosed
            | Cause::ResponseProtocolError
            | Cause::ResponseHeadersTooLarge
            | Cause::ResponseFramingConflict
            | Cause::ResponseBodyInvalid
            | Cause::ResponseBodyTruncated => 502,
            Cause::DnsTimeout
            | Cause::ConnectTimeout
            | Cause::ResponseTimeout
            | Cause::ResponseBodyTimeout
            | Cause::UpstreamWriteTimeout => 504,
            Cause::ClientBodyError | Cause::InvalidRequest => 400,
            Cause::RequestBodyTooLarge => 413,
            Cause::RateLimited => 429,
            Cause::ClientBodyTimeout => 408,
            Cause::ClientClosed => 499,
            Cause::InternalError => 500,
        }
    }

    /// The RFC 9209 §2.3 Proxy Error Type.
    pub fn proxy_status(self) -> &'static str {
        match self {
            Cause::NoRoute => "destination_not_found",
            Cause::NoServerAvailable => "destination_unavailable",
            Cause::UpstreamLimitReached => "connection_limit_reached",
            Cause::DnsError => "dns_error",
            Cause::DnsTimeout => "dns_timeout",
            Cause::ConnectionRefused => "connection_refused",
            Cause::ConnectTimeout => "connection_timeout",
            Cause::ConnectFailed => "destination_ip_unroutable",
            Cause::TlsProtocolError => "tls_protocol_error",
            Cause::TlsCertificateError => "tls_certificate_error",
            Cause::HttpUpgradeFailed => "http_upgrade_failed",
            Cause::UpstreamReset | Cause::PooledConnectionClosed => "connection_terminated",
            Cause::UpstreamClosed | Cause::ResponseBodyTruncated => "http_response_incomplete",
            Cause::ResponseTimeout => "http_response_timeout",
            Cause::ResponseProtocolError
            | Cause::ResponseFramingConflict
            | Cause::ResponseBodyInvalid => "http_protocol_error",
            Cause::ResponseHeadersTooLarge => "http_response_header_section_size",
            Cause::ResponseBodyTimeout => "connection_read_timeout",
            Cause::UpstreamWriteTimeout => "connection_write_timeout",
            Cause::RateLimited => "http_request_denied",
            Cause::ClientBodyError
            | Cause::InvalidRequest
            | Cause::ClientBodyTimeout
            | Cause::RequestBodyTooLarge => "http_request_error",
            Cause::ClientClosed => "proxy_internal_response",
            Cause::InternalError => "proxy_internal_error",
        }
    }

    /// Which side is responsible for the failure.
    pub fn side(self) -> Side {
        match self {
            Cause::ClientBodyError
            | Cause::InvalidRequest
            | Cause::ClientBodyTimeout
            | Cause::ClientClosed
            | Cause::RequestBodyTooLarge => Side::Downstream,
            _ => Side::Gateway,
        }
    }

    /// A short title for error pages and `application/problem+json`.
    pub fn title(self) -> &'static str {
        match self {
            Cause::NoRoute => "Not found",
            Cause::NoServerAvailable | Cause::UpstreamLimitReached => {
                "Service temporarily unavailable"
            }
            Cause::DnsError | Cause::DnsTimeout => "The service's address could not be found",
            Cause::ConnectionRefused | Cause::ConnectFailed => "The service is not reachable",
            Cause::ConnectTimeout => "The service did not answer in time",
            Cause::TlsProtocolError | Cause::TlsCertificateError => {
                "The service's secure connection failed"
            }
            Cause::HttpUpgradeFailed => "The service did not switch protocols",
            Cause::UpstreamReset | Cause::PooledConnectionClosed | Cause::UpstreamClosed => {
                "The service hung up"
            }
            Cause::ResponseTimeout | Cause::ResponseBodyTimeout | Cause::UpstreamWriteTimeout => {
                "The service took too long"
            }
            Cause::ResponseProtocolError
            | Cause::ResponseHeadersTooLarge
            | Cause::ResponseFramingConflict
            | Cause::ResponseBodyInvalid
            | Cause::ResponseBodyTruncated => "The service sent a broken response",
            Cause::ClientBodyError => "The request body could not be read",
            Cause::InvalidRequest => "The request is malformed",
            Cause::RequestBodyTooLarge => "The request body is too large",
            Cause::RateLimited => "Too many requests",
            Cause::ClientBodyTimeout => "The request body arrived too slowly",
            Cause::ClientClosed => "The client went away",
            Cause::InternalError => "Internal gateway error",
        }
    }

    /// One line for a person: what happened, in plain words, with no internal
    /// names or addresses.
    pub fn explanation(self) -> &'static str {
        match self {
            Cause::NoRoute => "There is nothing at this address on this site.",
            Cause::NoServerAvailable => {
                "Every server of this service is unavailable right now, so the gateway did not forward your request."
            }
            Cause::UpstreamLimitReached => {
                "This service is handling as many requests as it safely can, so the gateway did not forward yours."
            }
            Cause::DnsError => {
                "The gateway could not look up the address of the server behind this service."
            }
            Cause::DnsTimeout => {
                "Looking up the address of the server behind this service took too long."
            }
            Cause::ConnectionRefused => {
                "The server behind this service refused the connection: it is probably not running."
            }
            Cause::ConnectTimeout => {
                "The server behind this service did not accept a connection in time."
            }
            Cause::ConnectFailed => "The server behind this service could not be reached over the network.",
            Cause::TlsProtocolError => {
                "The gateway could not set up a secure connection with the server behind this service."
            }
            Cause::TlsCertificateError => {
                "The server behind this service presented a certificate the gateway does not trust, so nothing was sent to it."
            }
            Cause::HttpUpgradeFailed => {
                "Your client asked to switch protocols (for example to WebSocket) and the server behind this service did not switch properly."
            }
            Cause::UpstreamReset => {
                "The server behind this service reset the connection before answering."
            }
            Cause::PooledConnectionClosed => {
                "The server behind this service closed a reused connection while your request was being sent."
            }
            Cause::UpstreamClosed => {
                "The server behind this service closed the connection before answering."
            }
            Cause::ResponseTimeout => {
                "The server behind this service did not start answering in time."
            }
            Cause::ResponseProtocolError => {
                "The server behind this service answered with something that is not valid HTTP."
            }
            Cause::ResponseHeadersTooLarge => {
                "The server behind this service answered with headers larger than the gateway accepts, or with more header fields."
            }
            Cause::ResponseFramingConflict => {
                "The server behind this service answered with contradictory length information, which is unsafe to pass on."
            }
            Cause::ResponseBodyInvalid => {
                "The server behind this service sent a response body with invalid chunked encoding."
            }
            Cause::ResponseBodyTruncated => {
                "The server behind this service stopped in the middle of its response."
            }
            Cause::ResponseBodyTimeout => {
                "The server behind this service stopped sending its response for too long."
            }
            Cause::UpstreamWriteTimeout => {
                "The server behind this service stopped accepting the body of your request."
            }
            Cause::ClientBodyError => "The body of your request was malformed or cut short.",
            Cause::InvalidRequest => "Your request was not valid HTTP (for example it gave its length in two ways), so it was refused without being passed on.",
            Cause::RequestBodyTooLarge => "The body of your request is larger than this site accepts.",
            Cause::RateLimited => "You sent more requests than this site allows in a short time; slow down and try again shortly.",
            Cause::ClientBodyTimeout => "The body of your request stopped arriving for too long.",
            Cause::ClientClosed => "The client closed the connection before the response was complete.",
            Cause::InternalError => "The gateway hit an internal error.",
        }
    }

    /// Likely fixes, for an operator.
    pub fn fixes(self) -> &'static [&'static str] {
        match self {
            Cause::NoRoute => &[
                "Check the routes' `host` and `path_prefix` against the request's Host and path.",
                "Add a catch-all route (`path_prefix = \"/\"`) if every path should be served.",
            ],
            Cause::NoServerAvailable => &[
                "Check that the upstream lists at least one server.",
                "Check why its servers are unavailable (health, ejection) and bring one back.",
            ],
            Cause::UpstreamLimitReached => &[
                "The upstream's `[upstream.<name>.limits]` are reached: is the service slower than usual, or is traffic higher?",
                "Raise `max_requests` / `max_connections` if the servers can take more.",
            ],
            Cause::DnsError => &[
                "Check the spelling of the server's host name in the upstream's `servers`.",
                "Check the resolver configuration (/etc/resolv.conf) of the gateway's host.",
            ],
            Cause::DnsTimeout => &[
                "Check that the gateway's DNS resolver is reachable and answering.",
                "Use an IP address in `servers` to avoid the lookup.",
            ],
            Cause::ConnectionRefused => &[
                "Is the application running and listening on that port?",
                "Check the port in the upstream's `servers` against the application's listen address.",
                "Is it listening on 127.0.0.1 only while the gateway connects from elsewhere?",
            ],
            Cause::ConnectTimeout => &[
                "Is the server's host up, and does a firewall drop the packets?",
                "Is the application's accept backlog full (overloaded)?",
                "Raise `connect_timeout` if the network is slow.",
            ],
            Cause::ConnectFailed => &[
                "Check the network route from the gateway to the server (no route to host).",
            ],
            Cause::TlsProtocolError => &[
                "Does the server speak TLS on that port? `tls = true` against a plain-HTTP port fails like this.",
                "Do the server and the gateway share a TLS version (1.2 or 1.3) and a cipher suite?",
            ],
            Cause::TlsCertificateError => &[
                "Is the server's certificate signed by the upstream's `tls_ca` (or a system root when none is set)?",
                "Does it name the host the gateway expects (`tls_server_name`, or the server's host)? Is it expired?",
            ],
            Cause::HttpUpgradeFailed => &[
                "The server answered 101 Switching Protocols with an Upgrade other than the one asked for, or the switch failed: check its WebSocket handling.",
            ],
            Cause::UpstreamReset => &[
                "Did the application crash or restart while handling the request? Check its logs.",
                "Is the application's keep-alive timeout shorter than the gateway's `pool_idle_timeout`?",
            ],
            Cause::PooledConnectionClosed => &[
                "The keep-alive race: lower the upstream's `pool_idle_timeout` below the application's keep-alive timeout.",
                "Only non-idempotent requests whose bytes were already sent end like this; others are retried.",
            ],
            Cause::UpstreamClosed => &[
                "Did the application crash or exit while handling the request? Check its logs.",
                "Is a request-size or header-size limit in the application closing the connection?",
            ],
            Cause::ResponseTimeout => &[
                "The application or its database is slow or stuck: check its latency and logs.",
                "Raise the upstream's `response_timeout` if such slow answers are expected.",
            ],
            Cause::ResponseProtocolError => &[
                "The application wrote an invalid HTTP response: is the port serving HTTP (not TLS, not another protocol)?",
                "Check the application's HTTP server for bugs in hand-written responses.",
            ],
            Cause::ResponseHeadersTooLarge => &[
                "Look for huge cookies or headers set by the application, or many `Set-Cookie` fields.",
                "Raise the upstream's `max_response_header_size` (bytes) or `max_response_headers` (fields, 100 by default) if they are legitimate.",
            ],
            Cause::ResponseFramingConflict => &[
                "The application sends both Content-Length and Transfer-Encoding: fix it to send one.",
            ],
            Cause::ResponseBodyInvalid => &[
                "The application's chunked encoding is broken: check its HTTP server or framework.",
            ],
            Cause::ResponseBodyTruncated => &[
                "Did the application crash while writing the body? Check its logs.",
                "Does it send a Content-Length larger than the body it writes?",
            ],
            Cause::ResponseBodyTimeout => &[
                "The application stalled while streaming its response: check it for blocking work.",
                "Raise the upstream's `body_idle_timeout` for legitimately slow streams.",
            ],
            Cause::UpstreamWriteTimeout => &[
                "The application stopped reading the upload: is it stuck, or waiting for something before reading?",
                "Raise the upstream's `body_idle_timeout` if it legitimately pauses while reading uploads.",
            ],
            Cause::ClientBodyError => &[
                "The client sent an invalid chunked body or closed its connection mid-upload.",
            ],
            Cause::InvalidRequest => &[
                "The detail names the rule the request broke (RFC 9112). From a real client this is a bug in it; otherwise it is often a request-smuggling probe, refused before it reached any upstream.",
            ],
            Cause::RateLimited => &[
                "The client exceeded the route's rate-limit policy: check its rate, burst and key (a shared IP behind a proxy not listed in trusted_proxies looks like one client).",
            ],
            Cause::RequestBodyTooLarge => &[
                "The client sent more than the listener's `max_request_body_size`; raise it if such uploads are expected.",
            ],
            Cause::ClientBodyTimeout => &[
                "The client (or its network) stalled mid-upload; a slow-body attack looks the same.",
                "Raise the upstream's `body_idle_timeout` for clients on very slow links.",
            ],
            Cause::ClientClosed => &[
                "Usually harmless: the user navigated away or the client timed out first.",
                "If frequent, compare the client's timeout with the upstream's latency.",
            ],
            Cause::InternalError => &["Report a bug with the request id and the gateway's log."],
        }
    }

    /// Whether trying the same request again later may succeed, for the
    /// error page.
    pub fn retry_may_help(self) -> bool {
        !matches!(
            self,
            Cause::NoRoute
                | Cause::RequestBodyTooLarge
                | Cause::ClientBodyError
                | Cause::InvalidRequest
                | Cause::ResponseHeadersTooLarge
                | Cause::ResponseFramingConflict
        )
    }

    /// The `Retry-After` seconds to send, if any (RFC 9110 §10.2.3).
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Cause::NoServerAvailable => Some(5),
            Cause::UpstreamLimitReached => Some(1),
            _ => None,
        }
    }

    /// Position in [`Cause::ALL`], for arrays of per-cause counters.
    pub fn index(self) -> usize {
        Cause::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// Looks a cause up by its stable name.
    pub fn from_name(name: &str) -> Option<Cause> {
        Cause::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Side ===

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Gateway => "gateway",
            Side::Upstream => "upstream",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &cause in Cause::ALL {
            assert!(seen.insert(cause.name()), "duplicate name {}", cause.name());
            assert_eq!(Cause::from_name(cause.name()), Some(cause));
            assert!(!cause.fixes().is_empty());
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(Cause::ConnectionRefused.status(), 502);
        assert_eq!(Cause::ConnectTimeout.status(), 504);
        assert_eq!(Cause::ResponseTimeout.status(), 504);
        assert_eq!(Cause::NoServerAvailable.status(), 503);
        assert_eq!(Cause::NoServerAvailable.retry_after(), Some(5));
        assert_eq!(Cause::NoRoute.status(), 404);
        assert_eq!(Cause::ClientClosed.status(), 499);
    }
}
