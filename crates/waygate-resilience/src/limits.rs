//! Per-upstream limits (circuit breaking, as Envoy's cluster circuit
//! breakers): requests in flight, open connections, and requests waiting
//! for a connection. Over a limit, the request gets 503
//! `connection_limit_reached` at once instead of piling up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use waygate_config::LimitsConfig;

#[derive(Debug)]
pub struct Limits {
    max_requests: Option<u32>,
    requests: Arc<AtomicU32>,
    connections: Option<Arc<Semaphore>>,
    max_pending: u32,
    pending: AtomicU32,
}

/// A request counted in flight until dropped.
#[derive(Debug)]
pub struct RequestPermit {
    requests: Arc<AtomicU32>,
}

/// Held by an open upstream connection (when connections are limited).
#[derive(Debug)]
pub struct ConnPermit {
    _permit: Option<OwnedSemaphorePermit>,
}

// === impl Limits ===

impl Limits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            max_requests: cfg.max_requests,
            requests: Arc::new(AtomicU32::new(0)),
            connections: cfg
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            max_pending: cfg.max_pending,
            pending: AtomicU32::new(0),
        }
    }

    /// Admits a request, or `None` if `max_requests` are in flight.
    pub fn admit(&self) -> Option<RequestPermit> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let permit = RequestPermit {
            requests: self.requests.clone(),
        };
        match self.max_requests {
            Some(max) if n > max => None, // dropping the permit undoes the count
            _ => Some(permit),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A permit to open a connection now, if one is free (always, when
    /// connections are not limited).
    pub fn try_connection(&self) -> Option<ConnPermit> {
        match &self.connections {
            None => Some(ConnPermit { _permit: None }),
            Some(sem) => sem
                .clone()
                .try_acquire_owned()
                .ok()
                .map(|p| ConnPermit { _permit: Some(p) }),
        }
    }

    /// Waits for a connection permit as one of at most `max_pending`
    /// waiters; `None` if the pending queue is full.
    pub async fn wait_connection(&self) -> Option<ConnPermit> {
        let sem = self.connections.as_ref()?.clone();
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // Undo the count even if this future is dropped while waiting.
        let _pending = Pending(&self.pending);
        let permit = sem.acquire_owned().await.ok();
        permit.map(|p| ConnPermit { _permit: Some(p) })
    }

    pub fn limits_connections(&self) -> bool {
        self.connections.is_some()
    }
}

struct Pending<'a>(&'a AtomicU32);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_requests() {
        let l = Limits::new(&LimitsConfig {
            max_requests: Some(2),
            ..Default::default()
        });
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(l.admit().is_none());
        drop(a);
        assert!(l.admit().is_some());
    }

    #[tokio::test]
    async fn pending_is_bounded() {
        let l = Arc::new(Limits::new(&LimitsConfig {
            max_connections: Some(1),
            max_pending: 1,
            ..Default::default()
        }));
        let held = l.try_connection().unwrap();
        assert!(l.try_connection().is_none());
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.wait_connection().await.is_some() });
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(
            l.wait_connection().await.is_none(),
            "second waiter: queue full"
        );
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
