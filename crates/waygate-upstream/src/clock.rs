//! A process-wide monotonic millisecond clock on `tokio::time::Instant`, so
//! server state fits in atomics and paused-time tests control it.

use std::sync::OnceLock;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the first call in this process (at least 1, so 0 can
/// mean "never").
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// [`now_ms`] at `t`, for a caller that has just read the clock anyway (a
/// read is about 20 ns, and a proxied request made 18).
pub fn ms_at(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| t);
    t.saturating_duration_since(epoch).as_millis() as u64 + 1
}
