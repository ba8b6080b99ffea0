//! Request ids: short, unique across restarts with overwhelming probability,
//! and cheap to make (one atomic increment, no lock, no syscall).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The id of one request, sent upstream and returned on every response as
/// `X-Request-Id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

/// Makes request ids: a random 32-bit prefix chosen at start-up, followed by
/// a 48-bit counter, as 20 lowercase hex digits.
#[derive(Debug)]
pub struct RequestIdGenerator {
    prefix: u32,
    next: AtomicU64,
}

/// The longest request id accepted from a trusted client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

// === impl RequestId ===

impl RequestId {
    /// Accepts an id from a trusted client if it is 1..=128 visible ASCII
    /// characters (no spaces, quotes or backslashes, so it can be embedded in
    /// logs and in a `Proxy-Status` parameter without escaping).
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.is_empty() || value.len() > MAX_REQUEST_ID_LEN {
            return None;
        }
        let ok = value
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return None;
        }
        std::str::from_utf8(value).ok().map(|s| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a shared string (cloning it does not copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl RequestIdGenerator ===

impl RequestIdGenerator {
    pub fn new() -> Self {
        Self {
            prefix: fastrand::u32(..),
            next: AtomicU64::new(fastrand::u64(..) & 0xffff),
        }
    }

    pub fn next_id(&self) -> RequestId {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff_ffff;
        // 8 hex digits of prefix, 12 of counter, formatted without a
        // temporary String: one allocation per id.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 20];
        let value = (u128::from(self.prefix) << 48) | u128::from(n);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((value >> ((19 - i) * 4)) & 0xf) as usize];
        }
        RequestId(
            std::str::from_utf8(&buf)
                .unwrap_or("00000000000000000000")
                .into(),
        )
    }
}

impl Default for RequestIdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_20_hex_digits() {
        let generator = RequestIdGenerator::new();
        let a = generator.next_id();
        let b = generator.next_id();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 20);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn client_ids_are_checked() {
        assert!(RequestId::parse(b"abc-123").is_some());
        assert!(RequestId::parse(b"").is_none());
        assert!(RequestId::parse(b"has space").is_none());
        assert!(RequestId::parse(b"quote\"").is_none());
        assert!(RequestId::parse(&[b'a'; 129]).is_none());
    }
}
