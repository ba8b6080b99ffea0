//! Resilience mechanisms shared by the request path: the retry budget, the
//! retry back-off, the per-upstream limits (circuit breaking) and the
//! adaptive concurrency limit.

mod adaptive;
mod backoff;
mod budget;
mod limits;

pub use adaptive::{AdaptiveLimit, AdaptivePermit};
pub use backoff::backoff;
pub use budget::RetryBudget;
pub use limits::{ConnPermit, Limits, RequestPermit};
