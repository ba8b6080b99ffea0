//! A process-wide monotonic millisecond clock on `tokio::time::Instant`, so
//! server state fits in atomics and paused-time tests control it.

use std::sync::OnceLock;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process (at least 1, so 0 can
/// mean "never").
pub fn now_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}
