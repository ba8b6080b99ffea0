//! The error ring: the last gateway errors (generated responses, aborted
//! responses, clients that went away), kept in memory so an operator can ask
//! about one by its request id (`/errors/<id>` on the admin listener,
//! `waygate why <id>`). Bounded: the oldest entry goes when it is full.
//! Only requests with a cause touch it, so successful requests never take
//! its lock.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::AccessRecord;

/// How many errors the ring keeps by default.
pub const DEFAULT_ERROR_RING: usize = 1024;

#[derive(Debug)]
pub struct ErrorRing {
    capacity: usize,
    entries: Mutex<VecDeque<AccessRecord>>,
}

// === impl ErrorRing ===

impl ErrorRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::with_capacity(capacity.clamp(1, 4096))),
        }
    }

    pub fn push(&self, rec: &AccessRecord) {
        if let Ok(mut e) = self.entries.lock() {
            if e.len() == self.capacity {
                e.pop_front();
            }
            e.push_back(rec.clone());
        }
    }

    /// The error recorded for `request_id`, if it is still in the ring.
    pub fn find(&self, request_id: &str) -> Option<AccessRecord> {
        let e = self.entries.lock().ok()?;
        e.iter()
            .rev()
            .find(|r| &*r.request_id == request_id)
            .cloned()
    }

    /// The most recent errors, newest first.
    pub fn recent(&self, n: usize) -> Vec<AccessRecord> {
        self.entries
            .lock()
            .map(|e| e.iter().rev().take(n).cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn rec(id: &str) -> AccessRecord {
        AccessRecord::new(
            SystemTime::now(),
            id.into(),
            "l".into(),
            "127.0.0.1:1".parse().unwrap(),
            http::Method::GET,
            None,
            http::Uri::from_static("/"),
        )
    }

    #[test]
    fn stays_bounded_and_finds_by_id() {
        let ring = ErrorRing::new(3);
        for i in 0..5 {
            ring.push(&rec(&format!("id{i}")));
        }
        assert_eq!(ring.len(), 3);
        assert!(ring.find("id0").is_none(), "the oldest were dropped");
        assert!(ring.find("id1").is_none());
        assert_eq!(&*ring.find("id4").unwrap().request_id, "id4");
        let recent: Vec<String> = ring
            .recent(2)
            .iter()
            .map(|r| r.request_id.to_string())
            .collect();
        assert_eq!(recent, ["id4", "id3"]);
    }
}
