//! Graceful draining of client connections: each connection (and each
//! WebSocket tunnel) holds a [`Watcher`]; [`Drain::shutdown`] tells every
//! connection to finish its current exchange and waits until all watchers
//! are gone. Like hyper-util's `GracefulShutdown`, but it also drives
//! HTTP/1.1 connections that can be upgraded, which hyper-util's cannot.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// The drain signal of one listener's connections.
#[derive(Debug)]
pub(crate) struct Drain {
    tx: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
}

/// Held by a connection (and by a tunnel made from it) while it is open;
/// each one counts as open.
#[derive(Debug)]
pub(crate) struct Watcher {
    rx: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
}

/// A hyper connection that can be asked to finish gracefully.
pub(crate) trait Graceful: Future + Unpin {
    /// Finish the exchange in progress, then close (HTTP/2: GOAWAY).
    fn begin_shutdown(self: Pin<&mut Self>);
}

// === impl Drain ===

impl Drain {
    pub(crate) fn new() -> Self {
        Self {
            tx: watch::Sender::new(false),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn watcher(&self) -> Watcher {
        self.open.fetch_add(1, Ordering::Relaxed);
        Watcher {
            rx: self.tx.subscribe(),
            open: self.open.clone(),
        }
    }

    /// Connections and tunnels still open.
    pub(crate) fn count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Signals every connection, then waits until all are closed.
    pub(crate) async fn shutdown(self) {
        self.tx.send_replace(true);
        self.tx.closed().await;
    }
}

// === impl Watcher ===

impl Watcher {
    /// Drives `conn`, asking it to finish once the drain begins. It is
    /// polled once first: a connection accepted just before a drain began
    /// (its request already waiting in the socket) reads that request and
    /// answers it, instead of being closed as idle before it read anything.
    pub(crate) async fn watch<C: Graceful>(&self, mut conn: C) -> C::Output {
        let first = std::future::poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        if let Some(done) = first {
            return done;
        }
        let mut rx = self.rx.clone();
        tokio::select! {
            r = &mut conn => return r,
            _ = rx.wait_for(|draining| *draining) => {}
        }
        Pin::new(&mut conn).begin_shutdown();
        conn.await
    }

    /// Waits until `ready` is ready (returns its output), `deadline`
    /// passes or the drain begins (returns `None`). Written out by hand
    /// rather than with `select!`: a parked connection's task holds this
    /// future for its whole idle time, so its size is the connection's.
    pub(crate) async fn until<T>(
        &self,
        deadline: tokio::time::Instant,
        mut ready: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T>,
    ) -> Option<T> {
        let mut rx = self.rx.clone();
        if *rx.borrow_and_update() {
            return None;
        }
        let sleep = tokio::time::sleep_until(deadline);
        let changed = rx.changed();
        tokio::pin!(sleep, changed);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(t) = ready(cx) {
                return std::task::Poll::Ready(Some(t));
            }
            if sleep.as_mut().poll(cx).is_ready() || changed.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(None);
            }
            std::task::Poll::Pending
        })
        .await
    }
}

impl Clone for Watcher {
    fn clone(&self) -> Self {
        self.open.fetch_add(1, Ordering::Relaxed);
        Self {
            rx: self.rx.clone(),
            open: self.open.clone(),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}
