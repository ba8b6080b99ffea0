//! Resilience mechanisms shared by the request path: the retry budget, the
//! retry back-off and the per-upstream limits (circuit breaking).

mod backoff;
mod budget;
mod limits;

pub use backoff::backoff;
pub use budget::RetryBudget;
pub use limits::{ConnPermit, Limits, RequestPermit};
