//! The error type that carries a [`Cause`] through the request path.

use std::fmt;

use crate::Cause;

/// A failure of the gateway or of an upstream, classified once where it was
/// first seen. The edge renders it from `cause`; `detail` is for operators
/// (logs, `Proxy-Status` details) and never holds an internal address unless
/// the operator allowed it.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub cause: Cause,
    pub detail: String,
    /// `Retry-After` seconds, when known for this very error (a rate limit).
    pub retry_after: Option<u64>,
    /// Extra response headers (name, value), e.g. RateLimit-Policy.
    pub headers: Vec<(&'static str, String)>,
}

// === impl GatewayError ===

impl GatewayError {
    pub fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Self {
            cause,
            detail: detail.into(),
            retry_after: None,
            headers: Vec::new(),
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause.name(), self.detail)
    }
}

impl std::error::Error for GatewayError {}
